#include "collectives/peer_average.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "collectives/neighbour_exchange.hpp"
#include "core/error.hpp"
#include "core/float16.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
namespace {

float value(int rank, std::size_t i) { return std::sin(0.37f * static_cast<float>(i) + 1.3f * rank) * (rank + 1); }

// What each mode must give, written from docs/decentralized.md.
float expected(PeerMode mode, int rank, int n, std::uint64_t step, std::size_t i) {
  switch (mode) {
    case PeerMode::All: {
      double sum = 0;
      for (int q = 0; q < n; ++q) sum += value(q, i);
      return static_cast<float>(sum / n);
    }
    case PeerMode::ShiftOne:
      return (value(rank, i) + value(shift_one_peer(rank, n, step), i)) / 2.0f;
    case PeerMode::Ring:
      return (value(rank, i) + value((rank + n - 1) % n, i) + value((rank + 1) % n, i)) / 3.0f;
  }
  return 0;
}

}  // namespace

TEST(PeerAverage, EveryModeOnOneToEightRanks) {
  const std::size_t count = 1001;  // odd
  for (PeerMode mode : {PeerMode::All, PeerMode::ShiftOne, PeerMode::Ring}) {
    for (int n = 1; n <= 8; ++n) {
      if (mode == PeerMode::ShiftOne && n % 2) continue;
      for (std::uint64_t step : {0u, 1u, 5u}) {
        testing::run_ranks(n, [&](int rank, Communicator& comm) {
          std::vector<float> in(count), out(count), scratch(count);
          for (std::size_t i = 0; i < count; ++i) in[i] = value(rank, i);
          const auto before = in;
          std::vector<int> members(n);
          for (int q = 0; q < n; ++q) members[q] = q;
          TagBlock tags(100, 4);
          peer_average(comm, members, mode, step, in.data(), out.data(), scratch.data(), count, DType::F32, tags);
          EXPECT_EQ(in, before);  // never written
          for (std::size_t i = 0; i < count; ++i) {
            const float want = n == 1 ? value(rank, i) : expected(mode, rank, n, step, i);
            if (mode == PeerMode::All) {
              ASSERT_NEAR(out[i], want, 1e-5f) << "n=" << n << " i=" << i;
            } else {
              ASSERT_EQ(out[i], want) << peer_mode_name(mode) << " n=" << n << " step=" << step << " i=" << i;
            }
          }
        });
      }
    }
  }
}

TEST(PeerAverage, ShiftOneAndRingOfManyPieces) {
  // A model of several exchange pieces (the test above fits in one).
  const std::size_t count = (kReceivesAhead + kPiecesInFlight + 2) * kExchangePieceBytes / sizeof(float) + 3;
  for (PeerMode mode : {PeerMode::ShiftOne, PeerMode::Ring}) {
    testing::run_ranks(4, [&](int rank, Communicator& comm) {
      std::vector<float> in(count), out(count), scratch(count);
      for (std::size_t i = 0; i < count; ++i) in[i] = value(rank, i);
      peer_average(comm, {0, 1, 2, 3}, mode, 3, in.data(), out.data(), scratch.data(), count, DType::F32,
                   TagBlock(0, 4));
      for (std::size_t i = 0; i < count; ++i) {
        ASSERT_EQ(out[i], expected(mode, rank, 4, 3, i)) << peer_mode_name(mode) << " i=" << i;
      }
    });
  }
}

TEST(PeerAverage, RingOfTwoCountsThePartnerTwice) {
  testing::run_ranks(2, [](int rank, Communicator& comm) {
    std::vector<float> in{float(rank * 3)}, out(1), scratch(1);
    peer_average(comm, {0, 1}, PeerMode::Ring, 0, in.data(), out.data(), scratch.data(), 1, DType::F32,
                 TagBlock(0, 2));
    EXPECT_EQ(out[0], rank == 0 ? 2.0f : 1.0f);  // (0 + 3 + 3) / 3, (3 + 0 + 0) / 3
  });
}

TEST(PeerAverage, Bfloat16SumsInItsOwnPrecision) {
  testing::run_ranks(4, [](int rank, Communicator& comm) {
    const std::size_t count = 33;
    std::vector<std::uint16_t> in(count), out(count), scratch(count);
    for (std::size_t i = 0; i < count; ++i) in[i] = float_to_bf16(value(rank, i));
    peer_average(comm, {0, 1, 2, 3}, PeerMode::Ring, 0, in.data(), out.data(), scratch.data(), count, DType::BF16,
                 TagBlock(0, 2));
    const int left = (rank + 3) % 4, right = (rank + 1) % 4;
    for (std::size_t i = 0; i < count; ++i) {
      auto bf = [](float f) { return bf16_to_float(float_to_bf16(f)); };
      // ((x + l) rounded + r) rounded, / 3 rounded: as torch adds bf16 tensors.
      const float sum = bf(bf(bf(value(rank, i)) + bf(value(left, i))) + bf(value(right, i)));
      EXPECT_EQ(bf16_to_float(out[i]), bf(sum / 3.0f)) << i;
    }
  });
}

TEST(PeerAverage, OddShiftOneAndStrangersAreErrors) {
  testing::run_ranks(1, [](int, Communicator& comm) {
    float x = 1, y = 0;
    EXPECT_THROW(peer_average(comm, {0, 1, 2}, PeerMode::ShiftOne, 0, &x, &y, nullptr, 1, DType::F32, TagBlock(0, 2)),
                 InvalidArgument);
    EXPECT_THROW(peer_average(comm, {1, 2}, PeerMode::Ring, 0, &x, &y, &y, 1, DType::F32, TagBlock(0, 2)),
                 InvalidArgument);
  });
}

}  // namespace bagua
