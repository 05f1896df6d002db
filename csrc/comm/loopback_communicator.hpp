// n ranks as threads of one process, exchanging messages through shared
// mailboxes. Used by the GoogleTest suites to run collectives without
// processes or sockets. Its collectives are deliberately naive (gather every
// contribution, combine in rank order) so they double as a reference.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "comm/communicator.hpp"

namespace bagua {

class LoopbackWorld : public std::enable_shared_from_this<LoopbackWorld> {
 public:
  static std::shared_ptr<LoopbackWorld> create(int size);

  int size() const { return size_; }
  CommunicatorPtr communicator(int rank, std::chrono::milliseconds timeout);

  // Simulates a dead peer: from now on nothing `rank` sends is delivered.
  void kill(int rank);

  // --- used by LoopbackCommunicator ---
  void post(int src, int dst, Tag tag, const void* data, std::size_t bytes);
  // Waits for the next message src->dst with `tag` and copies it into `out`.
  void take(int src, int dst, Tag tag, void* out, std::size_t bytes, std::chrono::milliseconds timeout);
  // Rendezvous for collective number `seq`: every rank contributes bytes and
  // gets back all contributions in rank order.
  std::vector<std::vector<std::uint8_t>> gather_all(int rank, std::uint64_t seq, const void* data,
                                                    std::size_t bytes, std::chrono::milliseconds timeout);

 private:
  explicit LoopbackWorld(int size) : size_(size) {}

  struct Round {
    std::vector<std::vector<std::uint8_t>> parts;
    int contributed = 0;
    int collected = 0;
  };

  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::tuple<int, int, Tag>, std::deque<std::vector<std::uint8_t>>> mailboxes_;
  std::map<std::uint64_t, Round> rounds_;
  std::set<int> dead_;
};

class LoopbackCommunicator final : public Communicator {
 public:
  LoopbackCommunicator(std::shared_ptr<LoopbackWorld> world, int rank, std::chrono::milliseconds timeout);

  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }

  RequestPtr isend(const void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr irecv(void* data, std::size_t bytes, int peer, Tag tag) override;
  RequestPtr allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) override;
  RequestPtr allgather(const void* in, void* out, std::size_t bytes_per_rank) override;
  RequestPtr broadcast(void* data, std::size_t bytes, int root) override;
  RequestPtr barrier() override;

 private:
  void check_peer(int peer) const;

  std::shared_ptr<LoopbackWorld> world_;
  int rank_;
  std::uint64_t collective_seq_ = 0;
};

}  // namespace bagua
