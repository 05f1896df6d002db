// A Communicator that sends to ranks of the same host through shared memory
// and to everyone else (and for collectives) through a network communicator.
#pragma once

#include "comm/communicator.hpp"
#include "comm/shm_transport.hpp"

namespace bagua {

class HybridCommunicator final : public Communicator {
 public:
  // `shm` may be null (no same-host peers, or shared memory turned off).
  HybridCommunicator(CommunicatorPtr network, std::shared_ptr<ShmTransport> shm);

  int rank() const override { return network_->rank(); }
  int size() const override { return network_->size(); }

  RequestPtr isend(const void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr irecv(void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) override {
    return network_->allreduce(data, count, dtype, op);
  }
  RequestPtr allgather(const void* in, void* out, std::size_t bytes_per_rank) override {
    return network_->allgather(in, out, bytes_per_rank);
  }
  RequestPtr broadcast(void* data, std::size_t bytes, int root) override {
    return network_->broadcast(data, bytes, root);
  }
  RequestPtr barrier() override { return network_->barrier(); }

  bool shared_memory_to(int peer) const { return shm_ && shm_->has_peer(peer); }

 private:
  CommunicatorPtr network_;
  std::shared_ptr<ShmTransport> shm_;
};

}  // namespace bagua
