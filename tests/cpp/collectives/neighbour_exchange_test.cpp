#include "collectives/neighbour_exchange.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "support/run_ranks.hpp"

namespace bagua {
namespace {

// A piece's request that records when it is waited for.
class Recorded final : public Request {
 public:
  Recorded(std::vector<std::string>& log, std::string name) : log_(log), name_(std::move(name)) {}
  void wait(std::chrono::milliseconds) override { log_.push_back("wait " + name_); }

 private:
  std::vector<std::string>& log_;
  std::string name_;
};

std::size_t position(const std::vector<std::string>& log, const std::string& event) {
  const auto it = std::find(log.begin(), log.end(), event);
  EXPECT_NE(it, log.end()) << event << " never happened";
  return static_cast<std::size_t>(it - log.begin());
}

std::uint8_t byte_of(int rank, std::size_t i) { return static_cast<std::uint8_t>(i * 131 + rank * 17 + i / 251); }

}  // namespace

TEST(ExchangeInPieces, ReceivesArePostedAheadAndSendsArePacedByFinishedPieces) {
  auto world = LoopbackWorld::create(1);
  auto comm = world->communicator(0, std::chrono::seconds(1));
  for (std::size_t pieces : {1u, 2u, 3u, 7u, 12u}) {
    std::vector<std::string> log;
    const auto post = [&](const char* kind) {
      return [&log, kind](std::size_t offset, std::size_t length) {
        const std::string name = fmt::format("{} {}", kind, offset / kExchangePieceBytes);
        EXPECT_EQ(offset % kExchangePieceBytes, 0u);
        EXPECT_GT(length, 0u);
        log.push_back("post " + name);
        return std::vector<RequestPtr>{std::make_shared<Recorded>(log, name)};
      };
    };
    exchange_in_pieces(*comm, (pieces - 1) * kExchangePieceBytes + 5, post("receive"), post("send"));
    ASSERT_EQ(log.size(), 4 * pieces) << "each piece's send and receive posted and waited for once";
    for (std::size_t k = 0; k < pieces; ++k) {
      const std::size_t send_k = position(log, fmt::format("post send {}", k));
      // The receive notices of the next pieces are out before this send.
      for (std::size_t j = k; j < std::min(pieces, k + 1 + kReceivesAhead); ++j) {
        EXPECT_LT(position(log, fmt::format("post receive {}", j)), send_k) << pieces << " pieces, piece " << j;
      }
      // But no send runs ahead of finished pieces: piece k - 2 is through.
      if (k >= kPiecesInFlight) {
        const std::size_t done = k - kPiecesInFlight;
        EXPECT_LT(position(log, fmt::format("wait send {}", done)), send_k) << pieces << " pieces, piece " << k;
        EXPECT_LT(position(log, fmt::format("wait receive {}", done)), send_k) << pieces << " pieces, piece " << k;
      }
    }
  }
}

TEST(NeighbourExchange, ManyPiecesArriveWholeFromBothSides) {
  // Sizes around piece boundaries, and a message of many pieces.
  for (std::size_t bytes : {std::size_t{1}, kExchangePieceBytes, kExchangePieceBytes + 1,
                            (kReceivesAhead + kPiecesInFlight + 3) * kExchangePieceBytes + 77}) {
    for (int n : {2, 3, 4}) {
      testing::run_ranks(n, [&](int rank, Communicator& comm) {
        std::vector<std::uint8_t> mine(bytes), from_left(bytes), from_right(bytes);
        for (std::size_t i = 0; i < bytes; ++i) mine[i] = byte_of(rank, i);
        const int left = (rank + n - 1) % n;
        const int right = (rank + 1) % n;
        neighbour_exchange(comm, left, right, mine.data(), from_left.data(), from_right.data(), bytes, TagBlock(0, 2),
                           0);
        for (std::size_t i = 0; i < bytes; ++i) {
          ASSERT_EQ(from_left[i], byte_of(left, i)) << "n=" << n << " bytes=" << bytes << " i=" << i;
          ASSERT_EQ(from_right[i], byte_of(right, i)) << "n=" << n << " bytes=" << bytes << " i=" << i;
        }
      });
    }
  }
}

}  // namespace bagua
