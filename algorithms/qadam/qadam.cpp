#include "algorithms/qadam/qadam.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "algorithms/qadam/adam_math.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "collectives/ring_allreduce.hpp"
#include "core/error.hpp"

namespace bagua {

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
  // A sign codec's decoded values do not tell what it lost; minmax's do.
  // With error feedback what one exchange loses returns in the next: that
  // is not a rounding the optimizer could subtract.
  fills_companions_ =
      options_.variance == "recovered" && !options_.error_feedback && codec_->knows_rounding_variance();
}

std::string QAdam::spec() const {
  if (options_.precondition) {
    return fmt::format("{}:beta1={},beta2={},eps={},precondition=true,variance={},warmup_steps={}", options_.name,
                       options_.beta1, options_.beta2, options_.eps, options_.variance, options_.warmup_steps);
  }
  return fmt::format("{}:beta1={},variance={},warmup_steps={}", options_.name, options_.beta1, options_.variance,
                     options_.warmup_steps);
}

void QAdam::init_operations(const BucketView& b, StepContext& /*ctx*/) {
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
    ring_allreduce(ctx.comm, ring_, g, b.count, DType::F32, ReduceOp::Avg, ctx.tags[0]);
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
    compressed_allreduce(ctx.comm, everyone_, m.data(), b.count, *codec_, ReduceOp::Avg, ctx.tags[0], &fb);
  } else {
    compressed_allreduce(ctx.comm, everyone_, m.data(), b.count, *codec_, ReduceOp::Avg, ctx.tags[0]);
  }
  if (fills_companions_ && b.companion) fill_companion(b, m.data());
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

void QAdam::fill_companion(const BucketView& b, const float* averaged) const {
  float* out = b.companion;
  if (!compressed_average_rounding_variance(averaged, b.count, static_cast<int>(everyone_.size()), *codec_, out)) {
    // A non-finite block: the check after the copy stops the run.
    std::fill(out, out + b.count, 0.0f);
    return;
  }
  if (options_.precondition) {
    // m / d went through the codec; m = (m / d) d carries d^2 its variance.
    const float* d = denominators_.at(static_cast<std::size_t>(b.index)).data();
    for (std::size_t k = 0; k < b.count; ++k) out[k] *= d[k] * d[k];
  }
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

}  // namespace bagua
