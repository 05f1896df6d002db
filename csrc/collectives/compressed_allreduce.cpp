#include "collectives/compressed_allreduce.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "codec/error_feedback.hpp"
#include "collectives/scratch.hpp"
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
  auto wire_of = [&](int q) { return codec.wire_bytes(chunks[q].count); };

  // Reused per-thread memory (no allocation per call): every chunk's wire
  // form (the sends of the scatter, later the receives of the gather), n
  // copies of my chunk's wire form (the receives of the scatter; the last
  // slot holds my own copy), the fp32 sum of my chunk, its wire form.
  auto align = [](std::size_t b) { return (b + 63) & ~std::size_t{63}; };
  std::vector<std::size_t> offset(n + 1, 0);
  for (int q = 0; q < n; ++q) offset[q + 1] = offset[q] + align(wire_of(q));
  const std::size_t mine_wire = wire_of(p), slot = align(mine_wire);
  std::uint8_t* const wires = thread_scratch(offset[n] + n * slot + align(chunks[p].count * sizeof(float)) + slot);
  std::uint8_t* const copies = wires + offset[n];
  float* const acc = reinterpret_cast<float*>(copies + n * slot);
  std::uint8_t* const mine = copies + n * slot + align(chunks[p].count * sizeof(float));
  auto copy_of = [&](int q) { return q == p ? copies + (n - 1) * slot : copies + ((p - q + n) % n - 1) * slot; };

  auto encode = [&](const float* x, std::size_t k, float* residual, std::uint8_t* wire) {
    if (residual) {
      encode_with_feedback(codec, x, k, residual, wire);
    } else {
      codec.encode(x, k, DType::F32, wire);
    }
  };
  auto exchange = [&](const std::uint8_t* out, std::size_t out_bytes, int to, std::uint8_t* in, std::size_t in_bytes,
                      int from) {
    // Empty messages are skipped on both sides (sizes are known to both).
    std::vector<RequestPtr> ops;
    if (in_bytes) ops.push_back(comm.irecv(in, in_bytes, ranks[from], tag));
    if (out_bytes) ops.push_back(comm.isend(out, out_bytes, ranks[to], tag));
    return ops;
  };

  // Scatter, in n-1 rounds: in round k I send rank p+k its chunk and get
  // my chunk from rank p-k. Each link carries one message per round, all of
  // the same size, so they finish together (all n-1 at once would share
  // every link between TCP flows, and the slowest flow sets the pace).
  // The next round's chunk is encoded while a round is on the wire, and
  // copies are summed as soon as the rank order allows (the order of an
  // fp32 sum changes its result; rank order makes it the same on any rank).
  float* worker = feedback ? feedback->worker->data() : nullptr;
  auto encode_chunk = [&](int q) {
    encode(data + chunks[q].offset, chunks[q].count, worker ? worker + chunks[q].offset : nullptr,
           q == p ? copy_of(p) : wires + offset[q]);
  };
  std::fill(acc, acc + chunks[p].count, 0.0f);
  std::vector<bool> have(n, false);
  int summed = 0;
  auto sum_ready = [&] {
    for (; summed < n && have[summed]; ++summed) {
      codec.decode(copy_of(summed), mine_wire, chunks[p].count, acc, true);
    }
  };
  encode_chunk((p + 1) % n);
  for (int k = 1; k < n; ++k) {
    const int to = (p + k) % n, from = (p - k + n) % n;
    auto ops = exchange(wires + offset[to], wire_of(to), to, copy_of(from), mine_wire, from);
    encode_chunk(k + 1 < n ? (p + k + 1) % n : p);
    if (k == n - 1) have[p] = true;
    wait_all(ops, timeout);
    have[from] = true;
    sum_ready();
  }
  if (op == ReduceOp::Avg) {
    const float div = static_cast<float>(n);
    for (std::size_t i = 0; i < chunks[p].count; ++i) acc[i] /= div;
  }

  // Gather, in n-1 rounds of the same shape: my reduced chunk, compressed
  // once, to everyone; theirs to me, decoded while the next round runs.
  encode(acc, chunks[p].count, feedback ? feedback->server->data() : nullptr, mine);
  codec.decode(mine, mine_wire, chunks[p].count, data + chunks[p].offset, false);
  int pending = -1;
  for (int k = 1; k < n; ++k) {
    const int to = (p + k) % n, from = (p - k + n) % n;
    auto ops = exchange(mine, mine_wire, to, wires + offset[from], wire_of(from), from);
    if (pending >= 0) {
      codec.decode(wires + offset[pending], wire_of(pending), chunks[pending].count, data + chunks[pending].offset,
                   false);
    }
    wait_all(ops, timeout);
    pending = from;
  }
  codec.decode(wires + offset[pending], wire_of(pending), chunks[pending].count, data + chunks[pending].offset, false);
}

bool compressed_average_rounding_variance(const float* averaged, std::size_t count, int n, const Codec& codec,
                                          float* out) {
  if (n == 1) {  // a group of one leaves the values as they are
    std::fill(out, out + count, 0.0f);
    return true;
  }
  for (const Segment& chunk : partition(count, n)) {
    if (!codec.rounding_variance(averaged + chunk.offset, chunk.count, out + chunk.offset)) return false;
  }
  const float senders = 1.0f + 1.0f / static_cast<float>(n);
  for (std::size_t i = 0; i < count; ++i) out[i] *= senders;
  return true;
}

}  // namespace bagua
