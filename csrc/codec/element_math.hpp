// The per-value arithmetic of the lossy codecs, one definition for the CPU
// loops (kernels_body.inc) and the CUDA kernels (cuda/cuda_codec.cu). The
// bytes agree because both run these same IEEE operations in the same order:
// no fused multiply-add (-ffp-contract=off on the host, -fmad=false in nvcc)
// and no fast-math.
#pragma once

#include <cstdint>

#include "core/float16.hpp"
#include "core/host_device.hpp"

namespace bagua::element {

// minmax_uint8's guard against a zero range (constant blocks).
constexpr double kMinMaxEps = 1e-12;

// NaN or +-Inf: the exponent is all ones.
BAGUA_HD inline bool non_finite(float x) { return (float_bits(x) & 0x7f800000u) == 0x7f800000u; }

// Whether hi - lo is within fp32 (then scale and step are finite).
BAGUA_HD inline bool minmax_range_fits(float lo, float hi) {
  return static_cast<double>(hi) - lo <= 3.4028234663852886e38;  // FLT_MAX
}

// Scale and step come from double arithmetic on lo and hi, so a range near
// the fp32 limit cannot overflow, and every encoder and decoder derives the
// same fp32 constants from the same header.
BAGUA_HD inline float minmax_scale(float lo, float hi) {
  return static_cast<float>(255.0 / (static_cast<double>(hi) - lo + kMinMaxEps));
}
BAGUA_HD inline float minmax_step(float lo, float hi) {
  return static_cast<float>((static_cast<double>(hi) - lo + kMinMaxEps) / 255.0);
}

// Round half up of v's position in [lo, hi] on the 0..255 grid.
BAGUA_HD inline std::uint8_t quantize_u8(float v, float lo, float scale) {
  float x = (v - lo) * scale + 0.5f;
  x = x < 255.0f ? x : 255.0f;
  x = x > 0.0f ? x : 0.0f;
  return static_cast<std::uint8_t>(static_cast<std::int32_t>(x));
}

BAGUA_HD inline float dequantize_u8(std::uint8_t q, float lo, float step) { return lo + static_cast<float>(q) * step; }

// sign1bit's decoded value: +scale for a set bit, -scale otherwise. -scale
// is scale with its sign bit flipped, so selecting is an xor, no branch.
BAGUA_HD inline float signed_scale(std::uint32_t scale_bits, std::uint32_t bit) {
  return bits_float(scale_bits ^ ((~bit & 1u) << 31));
}

}  // namespace bagua::element
