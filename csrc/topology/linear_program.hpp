// A small dense linear-program solver (two-phase simplex, Bland's rule).
//
// The planners have a handful of variables per rank (chunk shares, a time
// bound) and want the exact optimum, not a heuristic: a multi-ring plan that
// is provably never worse than equal chunks under its cost model. Problems
// are tiny (tens of variables and constraints), so a dense tableau is both
// the simplest and the fastest choice; Bland's rule rules out cycling on the
// degenerate vertices these problems are full of.
#pragma once

#include <vector>

namespace bagua {

// minimize  cost . x   subject to   rows[i] . x <= bounds[i],   x >= 0.
// A ">=" row is written negated; an equality as two rows.
struct LinearProgram {
  std::vector<double> cost;               // one per variable
  std::vector<std::vector<double>> rows;  // each of cost.size() coefficients
  std::vector<double> bounds;             // one per row, any sign
};

struct LinearSolution {
  enum class Status { Optimal, Infeasible, Unbounded };
  Status status = Status::Infeasible;
  std::vector<double> x;  // the optimum when Optimal
  double value = 0;       // cost . x
};

// Exact up to `tolerance` on each pivot. Throws InvalidArgument on
// malformed input (row lengths that do not match the cost vector).
LinearSolution solve(const LinearProgram& lp, double tolerance = 1e-9);

}  // namespace bagua
