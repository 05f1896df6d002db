// The fixed header in front of each block of a lossy codec's wire form.
// Little-endian, as written by memcpy on the (little-endian) hosts we run on.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/host_device.hpp"

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

  BAGUA_HD void write(std::uint8_t* out) const {
    memcpy(out, &a, 4);
    memcpy(out + 4, &b, 4);
    memcpy(out + 8, &count, 4);
    memcpy(out + 12, &flags, 4);
  }
  BAGUA_HD static BlockHeader read(const std::uint8_t* in) {
    BlockHeader h;
    memcpy(&h.a, in, 4);
    memcpy(&h.b, in + 4, 4);
    memcpy(&h.count, in + 8, 4);
    memcpy(&h.flags, in + 12, 4);
    return h;
  }
};

static_assert(sizeof(float) == 4);

}  // namespace bagua
