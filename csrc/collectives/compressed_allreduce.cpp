#include "collectives/compressed_allreduce.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "codec/error_feedback.hpp"
#include "core/error.hpp"
#include "topology/ring.hpp"

namespace bagua {

std::size_t compressed_allreduce_owned_count(std::size_t count, int n, int position) {
  return partition(count, n).at(position).count;
}

void compressed_allreduce(Communicator& comm, const std::vector<int>& ranks, float* data, std::size_t count,
                          const Codec& codec, ReduceOp op, Tag tag, const ErrorFeedbackBuffers* feedback) {
  if (op != ReduceOp::Sum && op != ReduceOp::Avg) {
    throw InvalidArgument("compressed_allreduce supports sum and average only");
  }
  const int n = static_cast<int>(ranks.size());
  const auto me = std::find(ranks.begin(), ranks.end(), comm.rank());
  if (me == ranks.end()) {
    throw InvalidArgument(fmt::format("compressed_allreduce: rank {} is not in the group", comm.rank()));
  }
  if (n == 1 || count == 0) return;
  const int p = static_cast<int>(me - ranks.begin());
  if (feedback && (!feedback->worker || !feedback->server || feedback->worker->size() != count ||
                   feedback->server->size() != compressed_allreduce_owned_count(count, n, p))) {
    throw InvalidArgument("compressed_allreduce: error-feedback residuals are missing or of the wrong size");
  }
  const auto timeout = comm.timeout();
  const std::vector<Segment> chunks = partition(count, n);
  // Empty messages are skipped on both sides (sizes are known to both).
  auto send = [&](const std::vector<std::uint8_t>& w, int q) {
    return w.empty() ? nullptr : comm.isend(w.data(), w.size(), ranks[q], tag);
  };
  auto recv = [&](std::vector<std::uint8_t>& w, int q) {
    return w.empty() ? nullptr : comm.irecv(w.data(), w.size(), ranks[q], tag);
  };

  // Scatter: everyone's copy of my chunk comes to me.
  std::vector<std::vector<std::uint8_t>> outgoing(n), incoming(n);
  std::vector<RequestPtr> recvs(n), sends;
  for (int q = 0; q < n; ++q) {
    if (q == p) continue;
    incoming[q].resize(codec.wire_bytes(chunks[p].count));
    recvs[q] = recv(incoming[q], q);
  }
  for (int k = 1; k <= n; ++k) {
    const int q = (p + k) % n;  // my own chunk last: the others' are on their way first
    outgoing[q].resize(codec.wire_bytes(chunks[q].count));
    if (feedback) {
      encode_with_feedback(codec, data + chunks[q].offset, chunks[q].count,
                           feedback->worker->data() + chunks[q].offset, outgoing[q].data());
    } else {
      codec.encode(data + chunks[q].offset, chunks[q].count, DType::F32, outgoing[q].data());
    }
    if (q != p) sends.push_back(send(outgoing[q], q));
  }

  // Reduce, in rank order so that the sum is the same whoever computes it.
  std::vector<float> acc(chunks[p].count, 0.0f);
  for (int q = 0; q < n; ++q) {
    if (q != p && recvs[q]) recvs[q]->wait(timeout);
    const auto& w = q == p ? outgoing[p] : incoming[q];
    codec.decode(w.data(), w.size(), acc.size(), acc.data(), true);
  }
  if (op == ReduceOp::Avg) {
    const float div = static_cast<float>(n);
    for (float& x : acc) x /= div;
  }

  // Gather: my reduced chunk, compressed once, to everyone; theirs to me.
  std::vector<std::uint8_t> mine(codec.wire_bytes(acc.size()));
  if (feedback) {
    encode_with_feedback(codec, acc.data(), acc.size(), feedback->server->data(), mine.data());
  } else {
    codec.encode(acc.data(), acc.size(), DType::F32, mine.data());
  }
  std::vector<std::vector<std::uint8_t>> gathered(n);
  for (int q = 0; q < n; ++q) {
    if (q == p) continue;
    gathered[q].resize(codec.wire_bytes(chunks[q].count));
    recvs[q] = recv(gathered[q], q);
  }
  for (int q = 0; q < n; ++q) {
    if (q != p) sends.push_back(send(mine, q));
  }
  codec.decode(mine.data(), mine.size(), acc.size(), data + chunks[p].offset, false);
  for (int q = 0; q < n; ++q) {
    if (q == p) continue;
    if (recvs[q]) recvs[q]->wait(timeout);
    codec.decode(gathered[q].data(), gathered[q].size(), chunks[q].count, data + chunks[q].offset, false);
  }
  wait_all(sends, timeout);
}

}  // namespace bagua
