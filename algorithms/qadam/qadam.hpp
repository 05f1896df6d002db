// qadam (BAGUA's compressed Adam): for `warmup_steps` steps the gradients
// are averaged exactly and bagua_ravnest.QAdamOptimizer runs plain Adam; from
// then on each rank updates its momentum m = b1 m + (1 - b1) g locally, the
// momenta are averaged with an 8-bit compressed all-reduce (minmax_uint8),
// and the optimizer steps with that momentum and a variance that keeps
// learning from it (or stays frozen at the switch: the `variance` option).
// This object owns the momenta (so they are in the checkpoint) and leaves in
// each gradient bucket what the optimizer must use: the averaged
// gradient during warm-up, the averaged momentum after it.
//
// onebit_adam (algorithms/onebit_adam) is the same object with the sign1bit
// codec and error feedback on both sides of the exchange.
//
// With `precondition`, what is compressed is the momentum divided by Adam's
// frozen denominator d = sqrt(v_hat) + eps, computed from the variance this
// object follows during warm-up (the same v as the optimizer's). Every rank
// has the same d, so averaging m/d and multiplying back by d averages m;
// but the codec's per-block scale now follows the update each coordinate
// will get, not its raw momentum. Without it, a coordinate with a tiny
// frozen variance receives its block's momentum scale and moves by
// lr * scale / sqrt(v): millions of times lr (docs/qadam.md).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "algorithms/qadam/qadam_options.hpp"
#include "codec/codec.hpp"
#include "topology/ring.hpp"

namespace bagua {

class QAdam final : public Algorithm {
 public:
  QAdam(QAdamOptions options, int rank, int world_size);

  std::string spec() const override;
  void init_operations(const BucketView& bucket, StepContext& ctx) override;
  void on_bucket_ready(const BucketView& bucket, StepContext& ctx) override;
  bool buckets_may_overlap() const override { return true; }
  // With variance=recovered and a codec that knows its rounding: the
  // variance the exchange's rounding added to each averaged momentum, which
  // the optimizer's recovered gradient would otherwise carry into v.
  bool fills_companions() const override { return fills_companions_; }
  AlgorithmState state_dict() const override;
  void load_state_dict(const AlgorithmState& state) override;

 private:
  // Every per-bucket vector of the state, by its state_dict key.
  std::vector<std::pair<std::string, std::vector<float>*>> state_vectors();

  QAdamOptions options_;
  int position_;
  Ring ring_;
  std::vector<int> everyone_;
  CodecPtr codec_;
  bool fills_companions_ = false;
  // The companion of an exchanged bucket: the rounding's variance of each
  // averaged momentum (times d^2 with precondition, as the momentum is).
  void fill_companion(const BucketView& b, const float* averaged) const;
  // Precondition, one pass each: m <- lerp(m, g) / d (0 where v is 0: the
  // optimizer never moves those coordinates), and back: m <- m * d, g <- m.
  void lerp_and_divide(std::size_t bucket, float* m, const float* g, std::size_t n, float weight);
  // Returns whether every product is finite.
  bool multiply_into(std::size_t bucket, float* m, float* g, std::size_t n) const;
  // Throws, naming the algorithm, bucket and step (counted from 1, as the
  // optimizer counts), unless `finite`.
  void check_finite(bool finite, const BucketView& b, const StepContext& ctx) const;

  std::vector<std::vector<float>> momenta_;  // per bucket
  // With precondition: the variance during warm-up, and the denominator
  // derived from it at the switch (recomputed after a checkpoint load).
  std::vector<std::vector<float>> variances_, denominators_;
  // With error feedback: what compressing this rank's momentum chunks lost
  // (worker) and what compressing its owned reduced chunk lost (server).
  std::vector<std::vector<float>> worker_residuals_, server_residuals_;
};


}  // namespace bagua
