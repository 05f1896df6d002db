#include "topology/ring.hpp"

#include <gtest/gtest.h>

#include <set>

#include "core/error.hpp"
#include "topology/host_layout.hpp"

namespace bagua {

TEST(Partition, BalancedAndContiguous) {
  for (std::size_t count : {0u, 1u, 5u, 7u, 1000u, 1001u}) {
    for (int parts = 1; parts <= 8; ++parts) {
      auto segs = partition(count, parts);
      ASSERT_EQ(segs.size(), static_cast<std::size_t>(parts));
      std::size_t offset = 0, lo = SIZE_MAX, hi = 0;
      for (const auto& s : segs) {
        EXPECT_EQ(s.offset, offset);
        offset += s.count;
        lo = std::min(lo, s.count);
        hi = std::max(hi, s.count);
      }
      EXPECT_EQ(offset, count);
      EXPECT_LE(hi - lo, 1u);
    }
  }
  EXPECT_THROW(partition(10, 0), InvalidArgument);
}

TEST(Split, CoversSegment) {
  auto pieces = split({10, 25}, 10);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].offset, 10u);
  EXPECT_EQ(pieces[2].offset, 30u);
  EXPECT_EQ(pieces[2].count, 5u);
  EXPECT_EQ(split({3, 0}, 4).size(), 1u);
}

// Plays the schedule symbolically: each position tracks which ranks'
// contributions each segment holds. After reduce-scatter the owned segment
// must hold all n; after all-gather every segment everywhere must.
TEST(RingSchedule, ReduceScatterThenAllgatherCompletes) {
  for (int n = 1; n <= 8; ++n) {
    std::vector<std::vector<std::set<int>>> have(n, std::vector<std::set<int>>(n));
    for (int p = 0; p < n; ++p)
      for (int s = 0; s < n; ++s) have[p][s] = {p};
    for (int step = 0; step < n - 1; ++step) {
      auto before = have;
      for (int p = 0; p < n; ++p) {
        const int left = (p + n - 1) % n;
        const auto mine = reduce_scatter_step(p, n, step);
        const auto theirs = reduce_scatter_step(left, n, step);
        ASSERT_EQ(mine.recv_segment, theirs.send_segment) << "n=" << n << " step=" << step;
        have[p][mine.recv_segment].insert(before[left][theirs.send_segment].begin(),
                                          before[left][theirs.send_segment].end());
      }
    }
    for (int p = 0; p < n; ++p) EXPECT_EQ(have[p][owned_segment(p, n)].size(), static_cast<std::size_t>(n));
    for (int step = 0; step < n - 1; ++step) {
      auto before = have;
      for (int p = 0; p < n; ++p) {
        const int left = (p + n - 1) % n;
        const auto mine = allgather_step(p, n, step);
        ASSERT_EQ(mine.recv_segment, allgather_step(left, n, step).send_segment);
        have[p][mine.recv_segment] = before[left][mine.recv_segment];
      }
    }
    for (int p = 0; p < n; ++p)
      for (int s = 0; s < n; ++s) EXPECT_EQ(have[p][s].size(), static_cast<std::size_t>(n)) << n << p << s;
  }
}

TEST(Ring, OfChecksMembers) {
  auto r = Ring::of({3, 1, 2});
  EXPECT_EQ(r.position_of(1), 1);
  EXPECT_EQ(r.right_of(2), 3);
  EXPECT_EQ(r.left_of(0), 2);
  EXPECT_EQ(r.position_of(9), -1);
  EXPECT_THROW(Ring::of({1, 1}), InvalidArgument);
  EXPECT_THROW(Ring::of({}), InvalidArgument);
}

TEST(HostLayout, FromKeysAndLocalWorldSize) {
  auto l = HostLayout::from_host_keys({7, 3, 7, 3, 9});
  EXPECT_EQ(l.num_hosts(), 3);
  EXPECT_EQ(l.host_of(2), 0);
  EXPECT_EQ(l.members(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(l.leaders(), (std::vector<int>{0, 1, 4}));
  auto b = HostLayout::from_local_world_size(4, 2);
  EXPECT_EQ(b.members(1), (std::vector<int>{2, 3}));
  EXPECT_THROW(HostLayout::from_local_world_size(4, 3), InvalidArgument);
}

}  // namespace bagua
