// A Communicator over a torch c10d backend (Gloo for CPU buffers, NCCL for
// CUDA buffers): raw buffers are wrapped as byte tensors without copying.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "comm/communicator.hpp"

namespace bagua {

class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Backend> backend, c10::Device device, std::chrono::milliseconds timeout);

  int rank() const override { return backend_->getRank(); }
  int size() const override { return backend_->getSize(); }

  RequestPtr isend(const void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr irecv(void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) override;
  RequestPtr allgather(const void* in, void* out, std::size_t bytes_per_rank) override;
  RequestPtr broadcast(void* data, std::size_t bytes, int root) override;
  RequestPtr barrier() override;


 private:
  at::Tensor wrap(const void* data, std::size_t count, at::ScalarType type) const;
  RequestPtr point_to_point(bool send, void* data, std::size_t bytes, int peer, Tag tag);

  c10::intrusive_ptr<c10d::Backend> backend_;
  c10::Device device_;
};

}  // namespace bagua
