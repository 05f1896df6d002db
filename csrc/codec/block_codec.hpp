// Shared frame of the lossy codecs: the values are cut into blocks of
// `block_elems` (the last one shorter), each written as a BlockHeader and a
// payload whose size depends only on the block's count. The frame checks
// the wire size, every header's count and flags before a block is decoded.
#pragma once

#include <optional>

#include "codec/block_header.hpp"
#include "codec/block_rules.hpp"
#include "codec/codec.hpp"

namespace bagua {

class BlockCodec : public Codec {
 public:
  BlockCodec(std::size_t block_elems, kernels::Isa isa);

  std::size_t wire_bytes(std::size_t count) const final;
  void encode(const void* in, std::size_t count, DType dtype, std::uint8_t* wire) const final;
  void decode(const std::uint8_t* wire, std::size_t wire_size, std::size_t count, float* out,
              bool accumulate) const final;
  bool lossless() const final { return false; }
  void encode_with_feedback(const float* x, std::size_t count, float* residual, std::uint8_t* wire) const final;
  // Block by block, from block_rounding_variance.
  bool rounding_variance(const float* decoded, std::size_t count, float* out) const final;

 protected:
  virtual std::size_t payload_bytes(std::size_t n) const = 0;
  // Fills the header's a, b and flags; writes the payload.
  virtual void encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const = 0;
  // What is wrong with a header (already known to have the right count and
  // known flags) or its payload, by the rules of block_rules.hpp.
  virtual BlockFault block_fault(const BlockHeader& h, const std::uint8_t* payload, std::size_t n) const = 0;
  virtual void decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                            bool accumulate) const = 0;
  // The rounding's variance, the same for every value of a block, from the
  // block's n decoded values; nullopt where they do not tell it.
  virtual std::optional<float> block_rounding_variance(const float* /*decoded*/, std::size_t /*n*/) const {
    return std::nullopt;
  }

  kernels::Isa isa_;

 public:
  // Values per block for a call of `count` values (the last block may be
  // shorter), and the payload size of an n-value block: the wire layout,
  // for the CUDA codecs.
  std::size_t block_for(std::size_t count) const;
  std::size_t payload_size(std::size_t n) const { return payload_bytes(n); }

 private:
  // One checked block into `out`: NaN for a block flagged non-finite.
  void decode_checked_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                            bool accumulate) const;

  std::size_t block_elems_;
};

}  // namespace bagua
