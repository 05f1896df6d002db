#include "codec/minmax_uint8.hpp"

#include <cstring>

#include "core/error.hpp"

namespace bagua {

void MinMaxUint8Codec::encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const {
  const kernels::Range r = kernels::min_max(v, n, isa_);
  if (!r.finite || !element::minmax_range_fits(r.lo, r.hi)) {
    h.flags = BlockHeader::kNonFinite;
    std::memset(payload, 0, n);
    return;
  }
  h.a = r.lo;
  h.b = r.hi;
  kernels::quantize_u8(v, n, r.lo, element::minmax_scale(r.lo, r.hi), payload, isa_);
}

BlockFault MinMaxUint8Codec::block_fault(const BlockHeader& h, const std::uint8_t*, std::size_t) const {
  return minmax_fault(h);
}

void MinMaxUint8Codec::decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                                    bool accumulate) const {
  kernels::dequantize_u8(payload, n, h.a, element::minmax_step(h.a, h.b), out, accumulate, isa_);
}

std::optional<float> MinMaxUint8Codec::block_rounding_variance(const float* decoded, std::size_t n) const {
  const kernels::Range r = kernels::min_max(decoded, n, isa_);
  if (!r.finite) return std::nullopt;
  const float step = element::minmax_step(r.lo, r.hi);
  return step * step / 12.0f;
}

}  // namespace bagua
