#include "comm/comm_thread.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace bagua {

TEST(CommThread, RunsJobsInSubmissionOrder) {
  std::vector<int> order;
  {
    CommThread thread;
    std::promise<void> done;
    for (int i = 0; i < 10; ++i) thread.submit([&order, i] { order.push_back(i); });
    thread.submit([&done] { done.set_value(); });
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// Someone may be waiting on a queued job (a Work handle, a watchdog ticket):
// shutting down must tell them, or they would wait forever.
TEST(CommThread, ShutdownReportsEveryQueuedJobAsDropped) {
  std::atomic<int> ran{0}, dropped{0}, first_ran{0};
  {
    CommThread thread;
    std::promise<void> started;
    thread.submit([&] {
      started.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      ++first_ran;
    }, [&] { ++dropped; });
    ASSERT_EQ(started.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
    for (int i = 0; i < 3; ++i) thread.submit([&] { ++ran; }, [&] { ++dropped; });
  }
  EXPECT_EQ(first_ran.load(), 1);  // the running job finishes
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(dropped.load(), 3);
}

// A job's captures may take another lock when they die (the last reference
// to a tensor takes Python's GIL), while the thread holding that lock
// submits the next job. The comm thread must not hold its queue's lock as
// the job dies, or neither thread moves (seen as a hung benchmark).
TEST(CommThread, AJobDiesOutsideTheQueueLock) {
  std::mutex gil;  // stands for Python's GIL
  struct TakesGilWhenDying {
    std::mutex* gil;
    ~TakesGilWhenDying() { std::lock_guard hold(*gil); }
  };
  CommThread thread;
  std::promise<void> ran, second;
  auto result = std::async(std::launch::async, [&] {
    std::unique_lock hold(gil);
    // The job holds the only reference: it dies with the job, on the comm thread.
    std::shared_ptr<TakesGilWhenDying> capture(new TakesGilWhenDying{&gil});  // no temporary to die here
    thread.submit([capture = std::move(capture), &ran] { ran.set_value(); });
    ran.get_future().wait();
    // Give the comm thread time to reach the job's destruction, which
    // waits for `gil`; this submit must still get the queue's lock.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    thread.submit([&second] { second.set_value(); });
    hold.unlock();
    return second.get_future().wait_for(std::chrono::seconds(10));
  });
  if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    // Deadlocked threads cannot be joined: report and stop here.
    std::fprintf(stderr, "CommThread.AJobDiesOutsideTheQueueLock: deadlock\n");
    std::_Exit(1);
  }
  EXPECT_EQ(result.get(), std::future_status::ready);
}

// At interpreter exit the bindings wait until every thread has destroyed
// the jobs it finished: what a job captured (a tensor) must not die on that
// thread once Python has stopped handing out its GIL.
TEST(CommThread, SettleWaitsUntilFinishedJobsAreDestroyed) {
  CommThread a, b;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto held_a = std::make_shared<int>(1), held_b = std::make_shared<int>(2);
  std::weak_ptr<int> watch_a = held_a, watch_b = held_b;
  a.submit([held_a = std::move(held_a), released] { released.wait(); });
  b.submit([held_b = std::move(held_b)] {});
  // Thread a is still inside its job: settling must say it did not finish.
  EXPECT_FALSE(CommThread::settle_all(std::chrono::milliseconds(50)));
  release.set_value();
  EXPECT_TRUE(CommThread::settle_all(std::chrono::seconds(10)));
  EXPECT_TRUE(watch_a.expired());
  EXPECT_TRUE(watch_b.expired());
}

}  // namespace bagua
