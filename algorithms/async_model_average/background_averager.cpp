#include "algorithms/async_model_average/background_averager.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>

#include "collectives/peer_average.hpp"
#include "collectives/tagged_allgather.hpp"
#include "comm/tags.hpp"
#include "core/error.hpp"
#include "core/float16.hpp"

namespace bagua {
namespace {

using Clock = std::chrono::steady_clock;

// What each rank's thread says at the start of a round.
struct Record {
  std::int64_t stop = 0;
  std::int64_t pause = 0;
  std::int64_t request = 0;  // the last abort/resume it has seen
  std::int64_t round = 0;
};

// While paused, rounds only exchange records; no need to do so often.
constexpr std::chrono::milliseconds kPausedPoll{50};
// Tags of a round: the record's, then two per weight bucket.
constexpr Tag kRecordTag = 0;
Tag bucket_tag(std::size_t bucket) { return 1 + static_cast<Tag>(bucket) * kPeerAverageTags; }

void to_float(const BucketView& b, float* out) {
  switch (b.dtype) {
    case DType::F32:
      std::memcpy(out, b.data, b.count * sizeof(float));
      return;
    case DType::BF16: {
      const auto* in = static_cast<const std::uint16_t*>(b.data);
      for (std::size_t k = 0; k < b.count; ++k) out[k] = bf16_to_float(in[k]);
      return;
    }
    case DType::F16: {
      const auto* in = static_cast<const std::uint16_t*>(b.data);
      for (std::size_t k = 0; k < b.count; ++k) out[k] = half_to_float(in[k]);
      return;
    }
    default:
      throw InvalidArgument(fmt::format("async_model_average: weights of {} are not averaged", dtype_name(b.dtype)));
  }
}

// weights += delta, in the weights' own precision.
void add_into(const BucketView& b, const float* delta) {
  switch (b.dtype) {
    case DType::F32: {
      auto* x = static_cast<float*>(b.data);
      for (std::size_t k = 0; k < b.count; ++k) x[k] += delta[k];
      return;
    }
    case DType::BF16: {
      auto* x = static_cast<std::uint16_t*>(b.data);
      for (std::size_t k = 0; k < b.count; ++k) x[k] = float_to_bf16(bf16_to_float(x[k]) + delta[k]);
      return;
    }
    case DType::F16: {
      auto* x = static_cast<std::uint16_t*>(b.data);
      for (std::size_t k = 0; k < b.count; ++k) x[k] = float_to_half(half_to_float(x[k]) + delta[k]);
      return;
    }
    default:
      throw InvalidArgument(fmt::format("async_model_average: weights of {} are not averaged", dtype_name(b.dtype)));
  }
}

}  // namespace

struct BackgroundAverager::State {
  CommunicatorPtr comm;
  TagSource tags;
  AveragerConfig config;
  std::vector<int> members;
  ModelLock lock;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<BucketView> weights;
  bool begun = false;
  bool want_stop = false;
  bool want_pause = false;
  std::int64_t request = 0;  // abort/resume calls so far
  std::int64_t acked = 0;    // the last of them a round has carried
  bool paused = false;       // what the last round agreed
  std::vector<int> pausing;  // the ranks that asked for it
  std::uint64_t round = 0;
  bool exited = false;
  std::string failure;
  std::atomic<std::uint64_t> generation{0};  // of the weights' contents
  // Training's completed steps, and those at the snapshot of the last
  // average that landed (or of the weights' start: begin, a load).
  std::atomic<std::uint64_t> training_step{0};
  std::uint64_t averaged_at = 0;
  // Set by a load until training tells its step again: meanwhile
  // training_step is the old run's, and a snapshot cannot say its step.
  std::atomic<bool> restart_lag{false};

  // Touched by the thread only (and kept alive by it: receives that a dead
  // peer never completed may still name them).
  std::vector<Record> table;
  std::vector<std::vector<float>> snapshot, average, scratch;

  State(ThreadContext ctx, AveragerConfig c)
      : comm(std::move(ctx.comm)), tags(ctx.tags), config(c), members(c.world_size), table(c.world_size) {
    std::iota(members.begin(), members.end(), 0);
  }

