#include "backend/process_group_bagua.hpp"

#include <fmt/format.h>

#include <numeric>

#include "backend/message_work.hpp"
#include "backend/scalar_type.hpp"
#include "collectives/agree.hpp"
#include "collectives/compressed_allreduce.hpp"
#include "collectives/link_probe.hpp"
#include "collectives/multi_ring_allreduce.hpp"
#include "comm/tags.hpp"
#include "core/cpu_affinity.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {
void check_user_tag(int tag) {
  if (tag < 0 || static_cast<Tag>(tag) >= tags::kUserLimit) {
    throw InvalidArgument(fmt::format(
        "bagua backend: send/recv tag {} is out of range; use a tag in [0, {}) (larger tags are reserved for "
        "bagua's own messages)",
        tag, tags::kUserLimit));
  }
}

std::optional<ReduceOp> to_bagua_op(const c10d::ReduceOp& op) {
  switch (op.op_) {
    case c10d::ReduceOp::SUM: return ReduceOp::Sum;
    case c10d::ReduceOp::AVG: return ReduceOp::Avg;
    case c10d::ReduceOp::MIN: return ReduceOp::Min;
    case c10d::ReduceOp::MAX: return ReduceOp::Max;
    case c10d::ReduceOp::PRODUCT: return ReduceOp::Product;
    default: return std::nullopt;  // bitwise ops, premul_sum: the inner backend decides
  }
}
}  // namespace

ProcessGroupBagua::ProcessGroupBagua(int rank, int size, c10::intrusive_ptr<c10d::Backend> cpu_inner,
                                     c10::intrusive_ptr<c10d::Backend> cuda_inner, BackendOptions options,
                                     std::shared_ptr<ShmTransport> shm)
    : c10d::Backend(rank, size),
      cpu_inner_(std::move(cpu_inner)),
      cuda_inner_(std::move(cuda_inner)),
      options_(options),
      shm_(std::move(shm)),
      thread_(std::make_unique<CommThread>()) {
  if (!cpu_inner_) throw InvalidArgument("ProcessGroupBagua needs an inner CPU backend (Gloo)");
  if (cpu_inner_->getRank() != rank || cpu_inner_->getSize() != size) {
    throw InvalidArgument(fmt::format("inner backend is rank {} of {}, expected rank {} of {}", cpu_inner_->getRank(),
                                      cpu_inner_->getSize(), rank, size));
  }
  cpu_comm_ = communicator(options_.timeout);
  if (options_.allreduce == BackendAllreduce::MultiRing) {
    // Collective, like the group's creation itself: every rank probes (or
    // checks that it was given the same rates) before the first all-reduce.
    std::vector<double> rates = options_.link_mbit;
    if (rates.empty() && size > 1) rates = probe_link_mbit(*cpu_comm_, tags::kSetup);
    check_same_link_mbit(*cpu_comm_, rates);
    MultiRingOptions multi = options_.multi_ring;
    if (multi.rings == 0) multi.rings = min_over_ranks(*cpu_comm_, auto_rings(available_cores(), options_.ranks_on_host));
    std::vector<int> ranks(size);
    std::iota(ranks.begin(), ranks.end(), 0);
    plan_ = std::make_shared<const MultiRingPlan>(MultiRingPlan::make(std::move(ranks), std::move(rates), multi));
  }
}

CommunicatorPtr ProcessGroupBagua::communicator(std::chrono::milliseconds timeout) const {
  return std::make_shared<HybridCommunicator>(
      std::make_shared<C10dCommunicator>(cpu_inner_, c10::Device(c10::kCPU), timeout), shm_);
}

ProcessGroupBagua::~ProcessGroupBagua() {
  // Stop our thread before the inner backends it uses go away.
  thread_.reset();
}

c10d::Backend& ProcessGroupBagua::route(const at::Tensor& t) const {
  if (t.device().is_cuda()) {
    if (!cuda_inner_) {
      throw InvalidArgument(
          "bagua backend got a CUDA tensor but has no CUDA inner backend: this build or process has no "
          "NCCL/CUDA; move the tensor to the CPU or install a CUDA build of torch and bagua_ravnest");
    }
    return *cuda_inner_;
  }
  if (!t.device().is_cpu()) {
    throw InvalidArgument(fmt::format("bagua backend supports cpu and cuda tensors, got {}", t.device().str()));
  }
  return *cpu_inner_;
}

c10d::Backend& ProcessGroupBagua::route(const std::vector<at::Tensor>& tensors) const {
  if (tensors.empty()) return *cpu_inner_;
  return route(tensors.front());
}

