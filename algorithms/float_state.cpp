#include "algorithms/float_state.hpp"

#include <fmt/format.h>

#include <cstring>

#include "core/error.hpp"

namespace bagua {

AlgorithmState save_float_vectors(const NamedFloatVectors& vectors) {
  AlgorithmState out;
  for (const auto& [key, v] : vectors) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(v->data());
    out[key] = std::vector<std::uint8_t>(p, p + v->size() * sizeof(float));
  }
  return out;
}

void load_float_vectors(const AlgorithmState& state, const NamedFloatVectors& vectors, const std::string& who) {
  for (const auto& [key, v] : vectors) {
    auto it = state.find(key);
    if (it == state.end() || it->second.size() != v->size() * sizeof(float)) {
      throw InvalidArgument(fmt::format(
          "{}: the checkpoint has no {} of {} values (saved with another model, bucket_cap_mb or world size?)", who,
          key, v->size()));
    }
  }
  if (state.size() != vectors.size()) {
    throw InvalidArgument(
        fmt::format("{}: the checkpoint has {} entries, this model needs {}", who, state.size(), vectors.size()));
  }
  for (const auto& [key, v] : vectors) std::memcpy(v->data(), state.at(key).data(), v->size() * sizeof(float));
}

}  // namespace bagua
