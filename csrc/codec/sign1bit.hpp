// sign1bit: per block one scale = mean |v| and one bit per value (v >= 0);
// decoded v' = +scale or -scale. Meant to be used with error feedback
// (error_feedback.hpp), which carries what the signs lose to the next step.
// A block with NaN or +-Inf (or whose |v| sum overflows) is flagged and
// decodes to NaN. Unused bits of the last byte must be zero.
#pragma once

#include "codec/block_codec.hpp"

namespace bagua {

class Sign1BitCodec final : public BlockCodec {
 public:
  explicit Sign1BitCodec(std::size_t block_elems = 0, kernels::Isa isa = kernels::best_isa())
      : BlockCodec(block_elems, isa) {}
  std::string name() const override { return "sign1bit"; }

 private:
  std::size_t payload_bytes(std::size_t n) const override { return (n + 7) / 8; }
  void encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const override;
  BlockFault block_fault(const BlockHeader& h, const std::uint8_t* payload, std::size_t n) const override;
  void decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                    bool accumulate) const override;
};

}  // namespace bagua
