// What of qadam survives a checkpoint: per bucket the momentum, with
// precondition the warm-up variance, with error feedback both residuals.
// The frozen denominators are derived, so they are recomputed, not saved.
#include <fmt/format.h>

#include <cstring>

#include "algorithms/qadam/qadam.hpp"
#include "core/error.hpp"

namespace bagua {

std::vector<std::pair<std::string, std::vector<float>*>> QAdam::state_vectors() {
  std::vector<std::pair<std::string, std::vector<float>*>> out;
  for (std::size_t i = 0; i < momenta_.size(); ++i) {
    out.emplace_back(fmt::format("bucket{}.momentum", i), &momenta_[i]);
    if (options_.precondition) out.emplace_back(fmt::format("bucket{}.variance", i), &variances_[i]);
    if (options_.error_feedback) {
      out.emplace_back(fmt::format("bucket{}.worker_residual", i), &worker_residuals_[i]);
      out.emplace_back(fmt::format("bucket{}.server_residual", i), &server_residuals_[i]);
    }
  }
  return out;
}

AlgorithmState QAdam::state_dict() const {
  AlgorithmState out;
  for (const auto& [key, v] : const_cast<QAdam*>(this)->state_vectors()) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(v->data());
    out[key] = std::vector<std::uint8_t>(p, p + v->size() * sizeof(float));
  }
  return out;
}

void QAdam::load_state_dict(const AlgorithmState& state) {
  const auto vectors = state_vectors();
  // Everything is checked before anything is changed.
  for (const auto& [key, v] : vectors) {
    auto it = state.find(key);
    if (it == state.end() || it->second.size() != v->size() * sizeof(float)) {
      throw InvalidArgument(fmt::format(
          "{}: the checkpoint has no {} of {} values (saved with another model, bucket_cap_mb or world size?)",
          options_.name, key, v->size()));
    }
  }
  if (state.size() != vectors.size()) {
    throw InvalidArgument(fmt::format("{}: the checkpoint has {} entries, this model needs {}", options_.name,
                                      state.size(), vectors.size()));
  }
  for (const auto& [key, v] : vectors) std::memcpy(v->data(), state.at(key).data(), v->size() * sizeof(float));
  for (auto& d : denominators_) d.clear();  // derived from the variance just loaded
}

}  // namespace bagua
