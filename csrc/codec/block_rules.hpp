// What makes a lossy codec's block header valid, as data: the CPU decoders
// turn a fault into a ProtocolError, the CUDA decoders report the first
// faulty block from the device, and both judge by these same functions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/block_header.hpp"
#include "codec/element_math.hpp"

namespace bagua {

enum class BlockFault : std::uint32_t {
  None = 0,
  Count,            // the header's count is not the block's
  UnknownFlags,     // flags outside kKnownFlags
  NonFiniteFields,  // a non-finite block must carry zeros
  Range,            // minmax_uint8: lo/hi not finite, lo > hi, or hi - lo beyond fp32
  SecondField,      // sign1bit: the second field must be 0
  Scale,            // sign1bit: scale not finite or negative
  Padding,          // sign1bit: unused bits of the last byte are not zero
};

const char* block_fault_text(BlockFault f);

// Checks shared by every block codec, before the codec's own.
BAGUA_HD inline BlockFault frame_fault(const BlockHeader& h, std::size_t n) {
  if (h.count != n) return BlockFault::Count;
  if (h.flags & ~BlockHeader::kKnownFlags) return BlockFault::UnknownFlags;
  return BlockFault::None;
}

BAGUA_HD inline BlockFault minmax_fault(const BlockHeader& h) {
  if (h.flags & BlockHeader::kNonFinite) return h.a != 0 || h.b != 0 ? BlockFault::NonFiniteFields : BlockFault::None;
  if (element::non_finite(h.a) || element::non_finite(h.b) || h.a > h.b ||
      !element::minmax_range_fits(h.a, h.b)) {
    return BlockFault::Range;
  }
  return BlockFault::None;
}

// `last_byte`: the payload's final byte (read only when n % 8 != 0).
BAGUA_HD inline BlockFault sign_fault(const BlockHeader& h, std::size_t n, std::uint8_t last_byte) {
  if (h.b != 0) return BlockFault::SecondField;
  if (h.flags & BlockHeader::kNonFinite) return h.a != 0 ? BlockFault::NonFiniteFields : BlockFault::None;
  if (element::non_finite(h.a) || h.a < 0) return BlockFault::Scale;
  if (n % 8 && (last_byte >> (n % 8)) != 0) return BlockFault::Padding;
  return BlockFault::None;
}

}  // namespace bagua
