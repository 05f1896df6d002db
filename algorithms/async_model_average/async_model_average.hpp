// async_model_average (docs/async_model_average.md): after `warmup_steps` of
// gradient_allreduce, training never communicates; a thread of its own
// averages a snapshot of the weights with peers (all, shift_one or ring)
// every `sync_interval_ms` and moves the weights by (average - snapshot)
// under the model lock, which training holds from the forward pre-hook to
// the end of the optimizer step. abort/resume are named controls. With
// max_lag, a rank that ran more than that many steps past the snapshot of
// its last average waits for the next one (stale-synchronous); by default
// it never waits.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "algorithms/async_model_average/background_averager.hpp"
#include "algorithms/gradient_allreduce/gradient_allreduce.hpp"
#include "topology/peer_selection.hpp"

namespace bagua {

struct AsyncModelAverageOptions {
  std::uint64_t sync_interval_ms = 500;
  std::uint64_t warmup_steps = 0;
  PeerMode mode = PeerMode::All;
  // Bounded staleness: a forward waits while the weights were last averaged
  // from a snapshot more than max_lag steps old. 0: never waits.
  std::uint64_t max_lag = 0;
};

class AsyncModelAverage final : public Algorithm {
 public:
  // Throws, on every rank alike, when the mode cannot pair this world.
  AsyncModelAverage(AsyncModelAverageOptions options, int world_size);
  ~AsyncModelAverage() override;

  std::string spec() const override;
  std::vector<BucketRole> bucket_roles() const override;
  std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(
      BucketRole role, const std::vector<TensorInfo>& tensors, const BucketingOptions& options) override;
  void init_operations(const BucketView& bucket, StepContext& ctx) override;

  void forward_pre_hook(StepContext& ctx) override;
  void on_bucket_ready(const BucketView& bucket, StepContext& ctx) override;
  void post_optimizer_step_hook(StepContext& ctx) override;
  bool need_reset(std::uint64_t step) override;
  bool buckets_may_overlap() const override { return warmup_.buckets_may_overlap(); }

  void start(ThreadContext ctx) override;
  void stop(std::chrono::milliseconds deadline) override;
  std::vector<std::string> controls() const override { return {"abort", "resume"}; }
  void control(const std::string& name, StepContext& ctx) override;
  void before_averaging_replicas(StepContext& ctx) override;
  void replicas_averaged(StepContext& ctx) override;

  bool moves_weights_in_background() const override { return true; }
  void hold_weights(WeightsHold hold) override;
  void release_weights() override;

  // The warm-up's end follows the step.
  bool depends_on_step() const override { return true; }
  AlgorithmState state_dict() const override;
  void load_state_dict(const AlgorithmState& state) override;

 private:
  AsyncModelAverageOptions options_;
  int world_size_;
  GradientAllreduce warmup_;
  bool averaging_;  // past the warm-up: weights buckets, the thread's rounds
  std::vector<BucketView> weights_;
  std::chrono::milliseconds timeout_{300000};
  std::unique_ptr<BackgroundAverager> averager_;
  std::uint64_t loaded_round_ = 0;  // a checkpoint's, for a thread not started yet
  bool aborted_ = false;            // by the user's control; what replicas_averaged restores

  // Collective: every rank's thread agrees, in one round, to stop (or go on).
  void set_paused(bool paused);
};

}  // namespace bagua
