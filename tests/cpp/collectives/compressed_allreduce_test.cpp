#include "collectives/compressed_allreduce.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "collectives/compressed_exchange.hpp"
#include "core/error.hpp"
#include "support/run_ranks.hpp"
#include "topology/ring.hpp"

namespace bagua {

namespace {
float input(int rank, std::size_t i) { return std::sin(0.37f * static_cast<float>(i) + rank) * (rank + 1); }
}  // namespace

// Every rank ends with identical values, near the exact average; a lossless
// codec gives the exact average (to the rounding of a sum in rank order).
TEST(CompressedAllreduce, SameResultEverywhereAndCloseToTheAverage) {
  for (const std::string codec_name : {"identity", "fp16", "minmax_uint8"}) {
    for (int n : {1, 2, 3, 4, 5}) {
      for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{1001}}) {
        auto codec = make_codec(codec_name);
        std::vector<std::vector<float>> results(n);
        std::vector<int> ranks(n);
        std::iota(ranks.begin(), ranks.end(), 0);
        testing::run_ranks(n, [&](int rank, Communicator& comm) {
          std::vector<float> data(count);
          for (std::size_t i = 0; i < count; ++i) data[i] = input(rank, i);
          compressed_allreduce(comm, ranks, data.data(), count, *codec, ReduceOp::Avg, 11);
          results[rank] = data;
        });
        for (int r = 1; r < n; ++r) ASSERT_EQ(results[r], results[0]) << codec_name << " n=" << n;
        const float tol = codec_name == "identity" ? 1e-6f : codec_name == "fp16" ? 2e-3f : 0.05f;
        for (std::size_t i = 0; i < count; ++i) {
          float exact = 0;
          for (int q = 0; q < n; ++q) exact += input(q, i);
          exact /= static_cast<float>(n);
          ASSERT_NEAR(results[0][i], exact, tol * (n + 1)) << codec_name << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

// The rounding's variance of an average is estimated per block of each
// rank's chunk (the blocks start at each chunk's start), from the averaged
// values alone: (1 + 1/n) step^2 / 12, the owner's encoding and 1/n of the
// senders'. Every rank gets the same answer from the same values.
TEST(CompressedAllreduce, RoundingVarianceFollowsEachChunksBlocks) {
  const std::size_t block = 64, count = 2 * 3 * block + 50;
  auto codec = make_codec("minmax_uint8", block);
  for (int n : {1, 2, 3}) {
    std::vector<float> data(count), variance(count, -1.0f);
    for (std::size_t i = 0; i < count; ++i) data[i] = input(0, i) * static_cast<float>(1 + i / 40);
    ASSERT_TRUE(compressed_average_rounding_variance(data.data(), count, n, *codec, variance.data()));
    if (n == 1) {  // nothing is encoded
      EXPECT_EQ(variance, std::vector<float>(count, 0.0f));
      continue;
    }
    for (const Segment& chunk : partition(count, n)) {
      for (std::size_t start = 0; start < chunk.count; start += block) {
        const auto first = data.begin() + static_cast<std::ptrdiff_t>(chunk.offset + start);
        const auto last = first + static_cast<std::ptrdiff_t>(std::min(block, chunk.count - start));
        const double step = (static_cast<double>(*std::max_element(first, last)) - *std::min_element(first, last)) / 255;
        const double expected = (1.0 + 1.0 / n) * step * step / 12;
        for (auto i = first - data.begin(); i < last - data.begin(); ++i) {
          ASSERT_NEAR(variance[i], expected, 1e-4 * expected) << "n=" << n << " i=" << i;
        }
      }
    }
  }
  std::vector<float> data(10, 1.0f), variance(10);
  EXPECT_FALSE(compressed_average_rounding_variance(data.data(), 10, 2, *make_codec("sign1bit"), variance.data()));
}

TEST(CompressedAllreduce, SubgroupAndSumAndBadArguments) {
  auto codec = make_codec("identity");
  testing::run_ranks(4, [&](int rank, Communicator& comm) {
    std::vector<float> data(10, static_cast<float>(rank));
    if (rank == 1 || rank == 3) {
      compressed_allreduce(comm, {1, 3}, data.data(), data.size(), *codec, ReduceOp::Sum, 3);
      EXPECT_EQ(data[9], 4.0f);
    } else {
      EXPECT_THROW(compressed_allreduce(comm, {1, 3}, data.data(), data.size(), *codec, ReduceOp::Sum, 3),
                   InvalidArgument);
      EXPECT_THROW(compressed_allreduce(comm, {0, 2}, data.data(), data.size(), *codec, ReduceOp::Max, 3),
                   InvalidArgument);
    }
  });
}

TEST(CompressedExchange, SwapsDecodedValues) {
  auto codec = make_codec("bf16");
  testing::run_ranks(2, [&](int rank, Communicator& comm) {
    std::vector<float> mine(100, rank + 0.5f), theirs(100, -1.0f);
    compressed_exchange(comm, 1 - rank, mine.data(), theirs.data(), mine.size(), *codec, 9);
    EXPECT_EQ(theirs[99], 1.5f - rank);
  });
}

}  // namespace bagua

namespace bagua {

// 1-bit exchange with error feedback on both sides: over any number of
// calls, outputs + the owner's residual + the mean of the senders' residuals
// add up to the mean of all inputs. Nothing is lost, only delayed.
TEST(CompressedAllreduce, ErrorFeedbackLosesNothingOverTime) {
  const int n = 3;
  const std::size_t count = 101;
  const int steps = 7;
  auto codec = make_codec("sign1bit");
  std::vector<std::vector<double>> out_sum(n, std::vector<double>(count, 0.0));
  std::vector<std::vector<float>> worker(n, std::vector<float>(count, 0.0f)), server(n);
  std::vector<int> ranks{0, 1, 2};
  testing::run_ranks(n, [&](int rank, Communicator& comm) {
    server[rank].assign(compressed_allreduce_owned_count(count, n, rank), 0.0f);
    const ErrorFeedbackBuffers fb{&worker[rank], &server[rank]};
    for (int t = 0; t < steps; ++t) {
      std::vector<float> x(count);
      for (std::size_t i = 0; i < count; ++i) x[i] = input(rank, i + 13 * t);
      compressed_allreduce(comm, ranks, x.data(), count, *codec, ReduceOp::Avg, 20 + t, &fb);
      for (std::size_t i = 0; i < count; ++i) out_sum[rank][i] += x[i];
    }
  });
  const auto chunks = partition(count, n);
  for (int owner = 0; owner < n; ++owner) {
    for (std::size_t k = 0; k < chunks[owner].count; ++k) {
      const std::size_t i = chunks[owner].offset + k;
      double inputs = 0, senders = 0;
      for (int q = 0; q < n; ++q) {
        for (int t = 0; t < steps; ++t) inputs += input(q, i + 13 * t);
        senders += worker[q][i];
      }
      EXPECT_NEAR(out_sum[0][i] + server[owner][k] + senders / n, inputs / n, 1e-4) << i;
    }
  }
}

}  // namespace bagua
