#include "comm/loopback_communicator.hpp"

#include <fmt/format.h>

#include <cstring>

#include "core/error.hpp"

namespace bagua {

std::shared_ptr<LoopbackWorld> LoopbackWorld::create(int size) {
  if (size < 1) throw InvalidArgument(fmt::format("LoopbackWorld: size must be >= 1, got {}", size));
  return std::shared_ptr<LoopbackWorld>(new LoopbackWorld(size));
}

CommunicatorPtr LoopbackWorld::communicator(int rank, std::chrono::milliseconds timeout) {
  return std::make_shared<LoopbackCommunicator>(shared_from_this(), rank, timeout);
}

void LoopbackWorld::kill(int rank) {
  std::lock_guard lock(mu_);
  dead_.insert(rank);
}

void LoopbackWorld::post(int src, int dst, Tag tag, const void* data, std::size_t bytes) {
  std::lock_guard lock(mu_);
  if (dead_.count(src)) return;
  const auto* p = static_cast<const std::uint8_t*>(data);
  mailboxes_[{src, dst, tag}].emplace_back(p, p + bytes);
  cv_.notify_all();
}

void LoopbackWorld::take(int src, int dst, Tag tag, void* out, std::size_t bytes,
                         std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto& box = mailboxes_[{src, dst, tag}];
  if (!cv_.wait_for(lock, timeout, [&] { return !box.empty(); })) {
    throw TimeoutError(fmt::format("rank {}: recv of {} bytes from rank {} (tag {}) timed out after {} ms", dst,
                                   bytes, src, tag, timeout.count()));
  }
  std::vector<std::uint8_t> msg = std::move(box.front());
  box.pop_front();
  if (msg.size() != bytes) {
    throw ProtocolError(fmt::format("rank {}: expected {} bytes from rank {} (tag {}), got {}", dst, bytes, src,
                                    tag, msg.size()));
  }
  if (bytes) std::memcpy(out, msg.data(), bytes);
}

std::vector<std::vector<std::uint8_t>> LoopbackWorld::gather_all(int rank, std::uint64_t seq, const void* data,
                                                                 std::size_t bytes,
                                                                 std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  Round& round = rounds_[seq];
  if (round.parts.empty()) round.parts.resize(size_);
  const auto* p = static_cast<const std::uint8_t*>(data);
  if (!dead_.count(rank)) {
    round.parts[rank].assign(p, p + bytes);
    ++round.contributed;
  }
  cv_.notify_all();
  if (!cv_.wait_for(lock, timeout, [&] { return round.contributed == size_; })) {
    throw TimeoutError(fmt::format("rank {}: collective #{} timed out after {} ms: {} of {} ranks arrived", rank,
                                   seq, timeout.count(), round.contributed, size_));
  }
  auto parts = round.parts;
  if (++round.collected == size_) rounds_.erase(seq);
  return parts;
}

LoopbackCommunicator::LoopbackCommunicator(std::shared_ptr<LoopbackWorld> world, int rank,
                                           std::chrono::milliseconds timeout)
    : Communicator(timeout), world_(std::move(world)), rank_(rank) {
  if (rank < 0 || rank >= world_->size()) {
    throw InvalidArgument(fmt::format("LoopbackCommunicator: rank {} outside [0, {})", rank, world_->size()));
  }
}

void LoopbackCommunicator::check_peer(int peer) const {
  if (peer < 0 || peer >= size() || peer == rank_) {
    throw InvalidArgument(fmt::format("rank {}: invalid peer {} (world size {})", rank_, peer, size()));
  }
}

RequestPtr LoopbackCommunicator::isend(const void* data, std::size_t bytes, int peer, Tag tag) {
  check_peer(peer);
  world_->post(rank_, peer, tag, data, bytes);  // buffered: the caller may reuse `data` at once
  return std::make_shared<CompletedRequest>();
}

namespace {
class LoopbackRecv final : public Request {
 public:
  LoopbackRecv(std::shared_ptr<LoopbackWorld> world, int src, int dst, Tag tag, void* out, std::size_t bytes)
      : world_(std::move(world)), src_(src), dst_(dst), tag_(tag), out_(out), bytes_(bytes) {}
  void wait(std::chrono::milliseconds timeout) override {
    if (done_) return;
    world_->take(src_, dst_, tag_, out_, bytes_, timeout);
    done_ = true;
  }

 private:
  std::shared_ptr<LoopbackWorld> world_;
  int src_, dst_;
  Tag tag_;
  void* out_;
  std::size_t bytes_;
  bool done_ = false;
};
}  // namespace

RequestPtr LoopbackCommunicator::irecv(void* data, std::size_t bytes, int peer, Tag tag) {
  check_peer(peer);
  return std::make_shared<LoopbackRecv>(world_, peer, rank_, tag, data, bytes);
}

RequestPtr LoopbackCommunicator::allreduce(void* data, std::size_t count, DType dtype, ReduceOp op) {
  const std::size_t bytes = count * dtype_size(dtype);
  auto parts = world_->gather_all(rank_, collective_seq_++, data, bytes, timeout());
  for (const auto& part : parts) {
    if (part.size() != bytes) throw ProtocolError(fmt::format("rank {}: allreduce size mismatch", rank_));
  }
  if (bytes == 0) return std::make_shared<CompletedRequest>();
  std::memcpy(data, parts[0].data(), bytes);
  for (int r = 1; r < size(); ++r) reduce_into(data, parts[r].data(), count, dtype, op);
  if (op == ReduceOp::Avg) finish_average(data, count, dtype, size());
  return std::make_shared<CompletedRequest>();
}

RequestPtr LoopbackCommunicator::allgather(const void* in, void* out, std::size_t bytes_per_rank) {
  auto parts = world_->gather_all(rank_, collective_seq_++, in, bytes_per_rank, timeout());
  auto* o = static_cast<std::uint8_t*>(out);
  for (int r = 0; r < size(); ++r) {
    if (parts[r].size() != bytes_per_rank) throw ProtocolError(fmt::format("rank {}: allgather size mismatch", rank_));
    if (bytes_per_rank) std::memcpy(o + r * bytes_per_rank, parts[r].data(), bytes_per_rank);
  }
  return std::make_shared<CompletedRequest>();
}

RequestPtr LoopbackCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  if (root < 0 || root >= size()) throw InvalidArgument(fmt::format("broadcast: invalid root {}", root));
  auto parts = world_->gather_all(rank_, collective_seq_++, data, bytes, timeout());
  if (parts[root].size() != bytes) throw ProtocolError(fmt::format("rank {}: broadcast size mismatch", rank_));
  if (bytes) std::memcpy(data, parts[root].data(), bytes);
  return std::make_shared<CompletedRequest>();
}

RequestPtr LoopbackCommunicator::barrier() {
  world_->gather_all(rank_, collective_seq_++, nullptr, 0, timeout());
  return std::make_shared<CompletedRequest>();
}

}  // namespace bagua
