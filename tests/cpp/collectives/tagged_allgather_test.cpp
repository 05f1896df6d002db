#include "collectives/tagged_allgather.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
namespace {

using Record = std::array<std::int64_t, 3>;

Record record_of(int rank) { return {rank, 7 * rank + 1, -rank}; }

}  // namespace

TEST(TaggedAllgather, EveryRecordReachesEveryMemberOnOneToEightRanks) {
  for (int n = 1; n <= 8; ++n) {
    testing::run_ranks(n, [&](int rank, Communicator& comm) {
      std::vector<int> members(n);
      for (int q = 0; q < n; ++q) members[q] = q;
      const Record mine = record_of(rank);
      std::vector<Record> all(n);
      tagged_allgather(comm, members, mine.data(), all.data(), sizeof(Record), 40);
      for (int q = 0; q < n; ++q) EXPECT_EQ(all[q], record_of(q)) << "n=" << n << " rank=" << rank;
    });
  }
}

TEST(TaggedAllgather, ASubsetInItsOwnOrderBesideAnotherOperation) {
  // Ranks 3, 1 and 0 gather while rank 2 talks to rank 1 on another tag:
  // messages of one tag never match the other's.
  testing::run_ranks(4, [&](int rank, Communicator& comm) {
    const std::vector<int> members{3, 1, 0};
    std::int64_t other = 1000 + rank;
    if (rank == 2) comm.isend(&other, sizeof(other), 1, 41)->wait(comm.timeout());
    if (rank == 1) {
      std::int64_t got = 0;
      auto r = comm.irecv(&got, sizeof(got), 2, 41);
      const Record mine = record_of(rank);
      std::vector<Record> all(3);
      tagged_allgather(comm, members, mine.data(), all.data(), sizeof(Record), 40);
      r->wait(comm.timeout());
      EXPECT_EQ(got, 1002);
      EXPECT_EQ(all[0], record_of(3));
      EXPECT_EQ(all[2], record_of(0));
    } else if (rank != 2) {
      const Record mine = record_of(rank);
      std::vector<Record> all(3);
      tagged_allgather(comm, members, mine.data(), all.data(), sizeof(Record), 40);
      EXPECT_EQ(all[1], record_of(1));
    }
  });
}

TEST(TaggedAllgather, ASilentMemberIsNamedByEveryOther) {
  // Rank 2 never takes part (a dead peer): the others fail within their
  // timeout, each naming rank 2 and only rank 2.
  std::vector<std::string> errors(4);
  std::vector<Record> all0(4), all1(4), all3(4);  // outlive the receives
  testing::run_ranks(
      4,
      [&](int rank, Communicator& comm) {
        if (rank == 2) return;
        std::vector<Record>& all = rank == 0 ? all0 : rank == 1 ? all1 : all3;
        const Record mine = record_of(rank);
        try {
          tagged_allgather(comm, {0, 1, 2, 3}, mine.data(), all.data(), sizeof(Record), 40);
        } catch (const TimeoutError& e) {
          errors[rank] = e.what();
        }
      },
      std::chrono::milliseconds(1000));
  for (int rank : {0, 1, 3}) {
    EXPECT_NE(errors[rank].find("rank 2"), std::string::npos) << errors[rank];
    for (int other : {0, 1, 3}) {
      EXPECT_EQ(errors[rank].find("rank " + std::to_string(other) + " ("), std::string::npos) << errors[rank];
    }
  }
  EXPECT_TRUE(errors[2].empty());
}

TEST(TaggedAllgather, ANonMemberIsAnError) {
  testing::run_ranks(2, [&](int rank, Communicator& comm) {
    if (rank != 1) return;
    std::int64_t mine = 0, all[1];
    EXPECT_THROW(tagged_allgather(comm, {0}, &mine, all, sizeof(mine), 40), InvalidArgument);
  });
}

}  // namespace bagua
