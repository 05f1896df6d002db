#include "core/reduce_op.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace bagua {

TEST(ReduceInto, FloatOps) {
  std::vector<float> a{1, -2, 3, NAN}, b{4, 5, -6, 1};
  auto run = [&](ReduceOp op) {
    auto d = a;
    reduce_into(d.data(), b.data(), d.size(), DType::F32, op);
    return d;
  };
  EXPECT_EQ(run(ReduceOp::Sum)[0], 5);
  EXPECT_EQ(run(ReduceOp::Product)[1], -10);
  EXPECT_EQ(run(ReduceOp::Min)[2], -6);
  EXPECT_EQ(run(ReduceOp::Max)[0], 4);
  EXPECT_TRUE(std::isnan(run(ReduceOp::Min)[3]));  // NaN propagates
  EXPECT_TRUE(std::isnan(run(ReduceOp::Max)[3]));
}

TEST(ReduceInto, IntegersAndAverage) {
  std::vector<std::int64_t> a{7, -7, 100}, b{2, 2, 1};
  reduce_into(a.data(), b.data(), 3, DType::I64, ReduceOp::Avg);
  finish_average(a.data(), 3, DType::I64, 2);
  EXPECT_EQ(a, (std::vector<std::int64_t>{4, -2, 50}));  // truncating division
}

TEST(ReduceInto, HalfAccumulatesInFloat) {
  // 2048 + 1 is not representable in fp16; the fp32 sum rounds once, to even.
  std::vector<std::uint16_t> a{float_to_half(2048.f)}, b{float_to_half(1.f)};
  reduce_into(a.data(), b.data(), 1, DType::F16, ReduceOp::Sum);
  EXPECT_EQ(half_to_float(a[0]), 2048.f);
  std::vector<std::uint16_t> c{float_to_bf16(3.f)}, d{float_to_bf16(5.f)};
  reduce_into(c.data(), d.data(), 1, DType::BF16, ReduceOp::Avg);
  finish_average(c.data(), 1, DType::BF16, 2);
  EXPECT_EQ(bf16_to_float(c[0]), 4.f);
}

TEST(FinishAverage, RejectsNonPositiveDivisor) {
  float x = 1;
  EXPECT_THROW(finish_average(&x, 1, DType::F32, 0), std::exception);
}

}  // namespace bagua
