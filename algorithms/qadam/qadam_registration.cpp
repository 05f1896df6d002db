#include "algorithms/qadam/qadam.hpp"

namespace bagua {

void register_qadam(AlgorithmRegistry& registry) {
  registry.add("qadam",
               AlgorithmEntry{
                   "Adam with momenta averaged by an 8-bit compressed all-reduce after an exact warm-up "
                   "(use with bagua_ravnest.QAdamOptimizer)",
                   qadam_option_docs(),
                   [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
                     return std::make_unique<QAdam>(parse_qadam_options(o, QAdamOptions{}), world.rank, world.size);
                   },
                   "QAdamOptimizer"});
}

}  // namespace bagua
