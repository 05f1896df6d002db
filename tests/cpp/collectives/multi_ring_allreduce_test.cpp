#include "collectives/multi_ring_allreduce.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "collectives/link_probe.hpp"
#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using testing::run_ranks;

namespace {

// Small integers: every partial sum is exact, so any reduction order must
// give the reference bit for bit.
float input(int rank, std::size_t i) { return float(int((rank * 7 + i * 3) % 11) - 5); }

std::vector<int> iota_ranks(int n) {
  std::vector<int> r(n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

void check_allreduce(const std::vector<int>& members, int world, const MultiRingPlan& plan, std::size_t count,
                     ReduceOp op) {
  run_ranks(world, [&](int rank, Communicator& comm) {
    if (std::find(members.begin(), members.end(), rank) == members.end()) return;  // not in this group
    std::vector<float> data(count);
    for (std::size_t i = 0; i < count; ++i) data[i] = input(rank, i);
    multi_ring_allreduce(comm, plan, data.data(), count, DType::F32, op, /*first_tag=*/40);
    for (std::size_t i = 0; i < count; ++i) {
      float sum = 0;
      for (int r : members) sum += input(r, i);
      const float want = op == ReduceOp::Avg ? sum / float(members.size()) : sum;
      ASSERT_EQ(data[i], want) << "rank " << rank << " element " << i << " of " << count;
    }
  });
}

TEST(MultiRingAllreduce, EqualChunksAnyWorldAnyRings) {
  for (int n = 1; n <= 8; ++n) {
    for (int rings = 1; rings <= 4; ++rings) {
      const auto plan =
          MultiRingPlan::make(iota_ranks(n), {}, {.rings = rings, .both_directions = n % 2 == 0, .min_part_bytes = 1});
      for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{1031}}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n << " rings=" << rings << " count=" << count);
        check_allreduce(iota_ranks(n), n, plan, count, ReduceOp::Sum);
      }
    }
  }
}

TEST(MultiRingAllreduce, UnevenSharesFromLinkRates) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> exponent(0.0, 3.0);
  for (int n = 3; n <= 8; ++n) {  // at world 2 every share moves S: nothing to plan
    for (int rings = 1; rings <= 4; ++rings) {
      std::vector<double> mbit(n);
      for (double& r : mbit) r = std::pow(10.0, exponent(rng));
      mbit[0] = 1000;
      mbit[n - 1] = 1;  // a slow rank among fast ones: the plan is uneven
      const auto plan = MultiRingPlan::make(iota_ranks(n), mbit,
                                            {.rings = rings, .both_directions = rings % 2 == 0, .min_part_bytes = 1});
      ASSERT_TRUE(plan.uneven());
      SCOPED_TRACE(::testing::Message() << "n=" << n << " rings=" << rings);
      check_allreduce(iota_ranks(n), n, plan, 4099, n % 2 ? ReduceOp::Avg : ReduceOp::Sum);
    }
  }
}

TEST(MultiRingAllreduce, PiecesSmallerThanSegmentsAndLargeBuffers) {
  // 300k floats over 3 rings: several pipelining pieces per segment (the
  // uneven plan cuts pieces of part/32), on a subset of a world of 6.
  const std::vector<int> members{4, 1, 3};
  const auto plan = MultiRingPlan::make(members, {1000, 1000, 10}, {.rings = 3, .both_directions = true});
  ASSERT_TRUE(plan.uneven());
  check_allreduce(members, 6, plan, 300'000, ReduceOp::Sum);
  check_allreduce(members, 6, MultiRingPlan::make(members, {}, {.rings = 3}), 300'000, ReduceOp::Avg);
}

TEST(MultiRingAllreduce, RankOutsideThePlanIsAnError) {
  const auto plan = MultiRingPlan::make({0, 1}, {});
  run_ranks(3, [&](int rank, Communicator& comm) {
    if (rank != 2) return;
    float x = 1;
    EXPECT_THROW(multi_ring_allreduce(comm, plan, &x, 1, DType::F32, ReduceOp::Sum, 40), InvalidArgument);
  });
}

TEST(MultiRingAllreduce, ADeadPeerIsATimeoutNotAHang) {
  // Rank 1 never joins: every ring of rank 0 must give up within the
  // communicator's timeout, and the error comes back to the caller.
  const auto plan = MultiRingPlan::make(iota_ranks(2), {}, {.rings = 3, .min_part_bytes = 1});
  run_ranks(
      2,
      [&](int rank, Communicator& comm) {
        if (rank == 1) return;
        std::vector<float> data(1000, 1.0f);
        EXPECT_THROW(multi_ring_allreduce(comm, plan, data.data(), data.size(), DType::F32, ReduceOp::Sum, 40),
                     TimeoutError);
      },
      std::chrono::milliseconds(300));
}

TEST(LinkProbe, EveryRankGetsTheSameRatesForEveryPeer) {
  for (int n : {1, 2, 3, 4, 5}) {
    std::vector<std::vector<double>> got(n);
    run_ranks(n, [&](int rank, Communicator& comm) {
      got[rank] = probe_link_mbit(comm, 50, {.bytes = 64u << 10, .warmup_bytes = 1024});
    });
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(got[r].size(), std::size_t(n));
      EXPECT_EQ(got[r], got[0]);
      if (n > 1) {
        for (double v : got[r]) EXPECT_GT(v, 0.0);
      }
    }
  }
}

}  // namespace
}  // namespace bagua
