#include "algorithms/qadam/qadam.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "algorithms/registry.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {

namespace {

// torch's lerp: start + w (end - start) for w < 0.5, else
// end - (end - start)(1 - w). `body` gets the formula for this weight, so
// that every loop using it is one branch-free, vectorizable pass.
template <class Body>
void with_lerp(float weight, Body&& body) {
  if (weight < 0.5f) {
    body([weight](float m, float g) { return m + weight * (g - m); });
  } else {
    const float rest = 1.0f - weight;
    body([rest](float m, float g) { return g - (g - m) * rest; });
  }
}

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

// True when every value is finite: one branch-free pass (NaN compares false).
bool all_finite(const float* v, std::size_t n) {
  bool ok = true;
  for (std::size_t k = 0; k < n; ++k) ok &= std::abs(v[k]) <= std::numeric_limits<float>::max();
  return ok;
}

}  // namespace

void lerp_momentum(float* m, const float* g, std::size_t n, float weight) {
  with_lerp(weight, [&](auto lerp) {
    for (std::size_t i = 0; i < n; ++i) m[i] = lerp(m[i], g[i]);
  });
}

QAdam::QAdam(QAdamOptions options, int rank, int world_size)
    : options_(std::move(options)),
      position_(rank),
      ring_(Ring::natural(world_size)),
      everyone_(world_size),
      codec_(make_codec(options_.codec, options_.block_elems)) {
  if (!(options_.beta1 >= 0.0 && options_.beta1 < 1.0)) {
    throw InvalidArgument(fmt::format("qadam: beta1 must be in [0, 1), got {}", options_.beta1));
  }
  if (options_.precondition) {
    if (!(options_.beta2 >= 0.0 && options_.beta2 < 1.0)) {
      throw InvalidArgument(fmt::format("{}: beta2 must be in [0, 1), got {}", options_.name, options_.beta2));
    }
    if (!(options_.eps > 0.0)) {
      throw InvalidArgument(fmt::format("{}: eps must be positive, got {}", options_.name, options_.eps));
    }
    if (options_.warmup_steps == 0) {
      throw InvalidArgument(fmt::format(
          "{}: precondition divides by the variance of the warm-up; use warmup_steps >= 1", options_.name));
    }
  }
  std::iota(everyone_.begin(), everyone_.end(), 0);
}

std::string QAdam::spec() const {
  if (options_.precondition) {
    return fmt::format("{}:beta1={},beta2={},eps={},precondition=true,warmup_steps={}", options_.name,
                       options_.beta1, options_.beta2, options_.eps, options_.warmup_steps);
  }
  return fmt::format("{}:beta1={},warmup_steps={}", options_.name, options_.beta1, options_.warmup_steps);
}

void QAdam::init_operations(const BucketView& b) {
  if (b.dtype != DType::F32) {
    throw InvalidArgument(fmt::format("{} keeps fp32 momenta; bucket {} holds {} (keep the parameters in fp32)",
                                      options_.name, b.index, dtype_name(b.dtype)));
  }
  const auto i = static_cast<std::size_t>(b.index);
  if (momenta_.size() <= i) {
    momenta_.resize(i + 1);
    if (options_.error_feedback) {
      worker_residuals_.resize(i + 1);
      server_residuals_.resize(i + 1);
    }
  }
  momenta_[i].assign(b.count, 0.0f);
  if (options_.precondition) {
    if (variances_.size() <= i) {
      variances_.resize(i + 1);
      denominators_.resize(i + 1);
    }
    variances_[i].assign(b.count, 0.0f);
    denominators_[i].clear();
  }
  if (options_.error_feedback) {
    worker_residuals_[i].assign(b.count, 0.0f);
    server_residuals_[i].assign(
        compressed_allreduce_owned_count(b.count, static_cast<int>(everyone_.size()), position_), 0.0f);
  }
}

void QAdam::on_bucket_ready(const BucketView& b, StepContext& ctx) {
  auto* g = static_cast<float*>(b.data);
  auto& m = momenta_.at(b.index);
  const auto weight = static_cast<float>(1.0 - options_.beta1);
  if (ctx.step < options_.warmup_steps) {
    // Warm-up: exact average; the momentum follows Adam's exp_avg.
    ring_allreduce(ctx.comm, ring_, g, b.count, DType::F32, ReduceOp::Avg, ctx.tag);
    lerp_momentum(m.data(), g, b.count, weight);
    check_finite(all_finite(m.data(), b.count), b, ctx);
    if (options_.precondition) {
      // v = beta2 v + (1 - beta2) g^2, as the optimizer's exp_avg_sq.
      accumulate_square(variances_.at(b.index).data(), g, b.count, static_cast<float>(options_.beta2),
                        static_cast<float>(1.0 - options_.beta2));
    }
    return;
  }
  // Before and after the exchange, one pass each over the bucket: this
  // runs beside the backward pass on the same cores, so every pass over
  // memory is time taken from it.
  if (options_.precondition) {
    lerp_and_divide(b.index, m.data(), g, b.count, weight);
  } else {
    lerp_momentum(m.data(), g, b.count, weight);
  }
  if (options_.error_feedback) {
    const ErrorFeedbackBuffers fb{&worker_residuals_.at(b.index), &server_residuals_.at(b.index)};
    compressed_allreduce(ctx.comm, everyone_, m.data(), b.count, *codec_, ReduceOp::Avg, ctx.tag, &fb);
  } else {
    compressed_allreduce(ctx.comm, everyone_, m.data(), b.count, *codec_, ReduceOp::Avg, ctx.tag);
  }
  // The copy into the gradient checks what it copies on the way, so a
  // diverged or NaN-fed run stops here, with its step, instead of
  // compressing garbage from now on (a NaN block decodes to NaN everywhere).
  bool finite;
  if (options_.precondition) {
    finite = multiply_into(b.index, m.data(), g, b.count);
  } else {
    finite = true;
    const float* src = m.data();
    for (std::size_t k = 0; k < b.count; ++k) {
      g[k] = src[k];
      finite &= std::abs(src[k]) <= std::numeric_limits<float>::max();
    }
  }
  check_finite(finite, b, ctx);
}

