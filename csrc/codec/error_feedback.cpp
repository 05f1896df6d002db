#include "codec/error_feedback.hpp"

namespace bagua {

void encode_with_feedback(const Codec& codec, const float* x, std::size_t n, float* residual, std::uint8_t* wire) {
  // In place, without a copy: residual holds v = x + residual while it is
  // encoded, then -v, to which decoding adds D(C(v)); negating that gives
  // v - D(C(v)) exactly (round-to-nearest is symmetric in sign).
  for (std::size_t i = 0; i < n; ++i) residual[i] += x[i];
  codec.encode(residual, n, DType::F32, wire);
  for (std::size_t i = 0; i < n; ++i) residual[i] = -residual[i];
  codec.decode(wire, codec.wire_bytes(n), n, residual, true);
  for (std::size_t i = 0; i < n; ++i) residual[i] = -residual[i];
}

void ErrorFeedback::encode(const Codec& codec, const float* input, std::uint8_t* wire) {
  encode_with_feedback(codec, input, residual_.size(), residual_.data(), wire);
}

}  // namespace bagua
