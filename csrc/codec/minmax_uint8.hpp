// minmax_uint8: per block lo = min, hi = max, scale = 255 / (hi - lo + eps),
// code q = round((v - lo) * scale) in [0, 255], decoded v' = lo + q / scale;
// so |v - v'| <= (hi - lo + eps) / 510 (plus fp32 rounding). eps = 1e-12.
// A constant block decodes exactly. A block with NaN or +-Inf, or whose
// range overflows fp32, is flagged and decodes to NaN.
#pragma once

#include "codec/block_codec.hpp"
#include "codec/element_math.hpp"

namespace bagua {

class MinMaxUint8Codec final : public BlockCodec {
 public:
  static constexpr double kEps = element::kMinMaxEps;

  explicit MinMaxUint8Codec(std::size_t block_elems = 0, kernels::Isa isa = kernels::best_isa())
      : BlockCodec(block_elems, isa) {}
  std::string name() const override { return "minmax_uint8"; }
  bool knows_rounding_variance() const override { return true; }

 private:
  std::size_t payload_bytes(std::size_t n) const override { return n; }
  void encode_block(const float* v, std::size_t n, BlockHeader& h, std::uint8_t* payload) const override;
  BlockFault block_fault(const BlockHeader& h, const std::uint8_t* payload, std::size_t n) const override;
  void decode_block(const BlockHeader& h, const std::uint8_t* payload, std::size_t n, float* out,
                    bool accumulate) const override;
  // Round to nearest on a grid of step (hi - lo + eps) / 255: an error
  // spread evenly over one step, variance step^2 / 12. A decoded block
  // spans the same [lo, hi] as its input (q = 0 and 255 are taken), so the
  // step is known from the decoded values alone.
  std::optional<float> block_rounding_variance(const float* decoded, std::size_t n) const override;
};

}  // namespace bagua
