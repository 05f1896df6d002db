#include "collectives/ring_allreduce.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using namespace std::chrono_literals;
using testing::run_ranks;

namespace {

// Small integers keep every partial sum and product exact in every dtype, so
// results must match the reference bit for bit whatever the reduction order.
double input(int rank, std::size_t i, ReduceOp op) {
  if (op == ReduceOp::Product) return double((rank + i) % 2 + 1);
  return double(int((rank * 7 + i * 3) % 11) - 5);
}

double expected(int n, std::size_t i, ReduceOp op) {
  double acc = input(0, i, op);
  for (int r = 1; r < n; ++r) {
    const double v = input(r, i, op);
    switch (op) {
      case ReduceOp::Sum:
      case ReduceOp::Avg: acc += v; break;
      case ReduceOp::Product: acc *= v; break;
      case ReduceOp::Min: acc = std::min(acc, v); break;
      case ReduceOp::Max: acc = std::max(acc, v); break;
    }
  }
  return op == ReduceOp::Avg ? acc / n : acc;
}

std::vector<std::uint8_t> encode(const std::vector<double>& values, DType t) {
  std::vector<std::uint8_t> out(values.size() * dtype_size(t));
  for (std::size_t i = 0; i < values.size(); ++i) {
    void* p = out.data() + i * dtype_size(t);
    const double v = values[i];
    switch (t) {
      case DType::F32: { float f = float(v); std::memcpy(p, &f, 4); break; }
      case DType::F64: std::memcpy(p, &v, 8); break;
      case DType::F16: { auto h = float_to_half(float(v)); std::memcpy(p, &h, 2); break; }
      case DType::BF16: { auto h = float_to_bf16(float(v)); std::memcpy(p, &h, 2); break; }
      case DType::I8: { auto x = std::int8_t(v); std::memcpy(p, &x, 1); break; }
      case DType::U8: { auto x = std::uint8_t(v); std::memcpy(p, &x, 1); break; }
      case DType::I32: { auto x = std::int32_t(v); std::memcpy(p, &x, 4); break; }
      case DType::I64: { auto x = std::int64_t(v); std::memcpy(p, &x, 8); break; }
    }
  }
  return out;
}

struct Case {
  int n;
  std::size_t count;
  DType dtype;
  ReduceOp op;
  std::size_t chunk_bytes;
};

void check(const Case& c) {
  const bool is_int = c.dtype == DType::I8 || c.dtype == DType::U8 || c.dtype == DType::I32 || c.dtype == DType::I64;
  std::vector<double> want(c.count);
  for (std::size_t i = 0; i < c.count; ++i) {
    double e = expected(c.n, i, c.op);
    if (c.op == ReduceOp::Avg && is_int) e = std::trunc(e);
    want[i] = e;
  }
  auto want_bytes = encode(want, c.dtype);
  run_ranks(c.n, [&](int rank, Communicator& comm) {
    std::vector<double> mine(c.count);
    for (std::size_t i = 0; i < c.count; ++i) mine[i] = input(rank, i, c.op);
    auto buf = encode(mine, c.dtype);
    ring_allreduce(comm, Ring::natural(c.n), buf.data(), c.count, c.dtype, c.op, 5, RingOptions{c.chunk_bytes});
    ASSERT_EQ(buf.size(), want_bytes.size());
    EXPECT_TRUE(buf == want_bytes) << "rank " << rank << " n=" << c.n << " count=" << c.count
                                   << " dtype=" << dtype_name(c.dtype) << " op=" << reduce_op_name(c.op);
  });
}

}  // namespace

TEST(RingAllreduce, AllSizesRanksAndOpsFloat32) {
  for (int n = 1; n <= 8; ++n)
    for (std::size_t count : {0u, 1u, 2u, 3u, 7u, 13u, 1001u})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Product})
        check({n, count, DType::F32, op, 16});  // 4-element pieces: deep pipelining
}

TEST(RingAllreduce, EveryDtype) {
  for (DType t : {DType::F64, DType::F16, DType::BF16, DType::I8, DType::I32, DType::I64})
    for (int n : {2, 3, 4})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max})
        check({n, 257, t, op, 64});
}

TEST(RingAllreduce, LargeBufferDefaultChunks) { check({4, (1u << 20) + 3, DType::F32, ReduceOp::Sum, 512 * 1024}); }

TEST(RingAllreduce, SubsetRingInReverseOrder) {
  // Ranks 3, 1, 0 form a ring; rank 2 sits out.
  run_ranks(4, [](int rank, Communicator& comm) {
    if (rank == 2) return;
    std::vector<float> v(11, float(rank + 1));
    ring_allreduce(comm, Ring::of({3, 1, 0}), v.data(), v.size(), DType::F32, ReduceOp::Sum, 1, RingOptions{8});
    for (float x : v) EXPECT_EQ(x, 4.f + 2.f + 1.f);
  });
}

TEST(RingAllreduce, RankOutsideRingIsRejected) {
  auto world = LoopbackWorld::create(3);
  auto comm = world->communicator(2, 1s);
  float x = 0;
  EXPECT_THROW(ring_allreduce(*comm, Ring::of({0, 1}), &x, 1, DType::F32, ReduceOp::Sum, 0), InvalidArgument);
}

TEST(RingAllreduce, DeadPeerTimesOutInsteadOfHanging) {
  auto world = LoopbackWorld::create(3);
  world->kill(2);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(run_ranks(
                   3,
                   [](int, Communicator& comm) {
                     std::vector<float> v(100, 1.f);
                     ring_allreduce(comm, Ring::natural(3), v.data(), v.size(), DType::F32, ReduceOp::Sum, 0);
                   },
                   300ms, world),
               TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

}  // namespace bagua
