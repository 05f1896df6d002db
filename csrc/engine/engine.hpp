// The bucket engine: knows which tensors form which flat bucket, counts
// ready tensors as autograd produces them, and hands each complete bucket to
// the algorithm on the communication thread, in bucket order on every rank.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "comm/communicator.hpp"
#include "engine/comm_thread.hpp"
#include "engine/watchdog.hpp"

namespace bagua {

struct BucketSpec {
  void* data = nullptr;  // flat buffer
  std::size_t count = 0;
  DType dtype = DType::F32;
  std::vector<std::size_t> tensors;  // indices of the tensors laid out in it
  // Keeps `data` alive while an operation on it runs: a job stuck past the
  // engine's destruction still writes into valid memory. May be null when
  // the caller guarantees the lifetime (tests).
  std::shared_ptr<void> owner;
};

class Engine {
 public:
  // `lanes` communication threads; bucket b always runs on lane b % lanes,
  // so each lane sees the same sequence of operations on every rank, while
  // latency-bound operations of different buckets overlap. Algorithms whose
  // buckets must not overlap (Algorithm::buckets_may_overlap) use lane 0.
  // The engine should own its transport (see bagua_ravnest/backend.py's
  // private_backend): operations of two engines on one transport could be
  // issued in different orders on different ranks.
  Engine(CommunicatorPtr comm, std::shared_ptr<Algorithm> algorithm, std::chrono::milliseconds timeout,
         int lanes = 2);

  void set_buckets(std::vector<BucketSpec> buckets, std::size_t num_tensors);

  // From autograd: tensor `index` has its gradient. Launches every bucket
  // that is complete and whose predecessors have all been launched.
  void mark_ready(std::size_t index);
  // Tensors not marked ready in the current iteration: the caller names
  // them when backward ended without their gradients.
  std::vector<std::size_t> unready_tensors() const;

  // End of backward: waits for all launched operations (bounded by the
  // timeout), then resets the per-iteration state.
  void wait_all();

  void forward_pre_hook();
  void post_optimizer_step_hook();
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t step) { step_ = step; }

  Algorithm& algorithm() { return *algorithm_; }

 private:
  void launch(std::size_t bucket);  // with mu_ held

  CommunicatorPtr comm_;
  std::shared_ptr<Algorithm> algorithm_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<Watchdog> watchdog_;

  mutable std::mutex mu_;
  std::vector<BucketSpec> buckets_;
  std::vector<int> bucket_of_;     // tensor -> bucket
  std::vector<bool> ready_;        // tensor -> marked this iteration
  std::vector<std::size_t> pending_;  // bucket -> tensors not yet ready
  std::size_t next_launch_ = 0;
  std::uint32_t op_seq_ = 0;
  std::uint64_t step_ = 0;

  // Last member: destroyed first, so no job outlives the state it uses.
  std::vector<std::unique_ptr<CommThread>> lanes_;
};

}  // namespace bagua
