// The fixed header in front of each block of a lossy codec's wire form.
// Little-endian, as written by memcpy on the (little-endian) hosts we run on.
#pragma once

#include <cstdint>
#include <cstring>

namespace bagua {

struct BlockHeader {
  float a = 0;              // minmax_uint8: lo; sign1bit: scale
  float b = 0;              // minmax_uint8: hi; sign1bit: 0
  std::uint32_t count = 0;  // values in this block
  std::uint32_t flags = 0;  // kNonFinite or 0

  // The block's input held NaN or +-Inf: it decodes to NaN throughout, so a
  // diverging rank is seen by everyone (as an fp32 sum would show it).
  static constexpr std::uint32_t kNonFinite = 1u;
  static constexpr std::uint32_t kKnownFlags = kNonFinite;

  static constexpr std::size_t kBytes = 16;

  void write(std::uint8_t* out) const {
    std::memcpy(out, &a, 4);
    std::memcpy(out + 4, &b, 4);
    std::memcpy(out + 8, &count, 4);
    std::memcpy(out + 12, &flags, 4);
  }
  static BlockHeader read(const std::uint8_t* in) {
    BlockHeader h;
    std::memcpy(&h.a, in, 4);
    std::memcpy(&h.b, in + 4, 4);
    std::memcpy(&h.count, in + 8, 4);
    std::memcpy(&h.flags, in + 12, 4);
    return h;
  }
};

static_assert(sizeof(float) == 4);

}  // namespace bagua