void QAdam::check_finite(bool finite, const BucketView& b, const StepContext& ctx) const {
  if (finite) return;
  throw Error(fmt::format(
      "{}: the averaged momentum of bucket {} is not finite (NaN or Inf) at step {}: a gradient was not finite, "
      "or training diverged; lower the learning rate or check the inputs and loss for NaN",
      options_.name, b.index, ctx.step + 1));
}

void QAdam::lerp_and_divide(std::size_t bucket, float* m, const float* g, std::size_t n, float weight) {
  const float* v = variances_.at(bucket).data();
  auto& d = denominators_.at(bucket);
  if (d.empty()) {
    // Adam's denominator at the switch, as the optimizer computes it:
    // sqrt(v) / sqrt(1 - beta2^T) + eps in fp32, T = warmup_steps.
    const auto correction =
        static_cast<float>(std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(options_.warmup_steps))));
    const auto eps = static_cast<float>(options_.eps);
    d.resize(n);
    for (std::size_t k = 0; k < n; ++k) d[k] = std::sqrt(v[k]) / correction + eps;
  }
  // Where v is 0 the optimizer never moves the coordinate; m / eps would
  // only inflate its block's scale, so it is sent as 0. The quotient is
  // taken everywhere (d >= eps > 0) and then selected, which vectorizes;
  // a division under the condition does not.
  const float* dd = d.data();
  with_lerp(weight, [&](auto lerp) {
    for (std::size_t k = 0; k < n; ++k) {
      const float momentum = lerp(m[k], g[k]);
      const float q = momentum / dd[k];
      m[k] = v[k] > 0.0f ? q : 0.0f;
    }
  });
}

bool QAdam::multiply_into(std::size_t bucket, float* m, float* g, std::size_t n) const {
  const float* d = denominators_.at(bucket).data();
  bool finite = true;
  for (std::size_t k = 0; k < n; ++k) {
    const float x = m[k] * d[k];
    m[k] = x;
    g[k] = x;
    finite &= std::abs(x) <= std::numeric_limits<float>::max();
  }
  return finite;
}

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

QAdamOptions parse_qadam_options(const AlgorithmOptions& o, QAdamOptions opts) {
  if (auto it = o.find("warmup_steps"); it != o.end()) {
    try {
      const long long w = std::stoll(it->second);
      if (w < 0) throw std::invalid_argument("negative");
      opts.warmup_steps = static_cast<std::uint64_t>(w);
    } catch (const std::exception&) {
      throw InvalidArgument(
          fmt::format("{}: warmup_steps='{}' is not a non-negative integer", opts.name, it->second));
    }
  }
  if (auto it = o.find("beta1"); it != o.end()) {
    try {
      opts.beta1 = std::stod(it->second);
    } catch (const std::exception&) {
      throw InvalidArgument(fmt::format("{}: beta1='{}' is not a number", opts.name, it->second));
    }
  }
  opts.precondition = option_bool(o, "precondition", opts.precondition);
  for (auto [key, target] : {std::pair{"beta2", &opts.beta2}, std::pair{"eps", &opts.eps}}) {
    auto it = o.find(key);
    if (it == o.end()) continue;
    if (!opts.precondition) {
      throw InvalidArgument(fmt::format("{}: {} is used only with precondition=true", opts.name, key));
    }
    try {
      *target = std::stod(it->second);
    } catch (const std::exception&) {
      throw InvalidArgument(fmt::format("{}: {}='{}' is not a number", opts.name, key, it->second));
    }
  }
  return opts;
}

std::map<std::string, std::string> qadam_option_docs() {
  return {{"warmup_steps", "steps of exact Adam before compression starts (default 100)"},
          {"beta1", "momentum decay, as the optimizer's betas[0] (default 0.9)"},
          {"precondition", "true: compress the momentum divided by Adam's frozen denominator (default false)"},
          {"beta2", "with precondition: the variance's decay, as the optimizer's betas[1] (default 0.999)"},
          {"eps", "with precondition: as the optimizer's eps (default 1e-8)"}};
}

void register_qadam(AlgorithmRegistry& registry) {
  registry.add("qadam",
               AlgorithmEntry{
                   "Adam with momenta averaged by an 8-bit compressed all-reduce after an exact warm-up "
                   "(use with bagua_ravnest.QAdamOptimizer)",
                   qadam_option_docs(),
                   [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
                     return std::make_unique<QAdam>(parse_qadam_options(o, QAdamOptions{}), world.rank, world.size);
                   }});
}

}  // namespace bagua
