#include "comm/loopback_communicator.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using namespace std::chrono_literals;
using testing::run_ranks;

TEST(Loopback, MessagesArriveInOrderPerTag) {
  run_ranks(2, [](int rank, Communicator& comm) {
    if (rank == 0) {
      for (int i = 0; i < 5; ++i) comm.isend(&i, sizeof i, 1, 7)->wait(1s);
      int x = 99;
      comm.isend(&x, sizeof x, 1, 8)->wait(1s);
    } else {
      int other = 0;
      comm.irecv(&other, sizeof other, 0, 8)->wait(1s);  // different tag: independent
      EXPECT_EQ(other, 99);
      for (int i = 0; i < 5; ++i) {
        int v = -1;
        comm.irecv(&v, sizeof v, 0, 7)->wait(1s);
        EXPECT_EQ(v, i);
      }
    }
  });
}

TEST(Loopback, WrongSizeIsAProtocolError) {
  EXPECT_THROW(run_ranks(2,
                         [](int rank, Communicator& comm) {
                           std::int64_t v = 1;
                           if (rank == 0) comm.isend(&v, 4, 1, 0)->wait(1s);
                           else comm.irecv(&v, 8, 0, 0)->wait(1s);
                         }),
               ProtocolError);
}

TEST(Loopback, RecvFromSilentPeerTimesOut) {
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(run_ranks(2,
                         [](int rank, Communicator& comm) {
                           int v;
                           if (rank == 1) comm.irecv(&v, sizeof v, 0, 0)->wait(200ms);
                         }),
               TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(Loopback, Collectives) {
  run_ranks(3, [](int rank, Communicator& comm) {
    std::vector<double> v{double(rank), 1.0};
    comm.allreduce(v.data(), 2, DType::F64, ReduceOp::Avg)->wait(1s);
    EXPECT_DOUBLE_EQ(v[0], 1.0);
    std::int32_t mine = rank * 10;
    std::vector<std::int32_t> all(3);
    comm.allgather(&mine, all.data(), sizeof mine)->wait(1s);
    EXPECT_EQ(all, (std::vector<std::int32_t>{0, 10, 20}));
    int b = rank == 2 ? 42 : 0;
    comm.broadcast(&b, sizeof b, 2)->wait(1s);
    EXPECT_EQ(b, 42);
    comm.barrier()->wait(1s);
  });
}

TEST(Loopback, InvalidPeerIsRejected) {
  auto world = LoopbackWorld::create(2);
  auto comm = world->communicator(0, 1s);
  int v = 0;
  EXPECT_THROW(comm->isend(&v, 4, 0, 0), InvalidArgument);
  EXPECT_THROW(comm->irecv(&v, 4, 5, 0), InvalidArgument);
}

}  // namespace bagua
