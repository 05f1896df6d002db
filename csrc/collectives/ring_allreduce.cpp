#include "collectives/ring_allreduce.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "collectives/scratch.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

struct Plan {
  std::vector<Segment> segments;              // one per ring position
  std::vector<std::vector<Segment>> pieces;   // pipelining units of each segment
  std::size_t elem = 0;
};

Plan make_plan(const std::vector<Segment>& segments, DType dtype, std::size_t chunk_bytes) {
  Plan plan;
  plan.elem = dtype_size(dtype);
  plan.segments = segments;
  const std::size_t max_count = std::max<std::size_t>(1, chunk_bytes / plan.elem);
  for (const auto& s : plan.segments) plan.pieces.push_back(split(s, max_count));
  return plan;
}

}  // namespace

void ring_allreduce(Communicator& comm, const Ring& ring, void* data, std::size_t count, DType dtype,
                    ReduceOp op, Tag tag, const RingOptions& options) {
  ring_allreduce(comm, ring, data, partition(count, ring.size()), dtype, op, tag, options);
}

void ring_allreduce(Communicator& comm, const Ring& ring, void* data, const std::vector<Segment>& segments,
                    DType dtype, ReduceOp op, Tag tag, const RingOptions& options) {
  const int n = ring.size();
  const int p = ring.position_of(comm.rank());
  if (p < 0) throw InvalidArgument(fmt::format("ring_allreduce: rank {} is not in the ring", comm.rank()));
  if (static_cast<int>(segments.size()) != n) {
    throw InvalidArgument(fmt::format("ring_allreduce: {} segments for a ring of {}", segments.size(), n));
  }
  std::size_t count = 0, largest = 0;
  for (const auto& s : segments) {
    count += s.count;
    largest = std::max(largest, s.count);
  }
  if (n == 1 || count == 0) return;  // the average of one value is itself

  const Plan plan = make_plan(segments, dtype, options.chunk_bytes);
  const int right = ring.right_of(p);
  const int left = ring.left_of(p);
  const auto timeout = comm.timeout();
  auto* base = static_cast<std::uint8_t*>(data);
  auto at = [&](const Segment& s) { return base + s.offset * plan.elem; };

  // Two scratch halves: step s receives into half s % 2 while the recvs of
  // step s + 1 are already posted into the other half.
  const std::size_t half = largest * plan.elem;
  std::uint8_t* scratch = thread_scratch(2 * half);

  auto post_reduce_recvs = [&](int step) {
    std::vector<RequestPtr> recvs;
    const int seg = reduce_scatter_step(p, n, step).recv_segment;
    std::uint8_t* buf = scratch + (step % 2) * half;
    for (const auto& piece : plan.pieces[seg]) {
      if (piece.count == 0) continue;
      recvs.push_back(comm.irecv(buf + (piece.offset - plan.segments[seg].offset) * plan.elem,
                                 piece.count * plan.elem, left, tag));
    }
    return recvs;
  };

  // rs_sends[s]: the sends of reduce-scatter step s, from segment (p - s).
  std::vector<std::vector<RequestPtr>> rs_sends(n - 1);
  std::vector<RequestPtr> ag_sends;
  for (const auto& piece : plan.pieces[reduce_scatter_step(p, n, 0).send_segment]) {
    if (piece.count) rs_sends[0].push_back(comm.isend(at(piece), piece.count * plan.elem, right, tag));
  }

  // All-gather step t receives straight into segment (p - t), which
  // reduce-scatter step t sent from; once that send is done the receive can
  // be posted. Receives are posted in step order (messages with one tag
  // match in order), as early as possible so that a neighbour's pieces find
  // their receive waiting (Gloo otherwise stages them in a temporary buffer).
  std::vector<RequestPtr> gather_recvs;
  int gather_posted = 0;
  auto post_gather_recvs = [&](int up_to) {  // steps [gather_posted, up_to)
    for (; gather_posted < up_to; ++gather_posted) {
      wait_all(rs_sends[gather_posted], timeout);
      for (const auto& piece : plan.pieces[allgather_step(p, n, gather_posted).recv_segment]) {
        if (piece.count) gather_recvs.push_back(comm.irecv(at(piece), piece.count * plan.elem, left, tag));
      }
    }
  };

  // Reduce-scatter. A piece reduced at step s is exactly what step s + 1
  // sends, so it is forwarded as soon as it is reduced.
  std::vector<RequestPtr> recvs = post_reduce_recvs(0);
  for (int step = 0; step < n - 1; ++step) {
    std::vector<RequestPtr> next;
    if (step + 1 < n - 1) next = post_reduce_recvs(step + 1);
    const bool last = step == n - 2;
    // Before the last step, every all-gather receive whose segment's send
    // was issued at least a step ago (those have had time to finish).
    if (last) post_gather_recvs(std::max(1, n - 2));
    const int seg = reduce_scatter_step(p, n, step).recv_segment;
    const std::uint8_t* buf = scratch + (step % 2) * half;
    std::size_t k = 0;
    for (const auto& piece : plan.pieces[seg]) {
      if (piece.count == 0) continue;
      recvs[k++]->wait(timeout);
      reduce_into(at(piece), buf + (piece.offset - plan.segments[seg].offset) * plan.elem, piece.count, dtype, op);
      if (last && op == ReduceOp::Avg) finish_average(at(piece), piece.count, dtype, n);
      // Not last: the next reduce-scatter step. Last: the first all-gather step.
      (last ? ag_sends : rs_sends[step + 1]).push_back(comm.isend(at(piece), piece.count * plan.elem, right, tag));
    }
    recvs = std::move(next);
  }
  post_gather_recvs(n - 1);

  std::size_t k = 0;
  for (int step = 0; step < n - 1; ++step) {
    for (const auto& piece : plan.pieces[allgather_step(p, n, step).recv_segment]) {
      if (piece.count == 0) continue;
      gather_recvs[k++]->wait(timeout);
      if (step < n - 2) ag_sends.push_back(comm.isend(at(piece), piece.count * plan.elem, right, tag));
    }
  }
  wait_all(ag_sends, timeout);
}

}  // namespace bagua
