// ProcessGroupBagua: the "bagua" torch.distributed backend.
//
// All-reduce of dense CPU tensors runs our pipelined ring (or our
// multi-ring, or when asked the inner backend's); send/recv of CPU tensors
// between ranks of one host go through shared memory; every other
// collective is handed to the inner backend of the tensors' device (Gloo
// for CPU, NCCL for CUDA), so any torch code, stock DDP included, runs on
// it unchanged.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <memory>
#include <mutex>
#include <optional>

#include "backend/ring_work.hpp"
#include "collectives/ring_allreduce.hpp"
#include "topology/multi_ring_plan.hpp"
#include "backend/c10d_communicator.hpp"
#include "comm/hybrid_communicator.hpp"
#include "comm/comm_thread.hpp"

namespace bagua {

enum class BackendAllreduce {
  Ring,       // our pipelined ring
  MultiRing,  // several rings at once, shares sized from link rates
  Inner,      // the inner backend's own
};

struct BackendOptions {
  BackendAllreduce allreduce = BackendAllreduce::Ring;
  RingOptions ring;
  MultiRingOptions multi_ring;
  // Each rank's link rate (Mbit/s) for the multi-ring plan; empty: measured
  // by a probe when the group is made.
  std::vector<double> link_mbit;
  // multi_ring.rings == 0 asks for auto_rings(); this rank's share of its
  // host's cores decides it (the smallest over ranks wins).
  int ranks_on_host = 1;
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
};

class ProcessGroupBagua final : public c10d::Backend {
 public:
  // `cuda_inner` may be null (CPU-only build or no GPU); `shm` too (no
  // same-host peers, or shared memory turned off). Point-to-point messages
  // to ranks that `shm` reaches go through shared memory, others through
  // the inner CPU backend.
  ProcessGroupBagua(int rank, int size, c10::intrusive_ptr<c10d::Backend> cpu_inner,
                    c10::intrusive_ptr<c10d::Backend> cuda_inner, BackendOptions options,
                    std::shared_ptr<ShmTransport> shm = nullptr);
  ~ProcessGroupBagua() override;

  const std::string getBackendName() const override { return "bagua"; }
  const BackendOptions& options() const { return options_; }
  // The multi-ring plan when the all-reduce is multi_ring (made, with a
  // probe when no rates were given, while the group is set up).
  // Null otherwise.
  const MultiRingPlan* multi_ring_plan() const { return plan_.get(); }
  // A communicator over this group's transports (shared memory and the inner
  // CPU backend) whose waits use `timeout`: what a DDP engine talks through.
  CommunicatorPtr communicator(std::chrono::milliseconds timeout) const;
  std::vector<int> shared_memory_peers() const { return shm_ ? shm_->peers() : std::vector<int>{}; }
  // Tags the shared-memory transport tracks (ShmTransport::tracked_tags).
  std::size_t shared_memory_tracked_tags() const { return shm_ ? shm_->tracked_tags() : 0; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts = c10d::AllreduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce_sparse(std::vector<at::Tensor>& tensors,
                                                  const c10d::AllreduceOptions& opts = c10d::AllreduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors,
      const c10d::AllreduceCoalescedOptions& opts = c10d::AllreduceCoalescedOptions()) override;
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts = c10d::BroadcastOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts = c10d::ReduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(
      std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts = c10d::GatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts = c10d::ScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(
      std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output, at::Tensor& input,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& output_split_sizes,
                                               std::vector<int64_t>& input_split_sizes,
                                               const c10d::AllToAllOptions& opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts = c10d::AllToAllOptions()) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dst_rank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int src_rank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts = c10d::BarrierOptions()) override;

  // Average of a dense fp32 CPU tensor over the group with a compressed
  // all-reduce (collectives/compressed_allreduce.hpp) through `codec`
  // (codec/codec.hpp names), on the backend's thread in issue order like
  // the ring. Not part of torch.distributed's API: benchmarks and tools call
  // it on the backend object.
  c10::intrusive_ptr<c10d::Work> compressed_allreduce(at::Tensor& tensor, const std::string& codec);

  void setSequenceNumberForGroup() override;
  uint64_t getSequenceNumberForGroup() override;
  void setTimeout(std::chrono::milliseconds timeout) override;

 private:
  // The inner backend for these tensors' device; a clear error when absent.
  c10d::Backend& route(const std::vector<at::Tensor>& tensors) const;
  c10d::Backend& route(const at::Tensor& tensor) const;
  bool ring_eligible(const std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts) const;
  // A user's send/recv of one CPU tensor to a rank of this host goes through
  // shared memory; everything else through the inner backend.
  bool through_shared_memory(const std::vector<at::Tensor>& tensors, int peer) const;
  // Queues `run` (which gets the tensor's data, the communicator and a tag)
  // on the backend thread; returns its Work.
  c10::intrusive_ptr<RingWork> submit_allreduce(const at::Tensor& t, const char* name,
                                                std::function<void(Communicator&, Tag)> run);
  // Waits (bounded) until the ring all-reduces issued so far have finished.
  void drain_ring_work();

  c10::intrusive_ptr<c10d::Backend> cpu_inner_;
  c10::intrusive_ptr<c10d::Backend> cuda_inner_;
  BackendOptions options_;
  std::shared_ptr<ShmTransport> shm_;
  CommunicatorPtr cpu_comm_;
  std::shared_ptr<const MultiRingPlan> plan_;  // shared with the jobs that run it
  std::uint32_t ring_seq_ = 0;
  std::mutex mu_;
  c10::intrusive_ptr<RingWork> last_ring_work_;
  std::unique_ptr<CommThread> thread_;  // last: stops before the rest is destroyed
};

}  // namespace bagua
