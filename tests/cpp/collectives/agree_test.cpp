#include "collectives/agree.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using testing::run_ranks;

namespace {

TEST(Agree, RanksWithDifferentLinkRatesAreAnErrorOnEveryRank) {
  run_ranks(3, [&](int, Communicator& comm) { check_same_link_mbit(comm, {10, 20, 30}); });
  run_ranks(3, [&](int rank, Communicator& comm) {
    const std::vector<double> mine = rank == 1 ? std::vector<double>{10, 20, 31} : std::vector<double>{10, 20, 30};
    EXPECT_THROW(check_same_link_mbit(comm, mine), InvalidArgument);
  });
  run_ranks(2, [&](int rank, Communicator& comm) {
    const std::vector<double> mine = rank == 1 ? std::vector<double>{} : std::vector<double>{10, 20};
    EXPECT_THROW(check_same_link_mbit(comm, mine), InvalidArgument);
  });
}

TEST(Agree, MinOverRanks) {
  run_ranks(4, [&](int rank, Communicator& comm) { EXPECT_EQ(min_over_ranks(comm, 7 - rank), 4); });
  run_ranks(1, [&](int, Communicator& comm) { EXPECT_EQ(min_over_ranks(comm, 3), 3); });
}

}  // namespace
}  // namespace bagua
