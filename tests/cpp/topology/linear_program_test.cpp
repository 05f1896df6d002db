#include "topology/linear_program.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"

namespace bagua {
namespace {

using Status = LinearSolution::Status;

TEST(LinearProgram, FindsTheOptimalVertex) {
  // max x + y  s.t.  x + 2y <= 4,  3x + y <= 6: the corner (1.6, 1.2).
  const LinearSolution s = solve({{-1, -1}, {{1, 2}, {3, 1}}, {4, 6}});
  ASSERT_EQ(s.status, Status::Optimal);
  EXPECT_NEAR(s.x[0], 1.6, 1e-12);
  EXPECT_NEAR(s.x[1], 1.2, 1e-12);
  EXPECT_NEAR(s.value, -2.8, 1e-12);
}

TEST(LinearProgram, GreaterOrEqualRowsNeedPhaseOne) {
  // min 2x + y  s.t.  x + y >= 3,  x >= 1 (written negated): (1, 2).
  const LinearSolution s = solve({{2, 1}, {{-1, -1}, {-1, 0}}, {-3, -1}});
  ASSERT_EQ(s.status, Status::Optimal);
  EXPECT_NEAR(s.x[0], 1.0, 1e-12);
  EXPECT_NEAR(s.x[1], 2.0, 1e-12);
  EXPECT_NEAR(s.value, 4.0, 1e-12);
}

TEST(LinearProgram, EqualityAsTwoRows) {
  // min x - y  s.t.  x + y = 2,  y <= 1.5: (0.5, 1.5).
  const LinearSolution s = solve({{1, -1}, {{1, 1}, {-1, -1}, {0, 1}}, {2, -2, 1.5}});
  ASSERT_EQ(s.status, Status::Optimal);
  EXPECT_NEAR(s.x[0], 0.5, 1e-12);
  EXPECT_NEAR(s.x[1], 1.5, 1e-12);
}

TEST(LinearProgram, ReportsInfeasibleAndUnbounded) {
  EXPECT_EQ(solve({{1}, {{1}, {-1}}, {1, -2}}).status, Status::Infeasible);  // x <= 1 and x >= 2
  EXPECT_EQ(solve({{-1, 0}, {{1, -1}}, {1}}).status, Status::Unbounded);     // x - y <= 1, x unbounded
}

TEST(LinearProgram, TerminatesOnBealesCyclingExample) {
  // The classic problem on which the largest-coefficient rule cycles
  // forever; Bland's rule must reach the optimum -5/4.
  const LinearProgram lp{{-0.75, 20, -0.5, 6},
                         {{0.25, -8, -1, 9}, {0.5, -12, -0.5, 3}, {0, 0, 1, 0}},
                         {0, 0, 1}};
  const LinearSolution s = solve(lp);
  ASSERT_EQ(s.status, Status::Optimal);
  EXPECT_NEAR(s.value, -1.25, 1e-12);
}

TEST(LinearProgram, RejectsRowsOfTheWrongLength) {
  EXPECT_THROW(solve({{1, 1}, {{1}}, {1}}), InvalidArgument);
  EXPECT_THROW(solve({{1}, {{1}}, {}}), InvalidArgument);
}

}  // namespace
}  // namespace bagua
