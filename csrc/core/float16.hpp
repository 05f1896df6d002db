// The 16-bit float formats as bit patterns (C++20 has no portable arithmetic
// type for them), for host and device alike (core/host_device.hpp).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/host_device.hpp"

namespace bagua {

BAGUA_HD inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

BAGUA_HD inline float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// IEEE binary16 <-> binary32, round-to-nearest-even; NaN and Inf preserved.
// Widening without a branch, so that loops of it vectorize: a half's bits
// shifted into place read as a binary32 2^112 times too small (exponent bias
// 15 instead of 127), subnormals included, and the multiply is exact. Inf
// and NaN keep their payload, as the bits say.
BAGUA_HD inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t magnitude = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
  const std::uint32_t finite = float_bits(bits_float(magnitude) * 0x1p112f);
  return bits_float(sign | (magnitude >= (0x7c00u << 13) ? magnitude | 0x7f800000u : finite));
}

BAGUA_HD inline std::uint16_t float_to_half(float f) {
  const std::uint32_t bits = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: Inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: shift the implicit-1 mantissa into place
    // and round to nearest even on the bits shifted out.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24
    std::uint32_t q = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return sign | static_cast<std::uint16_t>(q);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits.
  std::uint32_t r = abs - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | static_cast<std::uint16_t>(r >> 13);
}

// bfloat16 is the top half of a binary32; rounding is to nearest even and NaN
// stays NaN (a plain truncation could turn a NaN payload into Inf).
BAGUA_HD inline float bf16_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

BAGUA_HD inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits = float_bits(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

}  // namespace bagua
