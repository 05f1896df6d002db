// What of qadam survives a checkpoint: per bucket the momentum, with
// precondition the warm-up variance, with error feedback both residuals.
// The frozen denominators are derived, so they are recomputed, not saved.
#include <fmt/format.h>

#include "algorithms/qadam/qadam.hpp"
#include "algorithms/float_state.hpp"

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
  return save_float_vectors(const_cast<QAdam*>(this)->state_vectors());
}

void QAdam::load_state_dict(const AlgorithmState& state) {
  load_float_vectors(state, state_vectors(), options_.name);
  for (auto& d : denominators_) d.clear();  // derived from the variance just loaded
}

}  // namespace bagua
