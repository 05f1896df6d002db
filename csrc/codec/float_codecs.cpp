#include "codec/float_codecs.hpp"

#include <fmt/format.h>

#include <cstring>

#include "core/error.hpp"

namespace bagua {
namespace {

float load(const std::uint8_t* p, DType t) {
  std::uint16_t h;
  switch (t) {
    case DType::F16:
      std::memcpy(&h, p, 2);
      return half_to_float(h);
    case DType::BF16:
      std::memcpy(&h, p, 2);
      return bf16_to_float(h);
    default: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
}

}  // namespace

FloatCodec::FloatCodec(DType wire) : wire_(wire) {
  if (wire != DType::F32 && wire != DType::F16 && wire != DType::BF16) {
    throw InvalidArgument(fmt::format("float codec: wire type {} is not fp32, fp16 or bf16", dtype_name(wire)));
  }
}

std::string FloatCodec::name() const {
  switch (wire_) {
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
    default: return "identity";
  }
}

void FloatCodec::encode(const void* in, std::size_t count, DType dtype, std::uint8_t* wire) const {
  if (dtype == wire_) {  // already in wire form
    if (count) std::memcpy(wire, in, count * dtype_size(wire_));
    return;
  }
  std::vector<float> scratch;
  const float* v = as_float(in, count, dtype, scratch);
  switch (wire_) {
    case DType::F16:
      for (std::size_t i = 0; i < count; ++i) {
        const std::uint16_t h = float_to_half(v[i]);
        std::memcpy(wire + 2 * i, &h, 2);
      }
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < count; ++i) {
        const std::uint16_t h = float_to_bf16(v[i]);
        std::memcpy(wire + 2 * i, &h, 2);
      }
      break;
    default:
      std::memcpy(wire, v, count * 4);
  }
}

void FloatCodec::decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
                        bool accumulate) const {
  check_wire_size(wire_size, count);
  const std::size_t k = dtype_size(wire_);
  for (std::size_t i = 0; i < count; ++i) {
    const float v = load(wire + k * i, wire_);
    out[i] = accumulate ? out[i] + v : v;
  }
}

}  // namespace bagua
