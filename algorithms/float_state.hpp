// An algorithm's state as named fp32 vectors (momenta, residuals, replicas):
// how they become checkpoint bytes and come back, checked before anything
// is changed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "algorithms/algorithm.hpp"

namespace bagua {

using NamedFloatVectors = std::vector<std::pair<std::string, std::vector<float>*>>;

AlgorithmState save_float_vectors(const NamedFloatVectors& vectors);

// Throws, naming `who`, the missing key or the size that differs, and
// leaves every vector as it was.
void load_float_vectors(const AlgorithmState& state, const NamedFloatVectors& vectors, const std::string& who);

}  // namespace bagua
