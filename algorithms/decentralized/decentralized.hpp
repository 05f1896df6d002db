// decentralized (D-PSGD, docs/decentralized.md): ranks average their weights with
// peers instead of all-reducing gradients. On a communication step (every
// `communication_interval` steps) the weights' exchange is launched at the
// forward pre-hook and runs while forward and backward read the same
// weights; at the end of backward the averaged copy replaces them, and the
// optimizer then applies the gradient taken at the old weights:
// x_{t+1} = W x_t - lr g(x_t). With `hierarchical`, ranks of a host average
// exactly first and only the host leaders exchange with peers.
#pragma once

#include <optional>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "topology/host_layout.hpp"
#include "topology/peer_selection.hpp"

namespace bagua {

struct DecentralizedOptions {
  PeerMode mode = PeerMode::ShiftOne;
  std::uint64_t communication_interval = 1;
  bool hierarchical = false;
};

class Decentralized final : public WholeModelAlgorithm {
 public:
  // Throws, on every rank alike, when the mode cannot pair this world (or
  // its host leaders, when hierarchical).
  Decentralized(DecentralizedOptions options, int world_size, std::optional<HostLayout> hosts);

  std::string spec() const override;
  void init_operations(const BucketView& bucket, StepContext& ctx) override;
  void forward_pre_hook(StepContext& ctx) override;
  void post_backward_hook(StepContext& ctx) override;
  // shift_one's partner follows the step.
  bool depends_on_step() const override { return true; }

 private:
  // The averaged copy of one weight bucket into averaged_[b.index].
  void exchange(const BucketView& b, StepContext& ctx);

  DecentralizedOptions options_;
  std::vector<int> everyone_;
  std::optional<HostLayout> hosts_;
  // Per weight bucket: the averaged weights, and room for a peer's copy.
  std::vector<std::vector<std::uint8_t>> averaged_, scratch_;
  // A launched exchange whose result the post-backward hook applies.
  bool pending_ = false;
};

}  // namespace bagua
