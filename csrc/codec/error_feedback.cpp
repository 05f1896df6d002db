#include "codec/error_feedback.hpp"

namespace bagua {

void Codec::encode_with_feedback(const float* x, std::size_t n, float* residual, std::uint8_t* wire) const {
  // In place, without a copy: residual holds v = x + residual while it is
  // encoded, then -v, to which decoding adds D(C(v)); negating that gives
  // v - D(C(v)) exactly (round-to-nearest is symmetric in sign), up to the
  // sign of a zero, which no codec tells apart.
  for (std::size_t i = 0; i < n; ++i) residual[i] += x[i];
  encode(residual, n, DType::F32, wire);
  for (std::size_t i = 0; i < n; ++i) residual[i] = -residual[i];
  decode(wire, wire_bytes(n), n, residual, true);
  for (std::size_t i = 0; i < n; ++i) residual[i] = -residual[i];
}

void encode_with_feedback(const Codec& codec, const float* x, std::size_t n, float* residual, std::uint8_t* wire) {
  codec.encode_with_feedback(x, n, residual, wire);
}

void ErrorFeedback::encode(const Codec& codec, const float* input, std::uint8_t* wire) {
  encode_with_feedback(codec, input, residual_.size(), residual_.data(), wire);
}

}  // namespace bagua
