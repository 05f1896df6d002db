#include "collectives/hierarchical_allreduce.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "collectives/chain.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using testing::run_ranks;

TEST(Hierarchical, MatchesFlatAverage) {
  for (auto [world, local] : std::vector<std::pair<int, int>>{{4, 2}, {6, 3}, {4, 1}, {4, 4}, {8, 2}}) {
    const auto layout = HostLayout::from_local_world_size(world, local);
    run_ranks(world, [&, world = world](int rank, Communicator& comm) {
      std::vector<double> v(37);
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = rank * 100.0 + i;
      hierarchical_allreduce(comm, layout, v.data(), v.size(), DType::F64, ReduceOp::Avg, 3, RingOptions{40});
      for (std::size_t i = 0; i < v.size(); ++i) EXPECT_DOUBLE_EQ(v[i], 100.0 * (world - 1) / 2.0 + i);
    });
  }
}

TEST(Hierarchical, UnevenHostsFromKeys) {
  const auto layout = HostLayout::from_host_keys({0, 0, 0, 1, 2});
  run_ranks(5, [&](int rank, Communicator& comm) {
    std::vector<std::int32_t> v(9, rank);
    hierarchical_allreduce(comm, layout, v.data(), v.size(), DType::I32, ReduceOp::Max, 3, RingOptions{8});
    for (auto x : v) EXPECT_EQ(x, 4);
  });
}

TEST(Chain, BroadcastAndReduce) {
  run_ranks(4, [](int rank, Communicator& comm) {
    const std::vector<int> chain{2, 0, 3, 1};
    std::vector<float> v(10, float(rank));
    chain_reduce(comm, chain, v.data(), v.size(), DType::F32, ReduceOp::Sum, 9, 12);
    if (rank == 2) {
      for (float x : v) EXPECT_EQ(x, 6.f);
    }
    chain_broadcast(comm, chain, v.data(), v.size() * sizeof(float), 9, 12);
    for (float x : v) EXPECT_EQ(x, 6.f);
  });
}

}  // namespace bagua
