// The async_model_average thread on loopback ranks: what a round computes,
// that no update is lost beside a training loop that holds the model lock
// across its read-modify-write, abort/resume agreement, and that a dead peer
// is a named error and never a hang.
#include "algorithms/async_model_average/background_averager.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <latch>
#include <string>
#include <thread>

#include "comm/loopback_communicator.hpp"
#include "comm/tags.hpp"
#include "core/error.hpp"
#include "core/float16.hpp"

namespace bagua {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kCount = 1001;  // odd

float initial(int rank, std::size_t i) { return std::sin(0.1f * static_cast<float>(i) + rank) * (rank + 1); }

ThreadContext context_of(const std::shared_ptr<LoopbackWorld>& world, int rank, std::chrono::milliseconds timeout) {
  return ThreadContext{world->communicator(rank, timeout),
                       TagSource(tags::kAlgorithmThreadBase, tags::kSpan, tags::kPerOperation), timeout};
}

BucketView view_of(std::vector<float>& w) { return BucketView{0, BucketRole::Weights, w.data(), w.size(), DType::F32}; }

// Runs body(rank) on n threads; rethrows the first failure.
void on_ranks(int n, const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Arrives at a latch when it goes out of scope, however the rank's body
// ends: a rank that threw must not leave its peers waiting there forever.
struct ArriveOnExit {
  std::latch& latch;
  bool arrived = false;
  void now() {
    if (!arrived) latch.arrive_and_wait();
    arrived = true;
  }
  ~ArriveOnExit() {
    if (!arrived) latch.count_down();
  }
};

void wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "the background thread made no progress";
    std::this_thread::sleep_for(1ms);
  }
}

}  // namespace

TEST(BackgroundAverager, AllModeGivesEveryRankTheMean) {
  const int n = 4;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<float>> w(n, std::vector<float>(kCount));
  for (int r = 0; r < n; ++r) {
    for (std::size_t i = 0; i < kCount; ++i) w[r][i] = initial(r, i);
  }
  on_ranks(n, [&](int rank) {
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::All, 0ms, n});
    avg.begin({view_of(w[rank])});
    wait_until([&] { return avg.round() >= 2; });
    avg.stop(10s);
    avg.rethrow_failure();
  });
  // Nothing trained meanwhile: one round already makes x the mean.
  for (std::size_t i = 0; i < kCount; ++i) {
    double mean = 0;
    for (int r = 0; r < n; ++r) mean += initial(r, i);
    mean /= n;
    for (int r = 0; r < n; ++r) ASSERT_NEAR(w[r][i], mean, 1e-5) << "rank " << r << " i " << i;
  }
}

TEST(BackgroundAverager, NoUpdateIsLostBesideATrainingLoop) {
  // Each rank's "optimizer" reads the weights, waits, and writes them back
  // moved by its own step, holding the lock across all of it (as the
  // wrapper does from forward to the end of optimizer.step). Averaging keeps
  // the sum over ranks, so at the end the sum must be the initial sum plus
  // every step of every rank: an update applied inside the read-modify-write
  // would be overwritten and break it. Every mode, with bf16 too.
  for (PeerMode mode : {PeerMode::All, PeerMode::ShiftOne, PeerMode::Ring}) {
    const int n = 4;
    auto world = LoopbackWorld::create(n);
    std::vector<std::vector<float>> w(n, std::vector<float>(kCount));
    std::vector<std::vector<double>> stepped(n, std::vector<double>(kCount, 0.0));
    for (int r = 0; r < n; ++r) {
      for (std::size_t i = 0; i < kCount; ++i) w[r][i] = initial(r, i);
    }
    std::vector<std::uint64_t> rounds(n);
    on_ranks(n, [&](int rank) {
      BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{mode, 0ms, n});
      avg.begin({view_of(w[rank])});
      std::vector<float> read(kCount);
      for (int step = 0; step < 40 || avg.round() < 5; ++step) {
        avg.lock().hold_for_training(10s);
        read = w[rank];
        std::this_thread::sleep_for(1ms);
        for (std::size_t i = 0; i < kCount; ++i) {
          const float delta = 0.01f * static_cast<float>(rank + 1) * std::cos(0.3f * static_cast<float>(i + step));
          w[rank][i] = read[i] + delta;
          stepped[rank][i] += static_cast<double>(w[rank][i]) - read[i];
        }
        avg.lock().release_training();
      }
      avg.stop(10s);
      avg.rethrow_failure();
      rounds[rank] = avg.round();
    });
    for (int r = 1; r < n; ++r) EXPECT_EQ(rounds[r], rounds[0]) << peer_mode_name(mode);
    for (std::size_t i = 0; i < kCount; ++i) {
      double want = 0, got = 0;
      for (int r = 0; r < n; ++r) {
        want += initial(r, i) + stepped[r][i];
        got += w[r][i];
      }
      ASSERT_NEAR(got, want, 1e-4) << peer_mode_name(mode) << " i " << i;
    }
  }
}

