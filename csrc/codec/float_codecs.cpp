#include "codec/float_codecs.hpp"

#include <fmt/format.h>

#include <cstring>

#include "core/error.hpp"

namespace bagua {

FloatCodec::FloatCodec(DType wire, kernels::Isa isa) : wire_(wire), isa_(isa) {
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
  thread_local std::vector<float> scratch;  // reused: no allocation per call
  const float* v = as_float(in, count, dtype, scratch);
  // One loop per wire type, so each is a plain loop the compiler can
  // vectorize; memcpy stores, as the wire is a byte array of any alignment.
  auto store16 = [wire](std::size_t i, std::uint16_t h) { std::memcpy(wire + 2 * i, &h, 2); };
  switch (wire_) {
    case DType::F16:
      kernels::narrow_f16(v, count, wire, isa_);
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < count; ++i) store16(i, float_to_bf16(v[i]));
      break;
    default:
      std::memcpy(wire, v, count * 4);
  }
}

void FloatCodec::decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
                        bool accumulate) const {
  check_wire_size(wire_size, count);
  auto run = [&](auto value_at) {
    if (accumulate) {
      for (std::size_t i = 0; i < count; ++i) out[i] += value_at(i);
    } else {
      for (std::size_t i = 0; i < count; ++i) out[i] = value_at(i);
    }
  };
  // Wire buffers are byte arrays: values are read with memcpy.
  auto read16 = [wire](std::size_t i) {
    std::uint16_t h;
    std::memcpy(&h, wire + 2 * i, 2);
    return h;
  };
  switch (wire_) {
    case DType::F16:
      run([&](std::size_t i) { return half_to_float(read16(i)); });
      break;
    case DType::BF16:
      run([&](std::size_t i) { return bf16_to_float(read16(i)); });
      break;
    default:
      run([wire](std::size_t i) {
        float f;
        std::memcpy(&f, wire + 4 * i, 4);
        return f;
      });
  }
}

}  // namespace bagua
