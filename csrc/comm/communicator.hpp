// The transport the collectives are written against: asynchronous
// point-to-point messages and a few collectives, on flat buffers.
//
// Implementations: C10dCommunicator (drives a torch backend such as Gloo or
// NCCL) and LoopbackCommunicator (ranks are threads of one process, for tests).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "comm/request.hpp"
#include "core/dtype.hpp"
#include "core/reduce_op.hpp"

namespace bagua {

using Tag = std::uint32_t;

class Communicator {
 public:
  explicit Communicator(std::chrono::milliseconds timeout) : timeout_(timeout) {}
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Messages between one pair of ranks with one tag are delivered in the
  // order they were sent; a recv must name the exact byte count it expects.
  virtual RequestPtr isend(const void* data, std::size_t bytes, int peer, Tag tag) = 0;
  virtual RequestPtr irecv(void* data, std::size_t bytes, int peer, Tag tag) = 0;

  // Collectives over every rank of the communicator, in place.
  virtual RequestPtr allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) = 0;
  // `in` holds bytes_per_rank bytes; `out` receives size() * bytes_per_rank.
  virtual RequestPtr allgather(const void* in, void* out, std::size_t bytes_per_rank) = 0;
  virtual RequestPtr broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual RequestPtr barrier() = 0;

  // The deadline for any single wait on this communicator.
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  std::chrono::milliseconds timeout_;
};

using CommunicatorPtr = std::shared_ptr<Communicator>;

}  // namespace bagua
