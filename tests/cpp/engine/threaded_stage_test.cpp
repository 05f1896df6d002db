// ThreadedStage: copies run later, on the stage's thread, in call order.
#include "engine/threaded_stage.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.hpp"

namespace bagua {
using namespace std::chrono_literals;

TEST(ThreadedStage, CopiesRunLaterInCallOrder) {
  ThreadedStage stage({.copy_out = 30ms, .copy_in = 30ms});
  std::vector<float> device{1, 2, 3}, host(3, -1.0f);
  auto out = stage.copy_out(device.data(), host.data(), 3 * sizeof(float), stage.record(0), nullptr);
  // Queued behind the copy out: it must see the value the copy out read.
  device[0] = 7;
  auto in = stage.copy_in(host.data(), device.data(), 3 * sizeof(float), nullptr);
  ASSERT_TRUE(in->wait_for(5s));
  EXPECT_TRUE(out->wait_for(0ms));  // reached before the later copy's point
  EXPECT_EQ(host, (std::vector<float>{7, 2, 3}));
  EXPECT_EQ(device, (std::vector<float>{7, 2, 3}));
  EXPECT_EQ(stage.copies_out(), 1u);
  EXPECT_EQ(stage.copies_in(), 1u);
}

TEST(ThreadedStage, ACopyNotDoneInTimeIsATimeoutNamingIt) {
  ThreadedStage stage({.copy_out = 500ms});
  std::vector<float> device{1}, host{0};
  auto out = stage.copy_out(device.data(), host.data(), sizeof(float), nullptr, nullptr);
  try {
    stage.order_before(out, 0, 10ms, "bucket 3");
    FAIL() << "order_before returned before the copy";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("bucket 3: the threaded copy did not finish within 10 ms"), std::string::npos)
        << e.what();
  }
  stage.order_before(out, 0, 5s, "bucket 3");  // blocks until it is there
  EXPECT_EQ(host[0], 1.0f);
}

}  // namespace bagua
