#include "engine/comm_thread.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
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

}  // namespace bagua
