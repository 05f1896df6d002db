#include "engine/bucket_plan.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"

namespace bagua {

TEST(BucketPlan, ReverseOrderWithSmallFirstBucket) {
  // Ten 1 KiB fp32 tensors; first cap 2 KiB, then 4 KiB.
  std::vector<TensorInfo> t(10, TensorInfo{256, DType::F32});
  auto plan = plan_buckets(t, {4096, 2048});
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0], (std::vector<std::size_t>{9, 8}));
  EXPECT_EQ(plan[1], (std::vector<std::size_t>{7, 6, 5, 4}));
  EXPECT_EQ(plan[2], (std::vector<std::size_t>{3, 2, 1, 0}));
}

TEST(BucketPlan, SeparatesDtypesAndCoversEveryTensor) {
  std::vector<TensorInfo> t{{100, DType::F32}, {100, DType::F16}, {5, DType::F32}, {1, DType::F16}};
  auto plan = plan_buckets(t, {1 << 20, 1 << 20});
  std::vector<int> seen(t.size(), 0);
  for (const auto& b : plan) {
    for (auto i : b) {
      ++seen[i];
      EXPECT_EQ(t[i].dtype, t[b.front()].dtype);
    }
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_EQ(plan.size(), 2u);
}

TEST(BucketPlan, RejectsZeroCap) { EXPECT_THROW(plan_buckets({}, {0, 1}), InvalidArgument); }

}  // namespace bagua
