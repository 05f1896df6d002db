// Error feedback for a lossy codec: what a send loses is added to the next
// send. With x = input + residual, the codec sends C(x) and keeps
// residual = x - D(C(x)), so over any number of steps
//     sum of decoded sends + final residual = sum of inputs
// (to fp32 rounding): nothing is lost, only delayed.
#pragma once

#include <vector>

#include "codec/codec.hpp"

namespace bagua {

// The step itself, on caller-owned memory: wire = C(x + residual) and
// residual = (x + residual) - D(wire). `wire` has codec.wire_bytes(n) bytes.
void encode_with_feedback(const Codec& codec, const float* x, std::size_t n, float* residual, std::uint8_t* wire);

class ErrorFeedback {
 public:
  explicit ErrorFeedback(std::size_t count) : residual_(count, 0.0f) {}

  // Encodes input + residual into `wire` (codec.wire_bytes(count) bytes) and
  // updates the residual. `input` has the count given at construction.
  void encode(const Codec& codec, const float* input, std::uint8_t* wire);

  std::vector<float>& residual() { return residual_; }
  const std::vector<float>& residual() const { return residual_; }

 private:
  std::vector<float> residual_;
};

}  // namespace bagua
