#include "codec/block_codec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "core/error.hpp"

namespace bagua {
namespace {
// A header counts in 32 bits; longer inputs get more blocks.
constexpr std::size_t kMaxBlock = std::size_t{1} << 30;
}  // namespace

BlockCodec::BlockCodec(std::size_t block_elems, kernels::Isa isa) : isa_(isa), block_elems_(block_elems) {}

std::size_t BlockCodec::block_for(std::size_t count) const {
  const std::size_t b = block_elems_ == 0 ? count : block_elems_;
  return std::clamp<std::size_t>(b, 1, kMaxBlock);
}

std::size_t BlockCodec::wire_bytes(std::size_t count) const {
  if (count == 0) return 0;
  const std::size_t block = block_for(count);
  const std::size_t full = count / block, rest = count % block;
  return full * (BlockHeader::kBytes + payload_bytes(block)) + (rest ? BlockHeader::kBytes + payload_bytes(rest) : 0);
}

void BlockCodec::encode(const void* in, std::size_t count, DType dtype, std::uint8_t* wire) const {
  thread_local std::vector<float> scratch;  // fp16/bf16 input widened; reused, no allocation per call
  const float* v = as_float(in, count, dtype, scratch);
  const std::size_t block = block_for(count);
  for (std::size_t at = 0; at < count; at += block) {
    const std::size_t n = std::min(block, count - at);
    BlockHeader h;
    h.count = static_cast<std::uint32_t>(n);
    encode_block(v + at, n, h, wire + BlockHeader::kBytes);
    h.write(wire);
    wire += BlockHeader::kBytes + payload_bytes(n);
  }
}

void BlockCodec::decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
                        bool accumulate) const {
  check_wire_size(wire_size, count);
  // Every block is checked before any is decoded: a bad one anywhere leaves `out` as it was.
  const std::size_t block = block_for(count);
  const std::uint8_t* p = wire;
  for (std::size_t at = 0; at < count; at += block) {
    const std::size_t n = std::min(block, count - at);
    const BlockHeader h = BlockHeader::read(p);
    BlockFault fault = frame_fault(h, n);
    if (fault == BlockFault::None) fault = block_fault(h, p + BlockHeader::kBytes, n);
    if (fault != BlockFault::None) {
      throw ProtocolError(fmt::format("{}: block at value {} (count {}, fields {} {}, flags {:#x}): {}", name(), at,
                                      h.count, h.a, h.b, h.flags, block_fault_text(fault)));
    }
    p += BlockHeader::kBytes + payload_bytes(n);
  }
  p = wire;
  for (std::size_t at = 0; at < count; at += block) {
    const std::size_t n = std::min(block, count - at);
    decode_checked_block(BlockHeader::read(p), p + BlockHeader::kBytes, n, out + at, accumulate);
    p += BlockHeader::kBytes + payload_bytes(n);
  }
}

void BlockCodec::decode_checked_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                                      bool accumulate) const {
  if (h.flags & BlockHeader::kNonFinite) {
    std::fill(out, out + n, std::numeric_limits<float>::quiet_NaN());
  } else {
    decode_block(h, payload, n, out, accumulate);
  }
}

void BlockCodec::encode_with_feedback(const float* x, std::size_t count, float* residual, std::uint8_t* wire) const {
  // Codec::encode_with_feedback's steps, one block at a time: a block (16
  // KiB at the algorithms' 4096 values) stays in cache through all of them,
  // so memory is read once instead of six times. This runs on the
  // communication thread beside the backward pass; every pass it saves is
  // compute time given back. The blocks are independent on the wire, so the
  // bytes, and the residual's values, are those of the whole-input steps.
  const std::size_t block = block_for(count);
  for (std::size_t at = 0; at < count; at += block) {
    const std::size_t n = std::min(block, count - at);
    float* r = residual + at;
    for (std::size_t i = 0; i < n; ++i) r[i] += x[at + i];
    BlockHeader h;
    h.count = static_cast<std::uint32_t>(n);
    encode_block(r, n, h, wire + BlockHeader::kBytes);
    h.write(wire);
    for (std::size_t i = 0; i < n; ++i) r[i] = -r[i];
    decode_checked_block(h, wire + BlockHeader::kBytes, n, r, true);
    for (std::size_t i = 0; i < n; ++i) r[i] = -r[i];
    wire += BlockHeader::kBytes + payload_bytes(n);
  }
}

const char* block_fault_text(BlockFault f) {
  switch (f) {
    case BlockFault::None: return "valid";
    case BlockFault::Count: return "the header's value count is not the block's";
    case BlockFault::UnknownFlags: return "unknown flags";
    case BlockFault::NonFiniteFields: return "a block flagged non-finite must carry zeros";
    case BlockFault::Range: return "lo and hi must be finite, lo <= hi, and hi - lo within fp32";
    case BlockFault::SecondField: return "the second header field must be 0";
    case BlockFault::Scale: return "the scale must be finite and not negative";
    case BlockFault::Padding: return "the padding bits of the last byte are not zero";
  }
  return "unknown fault";
}

bool BlockCodec::rounding_variance(const float* decoded, std::size_t count, float* out) const {
  const std::size_t block = block_for(count);
  for (std::size_t at = 0; at < count; at += block) {
    const std::size_t n = std::min(block, count - at);
    const std::optional<float> variance = block_rounding_variance(decoded + at, n);
    if (!variance) return false;
    std::fill(out + at, out + at + n, *variance);
  }
  return true;
}

}  // namespace bagua
