// The thread of async_model_average (docs/async_model_average.md). Every `interval` it
// runs one round: the ranks' threads exchange a small record (stop? pause?
// which round?) so that all agree on what this round does and anyone can
// name a peer that went silent; then a snapshot of the weights is averaged
// with the peers of the chosen mode and, under the model lock, the weights
// move by (average - snapshot): the progress training made meanwhile stays.
// Training never waits for the network, only for the two memory passes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "algorithms/async_model_average/model_lock.hpp"
#include "topology/peer_selection.hpp"

namespace bagua {

struct AveragerConfig {
  PeerMode mode = PeerMode::All;
  std::chrono::milliseconds interval{0};
  int world_size = 1;
};

class BackgroundAverager {
 public:
  // Starts the thread, which waits for begin() (or stop()).
  BackgroundAverager(ThreadContext ctx, AveragerConfig config);
  ~BackgroundAverager();
  BackgroundAverager(const BackgroundAverager&) = delete;
  BackgroundAverager& operator=(const BackgroundAverager&) = delete;

  ModelLock& lock();

  // Rounds begin, on these weights (fp32, bf16 or fp16 buckets), which must
  // stay valid until stop() returns. Once; later calls are ignored.
  void begin(const std::vector<BucketView>& weights);
  bool begun() const;

  // abort (paused = true) and resume: collective. Returns once a round on
  // which every rank agreed reflects it (resume: once no rank pauses any
  // more), within `timeout`. Before begin() it only sets the flag.
  void set_paused(bool paused, std::chrono::milliseconds timeout);

  // Ends the thread at the next round, on every rank (a stopping rank tells
  // the others in the round's record). Returns within `deadline`: a thread
  // stuck on a dead peer is abandoned (it never touches the weights again)
  // and left to its own timeout. Idempotent.
  void stop(std::chrono::milliseconds deadline);

  // Throws the error that ended the thread, naming the round, if any.
  void rethrow_failure() const;

  // Training's step count (optimizer steps completed), told after each
  // step: a round's snapshot remembers it.
  void set_training_step(std::uint64_t step);
  // Bounded staleness: returns once the last round whose average landed in
  // the weights took its snapshot at most `max_lag` steps before `step`
  // (at once while paused, before begin, or once the thread has ended).
  // Throws the thread's failure, or a TimeoutError naming the round after
  // `timeout`.
  void wait_for_lag(std::uint64_t step, std::uint64_t max_lag, std::chrono::milliseconds timeout);
  // The step whose snapshot the last average that landed was taken from.
  std::uint64_t averaged_from() const;

  // Rounds completed (equal on every rank once a round has agreed on it).
  std::uint64_t round() const;
  // From a checkpoint: ranks adopt the largest at the next round.
  void set_round(std::uint64_t round);

  // The weights were replaced (a checkpoint was loaded) while the caller
  // holds the lock: the round in flight must not move them by a difference
  // taken from the old ones.
  void weights_replaced();

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace bagua
