// local_sgd (docs/local_sgd.md): every rank steps alone for `period` steps, then
// the ranks average their weights and floating-point buffers (BatchNorm
// statistics). With an outer optimizer (DiLoCo) the average is taken of the
// pseudo-gradient delta = x0 - x, x0 being the weights of the last
// synchronization, and x0 moves by SGD with outer_lr and outer_momentum
// (Nesterov if asked); every rank restarts from the new x0. `codec`
// compresses the pseudo-gradient (sign1bit with error feedback on both
// sides of the exchange). outer_lr = 1 without momentum and codec is plain
// averaging, computed as such (no x0 kept, exact mean of the weights).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "algorithms/float_state.hpp"
#include "algorithms/local_sgd/outer_optimizer.hpp"
#include "codec/codec.hpp"

namespace bagua {

struct LocalSgdOptions {
  std::uint64_t period = 4;
  OuterOptimizerOptions outer;
  std::string codec = "identity";
  // Average in the background and apply it a period late: at a sync the
  // average of the previous sync's snapshot s arrives, and x becomes that
  // average (or x0 after the outer step) plus the progress made since s.
  bool overlap = false;
};

class LocalSgd final : public WholeModelAlgorithm {
 public:
  LocalSgd(LocalSgdOptions options, int rank, int world_size);

  std::string spec() const override;
  std::vector<BucketRole> bucket_roles() const override { return {BucketRole::Weights, BucketRole::Buffers}; }
  void init_operations(const BucketView& bucket, StepContext& ctx) override;
  // The synchronization, after every period-th optimizer step.
  void post_optimizer_step_hook(StepContext& ctx) override;
  void replicas_averaged(StepContext& ctx) override;
  bool depends_on_step() const override { return true; }
  AlgorithmState state_dict() const override;
  void load_state_dict(const AlgorithmState& state) override;

 private:
  bool keeps_x0() const { return !plain_; }
  void sync_weights(const BucketView& b, StepContext& ctx, Tag tag);
  // overlap=true: applies the average that arrived (if any), snapshots the
  // weights and starts averaging them in the background.
  void sync_weights_late(StepContext& ctx);
  // The pseudo-gradient (or the weights, when plain) of `snapshot` averaged
  // in place, by the codec or exactly.
  void average(std::size_t bucket, float* values, std::size_t count, StepContext& ctx, Tag tag);
  void wait_pending() const;
  NamedFloatVectors state_vectors();

  LocalSgdOptions options_;
  int rank_;
  std::vector<int> everyone_;
  CodecPtr codec_;  // null: exact (ring) averages
  bool plain_;      // plain weight averaging: no x0, no outer step
  bool error_feedback_;
  // Per weight bucket: x0, the outer momentum, the pseudo-gradient's room,
  // and with error feedback the two residuals.
  std::vector<std::vector<float>> x0_, momentum_, delta_, worker_residual_, server_residual_;
  // Whether the outer momentum holds a value yet (saved with it).
  std::vector<float> momentum_started_;
  // overlap=true, per weight bucket: the snapshot of the last sync, and the
  // average in the making (the weights', or the pseudo-gradient's); one
  // value saying whether an average is pending (saved: a checkpoint waits
  // for it and keeps it).
  std::vector<std::vector<float>> snapshot_, averaged_;
  std::vector<float> pending_{0.0f};
  mutable RequestPtr in_flight_;
  std::chrono::milliseconds timeout_{0};
};

}  // namespace bagua
