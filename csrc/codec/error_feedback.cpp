#include "codec/error_feedback.hpp"

namespace bagua {

void encode_with_feedback(const Codec& codec, const float* x, std::size_t n, float* residual, std::uint8_t* wire) {
  std::vector<float> v(x, x + n);
  for (std::size_t i = 0; i < n; ++i) v[i] += residual[i];
  codec.encode(v.data(), n, DType::F32, wire);
  // residual = v - D(C(v)): decode into the residual, then flip it around.
  codec.decode(wire, codec.wire_bytes(n), n, residual, false);
  for (std::size_t i = 0; i < n; ++i) residual[i] = v[i] - residual[i];
}

void ErrorFeedback::encode(const Codec& codec, const float* input, std::uint8_t* wire) {
  encode_with_feedback(codec, input, residual_.size(), residual_.data(), wire);
}

}  // namespace bagua
