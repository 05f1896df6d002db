#include "algorithms/local_sgd/outer_optimizer.hpp"

namespace bagua {

void outer_sgd_step(float* x0, float* momentum, const float* delta, std::size_t n, const OuterOptimizerOptions& o,
                    bool first) {
  const auto lr = static_cast<float>(o.lr);
  const auto mu = static_cast<float>(o.momentum);
  if (mu == 0.0f) {
    for (std::size_t i = 0; i < n; ++i) x0[i] -= lr * delta[i];
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const float b = first ? delta[i] : mu * momentum[i] + delta[i];
    momentum[i] = b;
    x0[i] -= lr * (o.nesterov ? delta[i] + mu * b : b);
  }
}

}  // namespace bagua
