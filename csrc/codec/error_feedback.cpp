#include "codec/error_feedback.hpp"

namespace bagua {

void ErrorFeedback::encode(const Codec& codec, const float* input, std::uint8_t* wire) {
  const std::size_t n = residual_.size();
  scratch_.resize(n);
  for (std::size_t i = 0; i < n; ++i) scratch_[i] = input[i] + residual_[i];
  codec.encode(scratch_.data(), n, DType::F32, wire);
  // residual = x - D(C(x)): decode into the residual, then flip it around.
  codec.decode(wire, codec.wire_bytes(n), n, residual_.data(), false);
  for (std::size_t i = 0; i < n; ++i) residual_[i] = scratch_[i] - residual_[i];
}

}  // namespace bagua