TEST(BackgroundAverager, MaxLagWaitsForAnAverageFromARecentSnapshot) {
  // Rounds start 100 ms apart while a "step" takes nothing: each wait must
  // end with weights averaged from at most 2 steps before. Aborted, nothing
  // waits; with no round coming, the wait is a TimeoutError that says so.
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<float>> w(n, std::vector<float>(kCount, 1.0f));
  std::vector<std::string> errors(n);
  // A rank that pauses or stops ends its peers' waits too (rightly: no
  // round would come); the ranks finish training together before either.
  std::latch trained(n);
  on_ranks(n, [&](int rank) {
    ArriveOnExit trained_here{trained};
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::All, 100ms, n});
    avg.set_training_step(0);
    avg.begin({view_of(w[rank])});
    for (std::uint64_t step = 0; step < 9; ++step) {
      avg.wait_for_lag(step, 2, 10s);  // the forward pre-hook
      EXPECT_LE(step, avg.averaged_from() + 2) << "rank " << rank;
      avg.lock().hold_for_training(10s);
      avg.set_training_step(step + 1);  // the optimizer step
      avg.lock().release_training();
    }
    trained_here.now();
    EXPECT_GE(avg.round(), 2u);
    avg.set_paused(true, 10s);
    EXPECT_NO_THROW(avg.wait_for_lag(1000, 1, 1s));
    avg.stop(10s);
    avg.rethrow_failure();
  });
  auto quiet = LoopbackWorld::create(n);
  on_ranks(n, [&](int rank) {
    BackgroundAverager avg(context_of(quiet, rank, 10s), AveragerConfig{PeerMode::All, 60s, n});
    avg.set_training_step(0);
    avg.begin({view_of(w[rank])});
    wait_until([&] { return avg.round() >= 1; });  // the first round, from step 0
    avg.set_training_step(10);
    try {
      avg.wait_for_lag(10, 2, 200ms);
    } catch (const TimeoutError& e) {
      errors[rank] = e.what();
    }
    avg.stop(10s);
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_NE(errors[r].find("max_lag=2: at step 10 the weights were last averaged from step 0"), std::string::npos)
        << errors[r];
  }
}

TEST(BackgroundAverager, MaxLagStartsAgainFromALoadedCheckpointsStep) {
  // Trained to step 20, then a checkpoint of step 5 is loaded: rounds that
  // snapshot before training tells its new step must not count as averages
  // from step 20, or the bound would be off until step 22.
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<float>> w(n, std::vector<float>(kCount, 1.0f));
  std::latch trained(n);  // a rank that stops early would end its peer's waits
  on_ranks(n, [&](int rank) {
    ArriveOnExit trained_here{trained};
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::All, 1ms, n});
    avg.set_training_step(0);
    avg.begin({view_of(w[rank])});
    for (std::uint64_t step = 0; step < 20; ++step) {
      avg.wait_for_lag(step, 2, 10s);
      avg.set_training_step(step + 1);
    }
    wait_until([&] { return avg.averaged_from() == 20; });
    avg.lock().hold_for_checkpoint(10s);
    avg.weights_replaced();
    avg.lock().release_checkpoint();
    const std::uint64_t rounds = avg.round();
    wait_until([&] { return avg.round() >= rounds + 3; });  // rounds while the old step is all there is
    for (std::uint64_t step = 5; step < 12; ++step) {
      avg.set_training_step(step);  // the forward pre-hook: the first tells the loaded step
      avg.wait_for_lag(step, 2, 10s);
      EXPECT_LE(avg.averaged_from(), step) << "an average from the old run's step counted";
      EXPECT_LE(step, avg.averaged_from() + 2);
      avg.set_training_step(step + 1);
    }
    trained_here.now();
    avg.stop(10s);
    avg.rethrow_failure();
  });
}

TEST(BackgroundAverager, Bfloat16WeightsMoveTowardsTheMean) {
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<std::uint16_t>> w(n, std::vector<std::uint16_t>(kCount));
  for (int r = 0; r < n; ++r) {
    for (std::size_t i = 0; i < kCount; ++i) w[r][i] = float_to_bf16(initial(r, i));
  }
  on_ranks(n, [&](int rank) {
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::All, 0ms, n});
    avg.begin({BucketView{0, BucketRole::Weights, w[rank].data(), kCount, DType::BF16}});
    wait_until([&] { return avg.round() >= 1; });
    avg.stop(10s);
  });
  for (std::size_t i = 0; i < kCount; ++i) {
    const float mean = (bf16_to_float(float_to_bf16(initial(0, i))) + bf16_to_float(float_to_bf16(initial(1, i)))) / 2;
    for (int r = 0; r < n; ++r) ASSERT_NEAR(bf16_to_float(w[r][i]), mean, 0.02f * (std::fabs(mean) + 1));
  }
}