  void run();
  // One averaging of the weights; false when the weights were abandoned.
  // `landed_from`: the training step of the snapshot whose average moved
  // the weights (none when a loaded checkpoint had replaced them).
  bool average_once(std::uint64_t round, const TagBlock& tags, std::optional<std::uint64_t>& landed_from);
};

void BackgroundAverager::State::run() {
  std::uint64_t current = 0;
  try {
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return begun || want_stop; });
      if (!begun) {
        exited = true;
        cv.notify_all();
        return;
      }
    }
    auto next = Clock::now();
    for (;;) {
      Record mine;
      {
        std::unique_lock lk(mu);
        // An abort, resume or stop starts the next round at once.
        cv.wait_until(lk, next, [&] { return want_stop || request != acked; });
        mine = Record{want_stop, want_pause, request, static_cast<std::int64_t>(round)};
        current = round;
      }
      const TagBlock round_tags = tags.next();
      tagged_allgather(*comm, members, &mine, table.data(), sizeof(Record), round_tags[kRecordTag]);
      bool stop = false;
      std::vector<int> pausing_now;
      std::int64_t agreed_round = 0;
      for (std::size_t r = 0; r < table.size(); ++r) {
        stop = stop || table[r].stop != 0;
        if (table[r].pause != 0) pausing_now.push_back(static_cast<int>(r));
        agreed_round = std::max(agreed_round, table[r].round);
      }
      current = static_cast<std::uint64_t>(agreed_round);
      {
        std::lock_guard lk(mu);
        acked = mine.request;
        paused = !pausing_now.empty();
        pausing = pausing_now;
        round = current;
        cv.notify_all();
      }
      if (stop) break;
      const auto started = Clock::now();
      if (!pausing_now.empty()) {
        next = started + std::max(config.interval, kPausedPoll);
        continue;
      }
      next = started + config.interval;
      std::optional<std::uint64_t> landed_from;
      if (!average_once(current, round_tags, landed_from)) break;
      std::lock_guard lk(mu);
      round = current + 1;
      if (landed_from) averaged_at = std::max(averaged_at, *landed_from);
      cv.notify_all();
    }
  } catch (const std::exception& e) {
    std::lock_guard lk(mu);
    failure = fmt::format("async_model_average: background round {} failed: {}", current, e.what());
  }
  std::lock_guard lk(mu);
  exited = true;
  cv.notify_all();
}

bool BackgroundAverager::State::average_once(std::uint64_t round_number, const TagBlock& round_tags,
                                             std::optional<std::uint64_t>& landed_from) {
  std::uint64_t taken_at = 0;
  std::optional<std::uint64_t> snapshot_step;
  const bool took = lock.run_exclusive([&] {
    taken_at = generation.load();
    if (!restart_lag.load()) snapshot_step = training_step.load();
    for (std::size_t b = 0; b < weights.size(); ++b) to_float(weights[b], snapshot[b].data());
  });
  if (!took) return false;
  for (std::size_t b = 0; b < weights.size(); ++b) {
    const std::size_t n = snapshot[b].size();
    peer_average(*comm, members, config.mode, round_number, snapshot[b].data(), average[b].data(),
                 scratch[b].data(), n, DType::F32, round_tags, bucket_tag(b));
    float* delta = average[b].data();
    const float* snap = snapshot[b].data();
    for (std::size_t k = 0; k < n; ++k) delta[k] -= snap[k];
  }
  return lock.run_exclusive([&] {
    // A checkpoint loaded since the snapshot: its weights are not the ones
    // this difference was taken from.
    if (generation.load() != taken_at) return;
    for (std::size_t b = 0; b < weights.size(); ++b) add_into(weights[b], average[b].data());
    landed_from = snapshot_step;
  });
}

BackgroundAverager::BackgroundAverager(ThreadContext ctx, AveragerConfig config)
    : state_(std::make_shared<State>(std::move(ctx), config)) {
  check_peer_mode(config.mode, config.world_size);
  // The thread holds the state: abandoned, it still has valid memory.
  thread_ = std::thread([state = state_] { state->run(); });
}

BackgroundAverager::~BackgroundAverager() {
  try {
    stop(state_->comm->timeout());
  } catch (...) {
    // A destructor cannot report; stop() is bounded either way.
  }
}

ModelLock& BackgroundAverager::lock() { return state_->lock; }

