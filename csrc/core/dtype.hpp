// Element types the torch-free core understands, and conversions for the
// 16-bit float formats (which C++20 has no portable arithmetic type for).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bagua {

enum class DType : std::uint8_t { F32, F64, F16, BF16, I8, U8, I32, I64 };

std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);

// IEEE binary16 <-> binary32, round-to-nearest-even; NaN and Inf preserved.
float half_to_float(std::uint16_t h);
std::uint16_t float_to_half(float f);

// bfloat16 is the top half of a binary32; rounding is to nearest even and NaN
// stays NaN (a plain truncation could turn a NaN payload into Inf).
inline float bf16_to_float(std::uint16_t b) {
  std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

}  // namespace bagua
