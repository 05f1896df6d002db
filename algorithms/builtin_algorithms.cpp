// The one place that lists the algorithms compiled into this build. Each
// algorithm folder provides a register_<name> function.
#include "algorithms/composition.hpp"
#include "algorithms/registry.hpp"

namespace bagua {

void register_gradient_allreduce(AlgorithmRegistry& registry);
void register_bytegrad(AlgorithmRegistry& registry);
void register_qadam(AlgorithmRegistry& registry);
void register_onebit_adam(AlgorithmRegistry& registry);
void register_decentralized(AlgorithmRegistry& registry);
void register_local_sgd(AlgorithmRegistry& registry);
void register_low_precision_decentralized(AlgorithmRegistry& registry);
void register_async_model_average(AlgorithmRegistry& registry);

void register_builtin_algorithms(AlgorithmRegistry& registry) {
  register_gradient_allreduce(registry);
  register_bytegrad(registry);
  register_qadam(registry);
  register_onebit_adam(registry);
  register_decentralized(registry);
  register_local_sgd(registry);
  register_low_precision_decentralized(registry);
  register_async_model_average(registry);
  registry.set_composer(compose_algorithm);
}

}  // namespace bagua
