#include "codec/minmax_uint8.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.hpp"

namespace bagua {
namespace {
// Scale and step come from double arithmetic on lo and hi, so a range near
// the fp32 limit cannot overflow, and every encoder and decoder (CPU or
// CUDA) derives the same fp32 constants from the same header.
float scale_of(float lo, float hi) { return static_cast<float>(255.0 / ((double)hi - lo + MinMaxUint8Codec::kEps)); }
float step_of(float lo, float hi) { return static_cast<float>(((double)hi - lo + MinMaxUint8Codec::kEps) / 255.0); }
}  // namespace

void MinMaxUint8Codec::encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const {
  const kernels::Range r = kernels::min_max(v, n, isa_);
  const double range = static_cast<double>(r.hi) - r.lo;
  if (!r.finite || !(range <= std::numeric_limits<float>::max())) {
    h.flags = BlockHeader::kNonFinite;
    std::memset(payload, 0, n);
    return;
  }
  h.a = r.lo;
  h.b = r.hi;
  kernels::quantize_u8(v, n, r.lo, scale_of(r.lo, r.hi), payload, isa_);
}

void MinMaxUint8Codec::check_block(const BlockHeader& h, const std::uint8_t*, std::size_t) const {
  if (h.flags & BlockHeader::kNonFinite) {
    if (h.a != 0 || h.b != 0) throw ProtocolError("minmax_uint8: a non-finite block must carry lo = hi = 0");
    return;
  }
  if (!std::isfinite(h.a) || !std::isfinite(h.b) || h.a > h.b ||
      !(static_cast<double>(h.b) - h.a <= std::numeric_limits<float>::max())) {
    throw ProtocolError(fmt::format("minmax_uint8: bad block range lo={} hi={}", h.a, h.b));
  }
}

void MinMaxUint8Codec::decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                                    bool accumulate) const {
  kernels::dequantize_u8(payload, n, h.a, step_of(h.a, h.b), out, accumulate, isa_);
}

}  // namespace bagua
