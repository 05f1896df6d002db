#include "topology/multi_ring_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.hpp"
#include "topology/link_rates.hpp"

namespace bagua {
namespace {

std::vector<int> iota_ranks(int n) {
  std::vector<int> r(n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

// Elements each rank sends and receives in one all-reduce of `count`
// elements under `plan`, counted from the segments and the ring schedule
// (position p sends every segment but p+1 and p+2, receives every segment
// but p and p+1), not from the planner's own model.
struct Traffic {
  std::vector<std::size_t> sent, received;  // by rank
};

Traffic traffic(const MultiRingPlan& plan, std::size_t count, int used) {
  const int world = *std::max_element(plan.order().begin(), plan.order().end()) + 1;
  Traffic t{std::vector<std::size_t>(world), std::vector<std::size_t>(world)};
  for (int k = 0; k < used; ++k) {
    const Ring ring = plan.ring(k);
    const auto segs = plan.segments(k, plan.part(k, used, count));
    const int n = ring.size();
    std::size_t total = 0;
    for (const auto& s : segs) total += s.count;
    for (int p = 0; p < n; ++p) {
      const int r = ring.ranks[p];
      t.sent[r] += 2 * total - segs[(p + 1) % n].count - segs[(p + 2) % n].count;
      t.received[r] += 2 * total - segs[p].count - segs[(p + 1) % n].count;
    }
  }
  return t;
}

double slowest_seconds(const MultiRingPlan& plan, const std::vector<double>& mbit, std::size_t count, int used) {
  const Traffic t = traffic(plan, count, used);
  double worst = 0;
  for (std::size_t r = 0; r < mbit.size(); ++r) {
    const double bytes = double(std::max(t.sent[r], t.received[r])) * 4;
    worst = std::max(worst, bytes * 8 / (mbit[r] * 1e6));
  }
  return worst;
}

TEST(MultiRingPlan, RingsStartFurtherOnAndRunOneWayByDefault) {
  const auto plan = MultiRingPlan::make(iota_ranks(4), {}, {.rings = 2});
  EXPECT_EQ(plan.ring(0).ranks, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(plan.ring(1).ranks, (std::vector<int>{1, 2, 3, 0}));
}

TEST(MultiRingPlan, WithoutRatesUsesEqualChunksAndAlternatingRings) {
  const auto plan = MultiRingPlan::make(iota_ranks(4), {}, {.rings = 3, .both_directions = true});
  EXPECT_FALSE(plan.uneven());
  EXPECT_EQ(plan.ring(0).ranks, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(plan.ring(1).ranks, (std::vector<int>{2, 1, 0, 3}));  // reversed, started one further
  EXPECT_EQ(plan.ring(2).ranks, (std::vector<int>{2, 3, 0, 1}));
  for (int k = 0; k < 3; ++k) {
    const Segment part = plan.part(k, 3, 1001);
    const auto segs = plan.segments(k, part);
    const auto expected = partition(part.count, 4);
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(segs[j].count, expected[j].count);
      EXPECT_EQ(segs[j].offset, part.offset + expected[j].offset);
    }
  }
}

TEST(MultiRingPlan, AutoRingsAreOnePerCoreARankHasToItself) {
  EXPECT_EQ(auto_rings(2, 4), 1);  // four ranks on two cores
  EXPECT_EQ(auto_rings(2, 1), 2);
  EXPECT_EQ(auto_rings(16, 2), 4);  // at most 4
  EXPECT_EQ(auto_rings(3, 0), 3);
}

TEST(MultiRingPlan, SmallBuffersUseFewerRings) {
  const auto plan = MultiRingPlan::make(iota_ranks(4), {}, {.rings = 4, .min_part_bytes = 1000});
  EXPECT_EQ(plan.rings_for(0), 1);
  EXPECT_EQ(plan.rings_for(1999), 1);
  EXPECT_EQ(plan.rings_for(2000), 2);
  EXPECT_EQ(plan.rings_for(1 << 20), 4);
}

TEST(MultiRingPlan, TwoRanksHaveNothingToPlan) {
  // Whatever the shares, each of two ranks sends and receives S once.
  EXPECT_FALSE(MultiRingPlan::make(iota_ranks(2), {1000, 1}).uneven());
}

TEST(MultiRingPlan, NearlyEqualRatesKeepEqualChunks) {
  const auto plan = MultiRingPlan::make(iota_ranks(4), {1000, 700, 900, 600});
  EXPECT_FALSE(plan.uneven());
  EXPECT_NE(plan.describe().find("equal chunks"), std::string::npos);
}

TEST(MultiRingPlan, ASlowRankMovesOnlyTheBufferOnce) {
  // The network: the 20 Mbit/s rank must still send and receive S
  // once; equal chunks make it move 1.5 S at world 4.
  const std::vector<double> mbit{1000, 1000, 100, 20};
  for (int rings : {1, 2, 4})
  for (bool both : {false, true}) {
    const auto plan = MultiRingPlan::make(iota_ranks(4), mbit, {.rings = rings, .both_directions = both});
    ASSERT_TRUE(plan.uneven()) << rings;
    EXPECT_NEAR(plan.shares()[std::find(plan.order().begin(), plan.order().end(), 3) - plan.order().begin()], 1.0,
                1e-5);
    const std::size_t count = 4u << 20;
    const Traffic t = traffic(plan, count, rings);
    EXPECT_NEAR(double(t.sent[3]), double(count), count * 1e-5);
    EXPECT_NEAR(double(t.received[3]), double(count), count * 1e-5);
    EXPECT_NEAR(plan.equal_chunk_seconds(count * 4) / plan.predicted_seconds(count * 4), 1.5, 1e-3);
    EXPECT_NEAR(slowest_seconds(plan, mbit, count, rings), plan.predicted_seconds(count * 4),
                plan.predicted_seconds(count * 4) * 1e-4);
  }
}

TEST(MultiRingPlan, NeverSlowerThanEqualChunksAndSegmentsTileTheBuffer) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(0.0, 3.0);
  for (int n = 2; n <= 8; ++n) {
    for (int rings = 1; rings <= 4; ++rings) {
      for (int trial = 0; trial < 4; ++trial) {
        std::vector<double> mbit(n);
        for (double& r : mbit) r = std::pow(10.0, exponent(rng));  // 1 to 1000 Mbit/s
        const bool both = trial % 2 == 1;
        const auto plan = MultiRingPlan::make(iota_ranks(n), mbit,
                                              {.rings = rings, .both_directions = both, .min_part_bytes = 1});
        const std::size_t count = 1'000'003;
        const double equal = *std::max_element(mbit.begin(), mbit.end()) > 0
                                 ? (2.0 - 2.0 / n) * count * 4 * 8 / (*std::min_element(mbit.begin(), mbit.end()) * 1e6)
                                 : 0;
        // Measured on the real segments, within rounding of one element.
        EXPECT_LE(slowest_seconds(plan, mbit, count, rings), equal * (1 + 1e-5)) << n << " " << rings;
        for (std::size_t c : {std::size_t{0}, std::size_t{1}, std::size_t{7}, count}) {
          std::size_t next = 0;
          for (int k = 0; k < rings; ++k) {
            for (const auto& s : plan.segments(k, plan.part(k, rings, c))) {
              EXPECT_EQ(s.offset, next);
              next += s.count;
            }
          }
          EXPECT_EQ(next, c);
        }
      }
    }
  }
}

TEST(MultiRingPlan, IsDeterministicAndExplainsItself) {
  const std::vector<double> mbit{1000, 20, 1000, 100, 1000};
  const auto a = MultiRingPlan::make(iota_ranks(5), mbit);
  const auto b = MultiRingPlan::make(iota_ranks(5), mbit);
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(a.order(), b.order());
  EXPECT_NE(a.fingerprint(), MultiRingPlan::make(iota_ranks(5), {}).fingerprint());
  const std::string text = a.describe();
  EXPECT_NE(text.find("20 Mbit/s"), std::string::npos) << text;
  EXPECT_NE(text.find("predicted"), std::string::npos) << text;
}

TEST(MultiRingPlan, WorksOnASubsetOfRanks) {
  const auto plan = MultiRingPlan::make({5, 2, 7}, {100, 10, 100}, {.rings = 2});
  EXPECT_TRUE(plan.uneven());
  for (int k = 0; k < 2; ++k) {
    auto ranks = plan.ring(k).ranks;
    std::sort(ranks.begin(), ranks.end());
    EXPECT_EQ(ranks, (std::vector<int>{2, 5, 7}));
  }
}

TEST(MultiRingPlan, RejectsBadInput) {
  EXPECT_THROW(MultiRingPlan::make(iota_ranks(4), {}, {.rings = 0}), InvalidArgument);
  EXPECT_THROW(MultiRingPlan::make(iota_ranks(4), {}, {.rings = kMaxRings + 1}), InvalidArgument);
  EXPECT_THROW(MultiRingPlan::make(iota_ranks(4), {1, 2, 3}), InvalidArgument);
  EXPECT_THROW(MultiRingPlan::make(iota_ranks(2), {1, -2}), InvalidArgument);
  EXPECT_THROW(MultiRingPlan::make({0, 1, 1}, {}), InvalidArgument);
  EXPECT_THROW(MultiRingPlan::make({}, {}), InvalidArgument);
}

TEST(LinkRates, ParsesOneRatePerRank) {
  EXPECT_EQ(parse_link_mbit("1000,1000, 100 ,20", 4), (std::vector<double>{1000, 1000, 100, 20}));
  EXPECT_EQ(parse_link_mbit("2.5", 1), (std::vector<double>{2.5}));
  for (const char* bad : {"", "1000,,20", "1000,x", "0,1", "-1,1", "inf,1", "1e999,1"}) {
    EXPECT_THROW(parse_link_mbit(bad, 2), InvalidArgument) << bad;
  }
  try {
    parse_link_mbit("1000,20", 4);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("2 rates for 4 ranks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bagua
