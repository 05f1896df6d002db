// DiLoCo's outer optimizer (arXiv 2311.08105): SGD with momentum, optionally
// Nesterov, applied to the weights x0 of the last synchronization with the
// averaged pseudo-gradient delta = x0 - x_local as its gradient. The update
// is torch.optim.SGD's (dampening 0): b = mu b + delta (b = delta the first
// time), step = nesterov ? delta + mu b : b, x0 -= lr step.
#pragma once

#include <cstddef>

namespace bagua {

struct OuterOptimizerOptions {
  double lr = 1.0;
  double momentum = 0.0;
  bool nesterov = false;
  // outer_lr 1 without momentum moves x0 to the average itself.
  bool is_plain_average() const { return lr == 1.0 && momentum == 0.0; }
};

// One outer step over n values. `momentum` is read and written unless
// options.momentum is 0; `first` says it holds nothing yet.
void outer_sgd_step(float* x0, float* momentum, const float* delta, std::size_t n, const OuterOptimizerOptions& options,
                    bool first);

}  // namespace bagua
