// gradient_allreduce: the DDP baseline. Each ready gradient bucket is
// averaged over all ranks while backward continues.
#pragma once

#include <optional>

#include "algorithms/algorithm.hpp"
#include "collectives/ring_allreduce.hpp"
#include "topology/host_layout.hpp"

namespace bagua {

enum class AllreduceImpl { Ring, Inner };

struct GradientAllreduceOptions {
  AllreduceImpl allreduce = AllreduceImpl::Ring;
  bool hierarchical = false;
  RingOptions ring;
};

class GradientAllreduce final : public Algorithm {
 public:
  GradientAllreduce(GradientAllreduceOptions options, int world_size, std::optional<HostLayout> hosts);

  std::string spec() const override;
  void on_bucket_ready(const BucketView& bucket, StepContext& ctx) override;
  bool buckets_may_overlap() const override {
    return options_.hierarchical || options_.allreduce == AllreduceImpl::Ring;
  }

 private:
  GradientAllreduceOptions options_;
  Ring ring_;
  std::optional<HostLayout> hosts_;  // set when hierarchical
};

}  // namespace bagua
