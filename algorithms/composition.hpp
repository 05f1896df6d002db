// Algorithms built from their parts (docs/composition.md):
// a spec such as "codec=minmax_uint8,exchange=allreduce" instead of a name.
// Only meaningful combinations are built; anything else is an error that
// lists what is valid and why.
#pragma once

#include <memory>

#include "algorithms/registry.hpp"

namespace bagua {

std::unique_ptr<Algorithm> compose_algorithm(const AlgorithmOptions& parts, const WorldInfo& world);

}  // namespace bagua
