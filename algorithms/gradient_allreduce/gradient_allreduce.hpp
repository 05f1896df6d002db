// gradient_allreduce: the DDP baseline. Each ready gradient bucket is
// averaged over all ranks while backward continues.
#pragma once

#include <optional>

#include "algorithms/algorithm.hpp"
#include "collectives/ring_allreduce.hpp"
#include "topology/host_layout.hpp"
#include "topology/multi_ring_plan.hpp"

namespace bagua {

enum class AllreduceImpl { Ring, MultiRing, Inner };

struct GradientAllreduceOptions {
  AllreduceImpl allreduce = AllreduceImpl::Ring;
  bool hierarchical = false;
  RingOptions ring;
  MultiRingOptions multi_ring;
};

class GradientAllreduce final : public Algorithm {
 public:
  // `link_mbit`: each rank's link rate for allreduce=multi_ring (empty:
  // equal chunks); `rings_when_auto`: the rings it runs when options ask
  // for auto (multi_ring.rings == 0), agreed among ranks.
  GradientAllreduce(GradientAllreduceOptions options, int world_size, std::optional<HostLayout> hosts,
                    std::vector<double> link_mbit = {}, int rings_when_auto = 1);

  std::string spec() const override;
  std::string plan_description() const override { return plan_ ? plan_->describe() : std::string(); }
  void on_bucket_ready(const BucketView& bucket, StepContext& ctx) override;
  bool buckets_may_overlap() const override {
    return options_.hierarchical || options_.allreduce != AllreduceImpl::Inner;
  }

 private:
  GradientAllreduceOptions options_;
  Ring ring_;
  std::optional<HostLayout> hosts_;  // set when hierarchical
  std::optional<MultiRingPlan> plan_;  // set when multi_ring
};

}  // namespace bagua
