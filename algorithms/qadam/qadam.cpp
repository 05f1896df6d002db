#include "algorithms/qadam/qadam.hpp"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "algorithms/registry.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {

void lerp_momentum(float* m, const float* g, std::size_t n, float weight) {
  // torch's lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w).
  if (weight < 0.5f) {
    for (std::size_t i = 0; i < n; ++i) m[i] = m[i] + weight * (g[i] - m[i]);
  } else {
    const float rest = 1.0f - weight;
    for (std::size_t i = 0; i < n; ++i) m[i] = g[i] - (g[i] - m[i]) * rest;
  }
}

QAdam::QAdam(QAdamOptions options, int world_size)
    : options_(options), ring_(Ring::natural(world_size)), everyone_(world_size), codec_(make_codec("minmax_uint8")) {
  if (!(options_.beta1 >= 0.0 && options_.beta1 < 1.0)) {
    throw InvalidArgument(fmt::format("qadam: beta1 must be in [0, 1), got {}", options_.beta1));
  }
  std::iota(everyone_.begin(), everyone_.end(), 0);
}

std::string QAdam::spec() const {
  return fmt::format("qadam:beta1={},warmup_steps={}", options_.beta1, options_.warmup_steps);
}

void QAdam::init_operations(const BucketView& b) {
  if (b.dtype != DType::F32) {
    throw InvalidArgument(fmt::format("qadam keeps fp32 momenta; bucket {} holds {} (keep the parameters in fp32)",
                                      b.index, dtype_name(b.dtype)));
  }
  if (momenta_.size() <= static_cast<std::size_t>(b.index)) momenta_.resize(b.index + 1);
  momenta_[b.index].assign(b.count, 0.0f);
}

void QAdam::on_bucket_ready(const BucketView& b, StepContext& ctx) {
  auto* g = static_cast<float*>(b.data);
  auto& m = momenta_.at(b.index);
  const auto weight = static_cast<float>(1.0 - options_.beta1);
  if (ctx.step < options_.warmup_steps) {
    // Warm-up: exact average; the momentum follows Adam's exp_avg.
    ring_allreduce(ctx.comm, ring_, g, b.count, DType::F32, ReduceOp::Avg, ctx.tag);
    lerp_momentum(m.data(), g, b.count, weight);
    return;
  }
  lerp_momentum(m.data(), g, b.count, weight);
  compressed_allreduce(ctx.comm, everyone_, m.data(), b.count, *codec_, ReduceOp::Avg, ctx.tag);
  std::memcpy(g, m.data(), b.count * sizeof(float));
}

AlgorithmState QAdam::state_dict() const {
  AlgorithmState out;
  for (std::size_t i = 0; i < momenta_.size(); ++i) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(momenta_[i].data());
    out[fmt::format("bucket{}.momentum", i)] = std::vector<std::uint8_t>(p, p + momenta_[i].size() * sizeof(float));
  }
  return out;
}

void QAdam::load_state_dict(const AlgorithmState& state) {
  // Everything is checked before anything is changed.
  for (std::size_t i = 0; i < momenta_.size(); ++i) {
    auto it = state.find(fmt::format("bucket{}.momentum", i));
    if (it == state.end() || it->second.size() != momenta_[i].size() * sizeof(float)) {
      throw InvalidArgument(fmt::format(
          "qadam: the checkpoint has no momentum of {} values for bucket {} (saved with another model or bucket_cap_mb?)",
          momenta_[i].size(), i));
    }
  }
  if (state.size() != momenta_.size()) {
    throw InvalidArgument(fmt::format("qadam: the checkpoint has {} entries, this model has {} buckets", state.size(),
                                      momenta_.size()));
  }
  for (std::size_t i = 0; i < momenta_.size(); ++i) {
    std::memcpy(momenta_[i].data(), state.at(fmt::format("bucket{}.momentum", i)).data(),
                momenta_[i].size() * sizeof(float));
  }
}

void register_qadam(AlgorithmRegistry& registry) {
  registry.add("qadam",
               AlgorithmEntry{
                   "Adam with momenta averaged by an 8-bit compressed all-reduce after an exact warm-up "
                   "(use with bagua_ravnest.QAdamOptimizer)",
                   {{"warmup_steps", "steps of exact Adam before compression starts (default 100)"},
                    {"beta1", "momentum decay, as the optimizer's betas[0] (default 0.9)"}},
                   [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
                     QAdamOptions opts;
                     if (auto it = o.find("warmup_steps"); it != o.end()) {
                       try {
                         const long long w = std::stoll(it->second);
                         if (w < 0) throw std::invalid_argument("negative");
                         opts.warmup_steps = static_cast<std::uint64_t>(w);
                       } catch (const std::exception&) {
                         throw InvalidArgument(fmt::format("qadam: warmup_steps='{}' is not a non-negative integer",
                                                           it->second));
                       }
                     }
                     if (auto it = o.find("beta1"); it != o.end()) {
                       try {
                         opts.beta1 = std::stod(it->second);
                       } catch (const std::exception&) {
                         throw InvalidArgument(fmt::format("qadam: beta1='{}' is not a number", it->second));
                       }
                     }
                     return std::make_unique<QAdam>(opts, world.size);
                   }});
}

}  // namespace bagua
