// low_precision_decentralized (docs/low_precision_decentralized.md; BAGUA's low-precision
// decentralized SGD): ring gossip that sends compressed *differences*.
// Every rank keeps three fp32 replicas: its own last weights w and its
// copies l and r of its left and right neighbours' w. After the optimizer
// step, with x the new weights,
//     d = x + l/3 + r/3 - 5w/3          ((w + l + r)/3 + (x - w) - w)
// is compressed once and sent to both neighbours; each side adds the same
// decoded D(C(d)): w += D(C(d)) (and x = w), and a neighbour's l (or r)
// += D(C(its neighbour's d)). So my w equals my right neighbour's l, bit
// for bit, forever: the invariant, checked every `check_interval` steps by
// exchanging checksums (drift is an error on every rank, naming the ranks).
// The exchange runs on the communication thread and hides behind the next
// forward and backward: only l and r wait for it, and they are next needed
// after the next optimizer step.
#pragma once

#include <string>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "algorithms/float_state.hpp"
#include "codec/codec.hpp"

namespace bagua {

struct LowPrecisionDecentralizedOptions {
  std::string codec = "minmax_uint8";
  std::uint64_t check_interval = 100;  // 0: never
  // Gossip after every N-th optimizer step; in between x moves alone and
  // the replicas stay as they are.
  std::uint64_t communication_interval = 1;
};

class LowPrecisionDecentralized final : public WholeModelAlgorithm {
 public:
  LowPrecisionDecentralized(LowPrecisionDecentralizedOptions options, int rank, int world_size);

  std::string spec() const override;
  void init_operations(const BucketView& bucket, StepContext& ctx) override;
  void post_optimizer_step_hook(StepContext& ctx) override;
  void replicas_averaged(StepContext& ctx) override;
  bool depends_on_step() const override { return true; }
  AlgorithmState state_dict() const override;
  void load_state_dict(const AlgorithmState& state) override;

 private:
  struct Replicas {
    std::vector<float> w, left, right, residual, d;
    std::vector<std::uint8_t> wire, from_left, from_right;
  };
  // Every replica of bucket `b` (mine, my copies of both neighbours') from
  // its weights: valid when all ranks hold the same weights.
  void start_replicas_from(const BucketView& b);
  // Throws on every rank when some rank's copies differ from its
  // neighbours' weights.
  void check_invariant(StepContext& ctx);
  NamedFloatVectors state_vectors();

  LowPrecisionDecentralizedOptions options_;
  int rank_, size_, left_, right_;
  CodecPtr codec_;
  bool error_feedback_;
  std::vector<Replicas> buckets_;
};

}  // namespace bagua
