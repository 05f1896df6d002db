// The arithmetic qadam and onebit_adam share with torch.optim.Adam, rounded
// as torch rounds it on the CPU, so that during the warm-up this object's
// momentum and variance equal the optimizer's exp_avg and exp_avg_sq bit
// for bit.
#pragma once

#include <cstddef>

namespace bagua {

// torch's lerp: start + w (end - start) for w < 0.5, else
// end - (end - start)(1 - w). `body` gets the formula for this weight, so
// that every loop using it is one branch-free, vectorizable pass.
template <class Body>
void with_lerp(float weight, Body&& body) {
  if (weight < 0.5f) {
    body([weight](float m, float g) { return m + weight * (g - m); });
  } else {
    const float rest = 1.0f - weight;
    body([rest](float m, float g) { return g - (g - m) * rest; });
  }
}

// m <- m + w (g - m), the way torch's lerp_ computes it (so the momentum
// during warm-up is torch.optim.Adam's exp_avg to the last bit).
void lerp_momentum(float* m, const float* g, std::size_t n, float weight);

// v <- beta2 v + (1 - beta2) g^2 (decay = beta2, fresh = 1 - beta2), as
// torch's exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2).
void accumulate_square(float* v, const float* g, std::size_t n, float decay, float fresh);

// True when every value is finite.
bool all_finite(const float* v, std::size_t n);

}  // namespace bagua
