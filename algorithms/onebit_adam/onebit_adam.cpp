// onebit_adam (1-bit Adam, DeepSpeed style): qadam's schedule and optimizer
// (algorithms/qadam) with the momentum sent as signs times one scale per
// chunk (sign1bit), and an error-feedback residual on each side of the
// exchange: every rank for the chunks it sends, and the owner of a chunk for
// the reduced chunk it sends back. What compression loses in one step is
// added to the next, so over time nothing is lost.
#include "algorithms/qadam/qadam.hpp"

namespace bagua {

void register_onebit_adam(AlgorithmRegistry& registry) {
  registry.add("onebit_adam",
               AlgorithmEntry{
                   "Adam with momenta averaged as 1-bit signs with error feedback after an exact warm-up "
                   "(use with bagua_ravnest.QAdamOptimizer)",
                   qadam_option_docs(),
                   [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
                     QAdamOptions defaults;
                     defaults.name = "onebit_adam";
                     defaults.codec = "sign1bit";
                     defaults.error_feedback = true;
                     return std::make_unique<QAdam>(parse_qadam_options(o, defaults), world.rank, world.size);
                   }});
}

}  // namespace bagua