void BackgroundAverager::begin(const std::vector<BucketView>& weights) {
  std::lock_guard lk(state_->mu);
  if (state_->begun) return;
  if (bucket_tag(weights.size()) > tags::kPerOperation) {
    throw InvalidArgument(fmt::format("async_model_average: {} weight buckets are more than a round has tags for",
                                      weights.size()));
  }
  State& s = *state_;
  s.weights = weights;
  s.snapshot.assign(weights.size(), {});
  s.average.assign(weights.size(), {});
  s.scratch.assign(weights.size(), {});
  for (std::size_t b = 0; b < weights.size(); ++b) {
    const DType t = weights[b].dtype;
    if (t != DType::F32 && t != DType::BF16 && t != DType::F16) {
      throw InvalidArgument(fmt::format(
          "async_model_average: weight bucket {} holds {}; it averages fp32, bf16 and fp16 weights", b,
          dtype_name(t)));
    }
    s.snapshot[b].assign(weights[b].count, 0.0f);
    s.average[b].assign(weights[b].count, 0.0f);
    if (s.config.mode == PeerMode::Ring) s.scratch[b].assign(weights[b].count, 0.0f);
  }
  s.averaged_at = s.training_step.load();  // every rank starts from the same weights
  s.begun = true;
  s.cv.notify_all();
}

bool BackgroundAverager::begun() const {
  std::lock_guard lk(state_->mu);
  return state_->begun;
}

void BackgroundAverager::set_paused(bool paused, std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock lk(s.mu);
  if (s.exited) {
    if (!s.failure.empty()) throw Error(s.failure);
    return;  // nothing averages any more: consistent already
  }
  s.want_pause = paused;
  const std::int64_t mine = ++s.request;
  s.cv.notify_all();
  if (!s.begun) return;  // the first round carries it
  const bool done = s.cv.wait_for(lk, timeout, [&] { return s.exited || (s.acked >= mine && s.paused == paused); });
  if (!s.failure.empty()) throw Error(s.failure);
  if (!done) {
    throw TimeoutError(
        paused ? fmt::format("async_model_average: abort did not take effect within {} ms (the background round "
                             "in flight did not finish)", timeout.count())
               : fmt::format("async_model_average: resume did not take effect within {} ms: rank(s) {} still "
                             "abort averaging; resume is collective, every rank must call it",
                             timeout.count(), fmt::join(s.pausing, ", ")));
  }
}

void BackgroundAverager::stop(std::chrono::milliseconds deadline) {
  State& s = *state_;
  {
    std::unique_lock lk(s.mu);
    s.want_stop = true;
    s.cv.notify_all();
  }
  if (!thread_.joinable()) return;
  // The training hold would keep the round in flight from finishing.
  s.lock.release_training();
  bool exited = false;
  {
    std::unique_lock lk(s.mu);
    exited = s.cv.wait_for(lk, deadline, [&] { return s.exited; });
  }
  if (exited) {
    thread_.join();
  } else {
    s.lock.abandon();
    thread_.detach();
  }
}

void BackgroundAverager::rethrow_failure() const {
  std::lock_guard lk(state_->mu);
  if (!state_->failure.empty()) throw Error(state_->failure);
}

void BackgroundAverager::set_training_step(std::uint64_t step) {
  std::lock_guard lk(state_->mu);
  state_->training_step = step;
  if (state_->restart_lag) {
    state_->averaged_at = step;
    state_->restart_lag = false;
  }
}

void BackgroundAverager::wait_for_lag(std::uint64_t step, std::uint64_t max_lag, std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock lk(s.mu);
  // Paused (or about to be), no round averages: waiting would never end.
  const auto free = [&] {
    return !s.begun || s.exited || s.want_stop || s.paused || s.want_pause || !s.failure.empty() ||
           step <= s.averaged_at || step - s.averaged_at <= max_lag;
  };
  const bool done = s.cv.wait_for(lk, timeout, free);
  if (!s.failure.empty()) throw Error(s.failure);
  if (!done) {
    throw TimeoutError(fmt::format(
        "rank {}: async_model_average:max_lag={}: at step {} the weights were last averaged from step {}'s, and no "
        "round (now round {}) averaged them within {} ms; a peer is slow or gone",
        s.comm->rank(), max_lag, step, s.averaged_at, s.round, timeout.count()));
  }
}

std::uint64_t BackgroundAverager::averaged_from() const {
  std::lock_guard lk(state_->mu);
  return state_->averaged_at;
}

std::uint64_t BackgroundAverager::round() const {
  std::lock_guard lk(state_->mu);
  return state_->round;
}

void BackgroundAverager::set_round(std::uint64_t round) {
  std::lock_guard lk(state_->mu);
  state_->round = round;
}

void BackgroundAverager::weights_replaced() {
  ++state_->generation;
  // Loaded weights count as just averaged: the lag starts again from them,
  // at the step the checkpoint brings (told with the next step).
  std::lock_guard lk(state_->mu);
  state_->restart_lag = true;
}

}  // namespace bagua
