#include "backend/c10d_communicator.hpp"

#include <fmt/format.h>

#include <functional>

#include "backend/scalar_type.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

// Keeps the wrapped tensors alive until the work is done, and turns c10d's
// exceptions into the project's, keeping their message.
class C10dRequest final : public Request {
 public:
  C10dRequest(c10::intrusive_ptr<c10d::Work> work, std::vector<at::Tensor> tensors, std::string what,
              std::function<void()> then = {})
      : work_(std::move(work)), tensors_(std::move(tensors)), what_(std::move(what)), then_(std::move(then)) {}

  void wait(std::chrono::milliseconds timeout) override {
    if (done_) return;
    try {
      work_->wait(timeout);
    } catch (const std::exception& e) {
      const std::string msg = e.what();
      if (msg.find("imed out") != std::string::npos || msg.find("imeout") != std::string::npos) {
        throw TimeoutError(fmt::format("{} timed out after {} ms: {}", what_, timeout.count(), msg));
      }
      throw Error(fmt::format("{} failed: {}", what_, msg));
    }
    done_ = true;
    if (then_) then_();
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::vector<at::Tensor> tensors_;
  std::string what_;
  std::function<void()> then_;
  bool done_ = false;
};

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return c10d::ReduceOp::SUM;
    case ReduceOp::Avg: return c10d::ReduceOp::AVG;
    case ReduceOp::Min: return c10d::ReduceOp::MIN;
    case ReduceOp::Max: return c10d::ReduceOp::MAX;
    case ReduceOp::Product: return c10d::ReduceOp::PRODUCT;
  }
  return c10d::ReduceOp::SUM;
}

}  // namespace

C10dCommunicator::C10dCommunicator(c10::intrusive_ptr<c10d::Backend> backend, c10::Device device,
                                   std::chrono::milliseconds timeout)
    : Communicator(timeout), backend_(std::move(backend)), device_(device) {
  if (!backend_) throw InvalidArgument("C10dCommunicator needs a backend");
}

at::Tensor C10dCommunicator::wrap(const void* data, std::size_t count, at::ScalarType type) const {
  return at::from_blob(const_cast<void*>(data), {static_cast<int64_t>(count)},
                       at::TensorOptions().dtype(type).device(device_));
}

RequestPtr C10dCommunicator::point_to_point(bool send, void* data, std::size_t bytes, int peer, Tag tag) {
  if (bytes == 0) return std::make_shared<CompletedRequest>();
  std::vector<at::Tensor> t{wrap(data, bytes, at::kByte)};
  auto work = send ? backend_->send(t, peer, static_cast<int>(tag)) : backend_->recv(t, peer, static_cast<int>(tag));
  return std::make_shared<C10dRequest>(std::move(work), std::move(t),
                                       fmt::format("rank {}: {} of {} bytes {} rank {} (tag {})", rank(),
                                                   send ? "send" : "recv", bytes, send ? "to" : "from", peer, tag));
}

RequestPtr C10dCommunicator::isend(const void* data, std::size_t bytes, int peer, Tag tag) {
  // The buffer is only read: c10d's send takes a non-const tensor, nothing more.
  return point_to_point(true, const_cast<void*>(data), bytes, peer, tag);
}

RequestPtr C10dCommunicator::irecv(void* data, std::size_t bytes, int peer, Tag tag) {
  return point_to_point(false, data, bytes, peer, tag);
}

RequestPtr C10dCommunicator::allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) {
  if (count == 0) return std::make_shared<CompletedRequest>();
  std::vector<at::Tensor> t{wrap(data, count, to_scalar_type(dtype))};
  c10d::AllreduceOptions opts;
  std::function<void()> then;
  // Gloo has no AVG: sum, then divide on the host once the sum has landed.
  if (op == ReduceOp::Avg && backend_->getBackendName() != "nccl") {
    opts.reduceOp = c10d::ReduceOp::SUM;
    if (!device_.is_cpu()) throw InvalidArgument("average over a non-NCCL backend needs CPU buffers");
    then = [data, count, dtype, n = size()] { finish_average(data, count, dtype, n); };
  } else {
    opts.reduceOp = to_c10d(op);
  }
  auto work = backend_->allreduce(t, opts);
  return std::make_shared<C10dRequest>(std::move(work), std::move(t),
                                       fmt::format("rank {}: inner allreduce of {} x {}", rank(), count, dtype_name(dtype)),
                                       std::move(then));
}

RequestPtr C10dCommunicator::allgather(const void* in, void* out, std::size_t bytes_per_rank) {
  at::Tensor src = wrap(in, bytes_per_rank, at::kByte);
  at::Tensor dst = wrap(out, bytes_per_rank * size(), at::kByte);
  auto work = backend_->_allgather_base(dst, src);
  return std::make_shared<C10dRequest>(std::move(work), std::vector<at::Tensor>{src, dst},
                                       fmt::format("rank {}: allgather of {} bytes", rank(), bytes_per_rank));
}

RequestPtr C10dCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  if (bytes == 0) return std::make_shared<CompletedRequest>();
  std::vector<at::Tensor> t{wrap(data, bytes, at::kByte)};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  auto work = backend_->broadcast(t, opts);
  return std::make_shared<C10dRequest>(std::move(work), std::move(t),
                                       fmt::format("rank {}: broadcast of {} bytes from rank {}", rank(), bytes, root));
}

RequestPtr C10dCommunicator::barrier() {
  auto work = backend_->barrier();
  return std::make_shared<C10dRequest>(std::move(work), std::vector<at::Tensor>{}, fmt::format("rank {}: barrier", rank()));
}

}  // namespace bagua