bool ProcessGroupBagua::ring_eligible(const std::vector<at::Tensor>& tensors,
                                      const c10d::AllreduceOptions& opts) const {
  if (options_.allreduce == BackendAllreduce::Inner || tensors.size() != 1) return false;
  const at::Tensor& t = tensors.front();
  return t.device().is_cpu() && t.layout() == at::kStrided && t.is_contiguous() &&
         to_dtype(t.scalar_type()).has_value() && to_bagua_op(opts.reduceOp).has_value() && getSize() > 1;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allreduce(std::vector<at::Tensor>& tensors,
                                                            const c10d::AllreduceOptions& opts) {
  if (!ring_eligible(tensors, opts)) return route(tensors).allreduce(tensors, opts);
  const at::Tensor t = tensors.front();
  const DType dtype = *to_dtype(t.scalar_type());
  const ReduceOp op = *to_bagua_op(opts.reduceOp);
  if (plan_) {
    return submit_allreduce(t, "bagua:multi_ring_allreduce",
                            [t, dtype, op, plan = plan_, ring_opts = options_.ring](Communicator& comm, Tag tag) {
                              multi_ring_allreduce(comm, *plan, t.data_ptr(), static_cast<std::size_t>(t.numel()),
                                                   dtype, op, tag, ring_opts);
                            });
  }
  return submit_allreduce(t, "bagua:ring_allreduce", [t, dtype, op, ring_opts = options_.ring](Communicator& comm, Tag tag) {
    ring_allreduce(comm, Ring::natural(comm.size()), t.data_ptr(), static_cast<std::size_t>(t.numel()), dtype, op, tag,
                   ring_opts);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::compressed_allreduce(at::Tensor& tensor, const std::string& codec) {
  if (!tensor.device().is_cpu() || tensor.scalar_type() != at::kFloat || !tensor.is_contiguous() ||
      tensor.layout() != at::kStrided) {
    throw InvalidArgument("compressed_allreduce takes a dense, contiguous float32 CPU tensor");
  }
  CodecPtr c = make_codec(codec);  // an unknown name fails here, on the caller's thread
  std::vector<int> ranks(getSize());
  std::iota(ranks.begin(), ranks.end(), 0);
  const at::Tensor t = tensor;
  return submit_allreduce(t, "bagua:compressed_allreduce", [t, c, ranks](Communicator& comm, Tag tag) {
    bagua::compressed_allreduce(comm, ranks, t.data_ptr<float>(), static_cast<std::size_t>(t.numel()), *c,
                                ReduceOp::Avg,
                         tag);
  });
}

c10::intrusive_ptr<RingWork> ProcessGroupBagua::submit_allreduce(const at::Tensor& t, const char* name,
                                                                 std::function<void(Communicator&, Tag)> run) {
  auto work = c10::make_intrusive<RingWork>(getRank(), std::vector<at::Tensor>{t}, name);
  // Sequence number and submission under one lock: all-reduces issued from
  // several threads still reach the backend thread in tag order.
  std::lock_guard lock(mu_);
  // Each operation owns kPerOperation tags (a multi-ring one uses a tag per ring).
  const Tag tag = tags::kBackendBase + (ring_seq_++ % (tags::kSpan / tags::kPerOperation)) * tags::kPerOperation;
  last_ring_work_ = work;
  thread_->submit(
      [comm = cpu_comm_, work, run = std::move(run), tag] {
        std::exception_ptr error;
        try {
          run(*comm, tag);
        } catch (...) {
          error = std::current_exception();
        }
        work->complete(error);
      },
      [work, rank = getRank()] {
        work->complete(std::make_exception_ptr(
            Error(fmt::format("rank {}: the bagua process group was destroyed before this all-reduce ran", rank))));
      });
  return work;
}

void ProcessGroupBagua::drain_ring_work() {
  c10::intrusive_ptr<RingWork> last;
  {
    std::lock_guard lock(mu_);
    last.swap(last_ring_work_);  // a failure is reported once, not by every later barrier
  }
  // The thread runs jobs in order, so the last one finishing means all have.
  if (last) last->wait(options_.timeout);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allreduce_sparse(std::vector<at::Tensor>& tensors,
                                                                   const c10d::AllreduceOptions& opts) {
  return route(tensors).allreduce_sparse(tensors, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                                      const c10d::AllreduceCoalescedOptions& opts) {
  return route(tensors).allreduce_coalesced(tensors, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::broadcast(std::vector<at::Tensor>& tensors,
                                                            const c10d::BroadcastOptions& opts) {
  return route(tensors).broadcast(tensors, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::reduce(std::vector<at::Tensor>& tensors,
                                                         const c10d::ReduceOptions& opts) {
  return route(tensors).reduce(tensors, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                                            std::vector<at::Tensor>& inputs,
                                                            const c10d::AllgatherOptions& opts) {
  return route(inputs).allgather(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::_allgather_base(at::Tensor& output, at::Tensor& input,
                                                                  const c10d::AllgatherOptions& opts) {
  return route(input)._allgather_base(output, input, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                                      std::vector<at::Tensor>& inputs,
                                                                      const c10d::AllgatherOptions& opts) {
  return route(inputs).allgather_coalesced(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::allgather_into_tensor_coalesced(std::vector<at::Tensor>& outputs,
                                                                                  std::vector<at::Tensor>& inputs,
                                                                                  const c10d::AllgatherOptions& opts) {
  return route(inputs).allgather_into_tensor_coalesced(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                         std::vector<at::Tensor>& inputs,
                                                         const c10d::GatherOptions& opts) {
  return route(inputs).gather(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::scatter(std::vector<at::Tensor>& outputs,
                                                          std::vector<std::vector<at::Tensor>>& inputs,
                                                          const c10d::ScatterOptions& opts) {
  return route(outputs).scatter(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::reduce_scatter(std::vector<at::Tensor>& outputs,
                                                                 std::vector<std::vector<at::Tensor>>& inputs,
                                                                 const c10d::ReduceScatterOptions& opts) {
  return route(outputs).reduce_scatter(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::_reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                                       const c10d::ReduceScatterOptions& opts) {
  return route(input)._reduce_scatter_base(output, input, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs, const c10d::ReduceScatterOptions& opts) {
  return route(inputs).reduce_scatter_tensor_coalesced(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::alltoall_base(at::Tensor& output, at::Tensor& input,
                                                                std::vector<int64_t>& output_split_sizes,
                                                                std::vector<int64_t>& input_split_sizes,
                                                                const c10d::AllToAllOptions& opts) {
  return route(input).alltoall_base(output, input, output_split_sizes, input_split_sizes, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::alltoall(std::vector<at::Tensor>& outputs,
                                                           std::vector<at::Tensor>& inputs,
                                                           const c10d::AllToAllOptions& opts) {
  return route(inputs).alltoall(outputs, inputs, opts);
}

bool ProcessGroupBagua::through_shared_memory(const std::vector<at::Tensor>& tensors, int peer) const {
  return shm_ && shm_->has_peer(peer) && tensors.size() == 1 && tensors.front().device().is_cpu() &&
         tensors.front().layout() == at::kStrided;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::send(std::vector<at::Tensor>& tensors, int dst_rank, int tag) {
  check_user_tag(tag);
  if (!through_shared_memory(tensors, dst_rank)) return route(tensors).send(tensors, dst_rank, tag);
  const at::Tensor& t = tensors.front();
  at::Tensor staging = t.is_contiguous() ? t : t.contiguous();
  // The transport keeps the tensor until it is sent: torch code may drop the Work.
  RequestPtr request = staging.nbytes() == 0 ? std::make_shared<CompletedRequest>()
                                             : shm_->isend(staging.data_ptr(), staging.nbytes(), dst_rank,
                                                           static_cast<Tag>(tag), std::make_shared<at::Tensor>(staging));
  return c10::make_intrusive<MessageWork>(getRank(), c10d::OpType::SEND, "bagua:send", std::move(request), t,
                                          std::move(staging), options_.timeout);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::recv(std::vector<at::Tensor>& tensors, int src_rank, int tag) {
  check_user_tag(tag);
  if (!through_shared_memory(tensors, src_rank)) return route(tensors).recv(tensors, src_rank, tag);
  const at::Tensor& t = tensors.front();
  at::Tensor staging = t.is_contiguous() ? t : at::empty_like(t, at::MemoryFormat::Contiguous);
  // Empty messages are never sent (as the engine's transports do), so both
  // ends agree; the transport keeps the target until the message is in.
  RequestPtr request = staging.nbytes() == 0 ? std::make_shared<CompletedRequest>()
                                             : shm_->irecv(staging.data_ptr(), staging.nbytes(), src_rank,
                                                           static_cast<Tag>(tag), std::make_shared<at::Tensor>(staging));
  return c10::make_intrusive<MessageWork>(getRank(), c10d::OpType::RECV, "bagua:recv", std::move(request), t,
                                          std::move(staging), options_.timeout);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  check_user_tag(tag);
  if (shm_ && !shm_->peers().empty()) {
    throw InvalidArgument(
        "bagua backend: recv without a source cannot see what ranks of this host send, which goes through shared "
        "memory; name the source (src=), or turn shared memory off with BAGUA_SHM=0");
  }
  return route(tensors).recvAnysource(tensors, tag);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBagua::barrier(const c10d::BarrierOptions& opts) {
  // A barrier orders everything issued before it, our ring work included.
  drain_ring_work();
  return cpu_inner_->barrier(opts);
}

void ProcessGroupBagua::setSequenceNumberForGroup() { cpu_inner_->setSequenceNumberForGroup(); }

uint64_t ProcessGroupBagua::getSequenceNumberForGroup() { return cpu_inner_->getSequenceNumberForGroup(); }

void ProcessGroupBagua::setTimeout(std::chrono::milliseconds timeout) {
  cpu_inner_->setTimeout(timeout);
  if (cuda_inner_) cuda_inner_->setTimeout(timeout);
}

}  // namespace bagua
