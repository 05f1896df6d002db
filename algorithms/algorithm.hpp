// The Algorithm contract (see DESIGN.md). The engine calls these hooks, in
// this order, each training step:
//   forward_pre_hook -> (backward) on_bucket_ready per bucket, on the
//   communication threads, launched in bucket order -> post_backward_hook ->
//   post_optimizer_step_hook.
// tensors_to_buckets and init_operations run when buckets are (re)built,
// which happens at start and whenever need_reset() says so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

// What the engine knows of a registered tensor.
struct TensorInfo {
  std::size_t numel = 0;
  DType dtype = DType::F32;
};

// A bucket as an algorithm sees it: one flat buffer of gradients.
struct BucketView {
  int index = 0;
  void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::F32;
};

struct BucketingOptions {
  std::size_t cap_bytes = 25u << 20;
  std::size_t first_cap_bytes = 1u << 20;
};

// Everything an algorithm may use while it runs an operation.
struct StepContext {
  Communicator& comm;
  std::uint64_t step;  // completed optimizer steps so far
  Tag tag;             // unique to this operation, equal on every rank
};

// Named byte blobs: an algorithm's state that must survive a checkpoint.
using AlgorithmState = std::map<std::string, std::vector<std::uint8_t>>;

class Algorithm {
 public:
  virtual ~Algorithm() = default;

  // Canonical "name:key=value,..." form; equal on all ranks of one job.
  virtual std::string spec() const = 0;

  // Groups tensors (given in registration order) into buckets: tensor
  // indices per bucket. nullopt (the default) lets the engine apply DDP's
  // rule (engine/bucket_plan.hpp).
  virtual std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(
      const std::vector<TensorInfo>& /*tensors*/, const BucketingOptions& /*options*/) {
    return std::nullopt;
  }
  virtual void init_operations(const BucketView& /*bucket*/) {}
  virtual void forward_pre_hook(std::uint64_t /*step*/) {}
  // Runs on a communication thread once every tensor of `bucket` is ready.
  // Different buckets may run at the same time on different threads; one
  // bucket's calls never overlap.
  virtual void on_bucket_ready(const BucketView& bucket, StepContext& ctx) = 0;
  virtual void post_backward_hook(std::uint64_t /*step*/) {}
  virtual void post_optimizer_step_hook(std::uint64_t /*step*/) {}
  virtual bool need_reset() { return false; }

  // Whether different buckets' operations may run at the same time. Safe
  // only when each operation's messages are told apart by ctx.tag alone;
  // collectives of an inner backend are matched by issue order instead, so
  // they must run one at a time.
  virtual bool buckets_may_overlap() const { return false; }

  virtual AlgorithmState state_dict() const { return {}; }
  virtual void load_state_dict(const AlgorithmState& /*state*/) {}
};

}  // namespace bagua
