// A ring over a subset of ranks, and the step schedule of a ring all-reduce.
//
// Positions are indices into `ranks`; a position sends to its right
// neighbour (position + 1) and receives from its left (position - 1).
#pragma once

#include <cstddef>
#include <vector>

namespace bagua {

struct Ring {
  std::vector<int> ranks;  // global ranks in ring order

  // Rank r..n-1 in order: the plain ring of a group of n ranks.
  static Ring natural(int n);
  // `members` in order; checks they are distinct and non-negative.
  static Ring of(std::vector<int> members);

  int size() const { return static_cast<int>(ranks.size()); }
  // Position of `rank`, or -1 when it is not in the ring.
  int position_of(int rank) const;
  int right_of(int position) const { return ranks[(position + 1) % size()]; }
  int left_of(int position) const { return ranks[(position + size() - 1) % size()]; }
};

// A contiguous run of elements of a flat buffer.
struct Segment {
  std::size_t offset = 0;
  std::size_t count = 0;
};

// Splits `count` elements into `parts` contiguous segments whose sizes differ
// by at most one (the first count % parts are one longer).
std::vector<Segment> partition(std::size_t count, int parts);

// Splits one segment into pieces of at most `max_count` elements (at least one
// piece, possibly empty), the unit of pipelining.
std::vector<Segment> split(Segment s, std::size_t max_count);

// Which segment a position sends and which it receives at one ring step.
struct RingStep {
  int send_segment;
  int recv_segment;
};

// Reduce-scatter step s in [0, n-2]: send segment (p - s), receive and reduce
// segment (p - s - 1). Afterwards position p owns segment owned_segment(p).
RingStep reduce_scatter_step(int position, int n, int step);
int owned_segment(int position, int n);
// All-gather step s in [0, n-2]: send segment (p + 1 - s), receive (p - s).
RingStep allgather_step(int position, int n, int step);

}  // namespace bagua
