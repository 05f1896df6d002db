#include "algorithms/qadam/adam_math.hpp"

#include <cmath>
#include <limits>

namespace bagua {

// v = fma((1 - beta2) g, g, beta2 v): the rounding of torch's
// exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2) on its vectorized
// CPU path, so that this variance, and the denominators derived from it,
// equal the optimizer's bit for bit. fma is exact wherever it runs; the FMA
// unit (a clone picked at load time) only makes it fast.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("fma", "default")))
#endif
void accumulate_square(float* v, const float* g, std::size_t n, float decay, float fresh) {
  for (std::size_t k = 0; k < n; ++k) v[k] = std::fma(fresh * g[k], g[k], v[k] * decay);
}

// One branch-free pass (NaN compares false).
bool all_finite(const float* v, std::size_t n) {
  bool ok = true;
  for (std::size_t k = 0; k < n; ++k) ok &= std::abs(v[k]) <= std::numeric_limits<float>::max();
  return ok;
}

void lerp_momentum(float* m, const float* g, std::size_t n, float weight) {
  with_lerp(weight, [&](auto lerp) {
    for (std::size_t i = 0; i < n; ++i) m[i] = lerp(m[i], g[i]);
  });
}

}  // namespace bagua