TEST(BackgroundAverager, AbortIsAgreedIdempotentAndResumeContinues) {
  const int n = 4;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<float>> w(n, std::vector<float>(kCount));
  std::vector<std::uint64_t> at_abort(n);
  std::vector<std::vector<float>> frozen(n);
  on_ranks(n, [&](int rank) {
    for (std::size_t i = 0; i < kCount; ++i) w[rank][i] = initial(rank, i);
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::Ring, 1ms, n});
    avg.begin({view_of(w[rank])});
    wait_until([&] { return avg.round() >= 2; });
    avg.set_paused(true, 10s);
    avg.set_paused(true, 10s);  // idempotent
    at_abort[rank] = avg.round();
    frozen[rank] = w[rank];
    // Paused rounds still run (records only): no weight moves.
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(avg.round(), at_abort[rank]);
    EXPECT_EQ(w[rank], frozen[rank]);
    avg.set_paused(false, 10s);
    avg.set_paused(false, 10s);
    wait_until([&] { return avg.round() >= at_abort[rank] + 2; });
    avg.stop(10s);
    avg.rethrow_failure();
  });
  for (int r = 1; r < n; ++r) EXPECT_EQ(at_abort[r], at_abort[0]);
}

TEST(BackgroundAverager, AResumeOthersDoNotJoinNamesThem) {
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<std::vector<float>> w(n, std::vector<float>(kCount, 1.0f));
  std::string error;
  std::atomic<int> aborted{0};
  std::atomic<bool> tried{false};
  on_ranks(n, [&](int rank) {
    BackgroundAverager avg(context_of(world, rank, 10s), AveragerConfig{PeerMode::All, 1ms, n});
    avg.begin({view_of(w[rank])});
    avg.set_paused(true, 10s);
    ++aborted;
    wait_until([&] { return aborted.load() == n; });
    if (rank == 0) {
      try {
        avg.set_paused(false, 300ms);  // rank 1 stays aborted
      } catch (const TimeoutError& e) {
        error = e.what();
      }
      tried = true;
    } else {
      wait_until([&] { return tried.load(); });  // stopping would end rank 0's wait
    }
    avg.stop(10s);
  });
  EXPECT_NE(error.find("rank(s) 1 still abort"), std::string::npos) << error;
}

TEST(BackgroundAverager, ADeadPeerIsANamedErrorAndStopIsBounded) {
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<float> w(kCount, 1.0f);
  // Rank 1 never runs a thread: rank 0's first round has no record from it.
  BackgroundAverager avg(context_of(world, 0, 200ms), AveragerConfig{PeerMode::All, 0ms, n});
  avg.begin({view_of(w)});
  std::string error;
  wait_until([&] {
    try {
      avg.rethrow_failure();
      return false;
    } catch (const Error& e) {
      error = e.what();
      return true;
    }
  });
  EXPECT_NE(error.find("background round 0"), std::string::npos) << error;
  EXPECT_NE(error.find("rank 1"), std::string::npos) << error;
  EXPECT_THROW(avg.set_paused(true, 1s), Error);  // the failure, not a wait
  avg.stop(1s);
  avg.stop(1s);  // idempotent
}

TEST(BackgroundAverager, StopAbandonsAThreadStuckOnASilentPeer) {
  // The communicator waits 5 s; stop may take 100 ms. It returns after its
  // deadline, the thread abandoned: the weights are never touched again.
  const int n = 2;
  auto world = LoopbackWorld::create(n);
  std::vector<float> w(kCount, 1.0f);
  auto avg = std::make_unique<BackgroundAverager>(context_of(world, 0, 5s), AveragerConfig{PeerMode::All, 0ms, n});
  avg->begin({view_of(w)});
  std::this_thread::sleep_for(20ms);  // into its first round (either way stop must return)
  const auto before = std::chrono::steady_clock::now();
  avg->stop(100ms);
  EXPECT_LT(std::chrono::steady_clock::now() - before, 10s);
  avg.reset();
  world->kill(1);
}

TEST(BackgroundAverager, StopBeforeBeginAndAnOddShiftOne) {
  auto world = LoopbackWorld::create(1);
  BackgroundAverager avg(context_of(world, 0, 1s), AveragerConfig{PeerMode::All, 0ms, 1});
  avg.stop(1s);
  EXPECT_THROW(BackgroundAverager(context_of(LoopbackWorld::create(3), 0, 1s), AveragerConfig{PeerMode::ShiftOne, 0ms, 3}),
               InvalidArgument);
}

}  // namespace bagua
