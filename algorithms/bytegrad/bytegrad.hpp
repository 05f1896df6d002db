// bytegrad: gradients averaged with a compressed all-reduce (8-bit
// minmax_uint8 per chunk, about 1/4 of fp32 on the wire); and its plain
// presets fp16_allreduce and bf16_allreduce (the same exchange with 16-bit
// floats on the wire). With `hierarchical`, gradients are summed exactly
// inside each host and only the host leaders' exchange is compressed.
#pragma once

#include <optional>

#include "algorithms/algorithm.hpp"
#include "algorithms/registry.hpp"
#include "codec/codec.hpp"
#include "topology/host_layout.hpp"

namespace bagua {

class Bytegrad final : public Algorithm {
 public:
  // `spec`: the canonical spec it reports (equal on every rank).
  Bytegrad(std::string spec, CodecPtr codec, int world_size, std::optional<HostLayout> hosts);

  std::string spec() const override;
  void init_operations(const BucketView& bucket, StepContext& ctx) override;
  void on_bucket_ready(const BucketView& bucket, StepContext& ctx) override;
  bool buckets_may_overlap() const override { return true; }

 private:
  std::string spec_;
  CodecPtr codec_;
  std::vector<int> everyone_;
  std::optional<HostLayout> hosts_;  // set when hierarchical
};

// A compressed gradient all-reduce with `codec`, hierarchical or not; its
// spec is `spec_head` followed by the hierarchical flag (the registered
// presets and composed specs such as codec=minmax_uint8,exchange=allreduce).
std::unique_ptr<Algorithm> make_bytegrad(const std::string& spec_head, const std::string& codec, bool hierarchical,
                                         const WorldInfo& world);

}  // namespace bagua
