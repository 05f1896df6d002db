#include "codec/codec.hpp"

#include <fmt/format.h>

#include "codec/float_codecs.hpp"
#include "codec/minmax_uint8.hpp"
#include "codec/sign1bit.hpp"
#include "core/error.hpp"

namespace bagua {

void Codec::check_wire_size(std::size_t wire_size, std::size_t count) const {
  if (wire_size != wire_bytes(count)) {
    throw ProtocolError(
        fmt::format("{}: {} wire bytes for {} values, expected {}", name(), wire_size, count, wire_bytes(count)));
  }
}

const std::vector<std::string>& codec_names() {
  static const std::vector<std::string> names{"identity", "fp16", "bf16", "minmax_uint8", "sign1bit"};
  return names;
}

CodecPtr make_codec(const std::string& name, std::size_t block_elems, kernels::Isa isa) {
  if (name == "identity") return std::make_shared<FloatCodec>(DType::F32);
  if (name == "fp16") return std::make_shared<FloatCodec>(DType::F16, isa);
  if (name == "bf16") return std::make_shared<FloatCodec>(DType::BF16);
  if (name == "minmax_uint8") return std::make_shared<MinMaxUint8Codec>(block_elems, isa);
  if (name == "sign1bit") return std::make_shared<Sign1BitCodec>(block_elems, isa);
  std::string list;
  for (const auto& n : codec_names()) list += (list.empty() ? "" : ", ") + n;
  throw InvalidArgument(fmt::format("unknown codec '{}'; available: {}", name, list));
}

const float* as_float(const void* in, std::size_t count, DType dtype, std::vector<float>& scratch) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(in);
    case DType::F16:
    case DType::BF16: {
      scratch.resize(count);
      const auto* h = static_cast<const std::uint16_t*>(in);
      // A loop per type: both widenings are branch-free and vectorize.
      if (dtype == DType::F16) {
        for (std::size_t i = 0; i < count; ++i) scratch[i] = half_to_float(h[i]);
      } else {
        for (std::size_t i = 0; i < count; ++i) scratch[i] = bf16_to_float(h[i]);
      }
      return scratch.data();
    }
    default:
      throw InvalidArgument(fmt::format("codecs encode fp32, fp16 or bf16 values, not {}", dtype_name(dtype)));
  }
}

bool Codec::rounding_variance(const float* /*decoded*/, std::size_t /*count*/, float* /*out*/) const {
  return false;
}

}  // namespace bagua
