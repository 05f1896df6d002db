// The plan of a parallel multi-ring all-reduce (Ravnest): R rings over the
// same ranks, each reducing its own contiguous part of the buffer, ring k
// starting k positions further on, so that several parts are reduced and
// sent at once. With both_directions every other ring runs the opposite
// way: that uses more links where the network is itself a ring (each rank
// wired to two neighbours); on a switched network, where every rank already
// sends and receives at once, it only adds the other direction's traffic to
// connections whose acknowledgements then wait behind data
// (docs/multi_ring.md measures it).
//
// On uneven links the segment a rank owns is sized from its bandwidth. In a
// ring all-reduce the rank at position p owns segment p + 1 after the
// reduce-scatter; it sends every segment but its own and its successor's
// and receives every segment but its predecessor's and its own:
//     send_p = 2S - own(p) - own(succ p),   recv_p = 2S - own(pred p) - own(p).
// Equal chunks make every rank move 2(n-1)/n S; a rank owning more moves
// less, down to S. The plan minimizes, by linear programming, the slowest
// rank's max(send, recv) / bandwidth over the shares and (for up to 7
// ranks) the ring order, so under this model it is never slower than equal
// chunks; among optimal shares it takes the ones closest to equal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "topology/ring.hpp"

namespace bagua {

struct MultiRingOptions {
  // Rings run at once (each on its own thread, each with its own tag).
  int rings = 2;
  // Odd-numbered rings run the opposite way.
  bool both_directions = false;
  // Rates within this factor of each other count as equal: a start-up probe
  // cannot tell them apart reliably, and the model's gain would be small.
  double uniform_ratio = 2.0;
  // Keep equal chunks unless the bandwidth-aware shares are predicted to be
  // at least this much faster.
  double min_gain = 0.05;
  // A ring is worth its messages only on a part at least this large; smaller
  // buffers use fewer rings.
  std::size_t min_part_bytes = 64u << 10;
};

// Rings at most: each takes one of an operation's tags (tags::kPerOperation).
constexpr int kMaxRings = 8;

// The rings worth running when none are asked for: one per core a rank has
// to itself, at most 4. A ring is a thread reducing and forwarding; where
// ranks share cores (four ranks on two) extra rings only take turns on the
// same cores and cost messages (docs/multi_ring.md measures it).
int auto_rings(int cores, int ranks_on_host);

class MultiRingPlan {
 public:
  // `link_mbit`: each rank's link rate in Mbit/s, in the order of `ranks`,
  // or empty when unknown (equal chunks). Deterministic: equal inputs give
  // equal plans on every rank.
  static MultiRingPlan make(std::vector<int> ranks, std::vector<double> link_mbit, const MultiRingOptions& options = {});

  int size() const { return static_cast<int>(order_.size()); }
  int rings() const { return rings_; }
  // Whether shares differ from equal chunks.
  bool uneven() const { return uneven_; }
  // The ranks in the order of ring 0 (the planner may reorder them).
  const std::vector<int>& order() const { return order_; }
  // Each rank's share of every ring's part, in `order()`, summing to 1.
  std::vector<double> shares() const;
  // The rates the plan was made from, in the order of the ranks given to
  // make(); empty when unknown.
  const std::vector<double>& link_mbit() const { return link_mbit_; }

  // Rings used for a buffer of `bytes` (fewer than rings() when small).
  int rings_for(std::size_t bytes) const;
  bool both_directions() const { return both_directions_; }
  // Ring k (k < rings()): order() rotated by k, reversed for odd k when
  // both_directions.
  Ring ring(int k) const;
  // Ring k's part of a buffer of `count` elements when `used` rings run.
  Segment part(int k, int used, std::size_t count) const;
  bool reversed(int k) const { return both_directions_ && k % 2 == 1; }
  // The ring-position segments of ring k's part (segment j is owned by
  // position j - 1 after the reduce-scatter, as in ring_allreduce).
  std::vector<Segment> segments(int k, Segment part) const;

  // Predicted seconds to all-reduce `bytes` (bandwidth only), and the same
  // with equal chunks; 0 when the rates are unknown.
  double predicted_seconds(std::size_t bytes) const;
  double equal_chunk_seconds(std::size_t bytes) const;

  // The plan in words: order, rings, shares, bytes each rank moves, the
  // prediction against equal chunks.
  std::string describe() const;
  // A digest of order, rings and shares, for checking that ranks agree.
  std::uint64_t fingerprint() const;

 private:
  std::vector<int> ranks_;              // as given
  std::vector<double> link_mbit_;       // in ranks_, empty when unknown
  std::vector<int> order_;
  std::vector<std::uint32_t> weights_;  // in order_, summing to kWeightTotal
  int rings_ = 1;
  bool both_directions_ = false;
  bool uneven_ = false;
  double cost_ = 0, equal_cost_ = 0;  // seconds per byte of buffer
  std::size_t min_part_bytes_ = 1;
  std::string reason_;  // why these shares, for describe()
};

}  // namespace bagua
