#include "topology/linear_program.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstddef>

#include "core/error.hpp"

namespace bagua {
namespace {

// The tableau of  minimize c.x  s.t.  A x + s = b  (rows with b < 0 negated
// and given an artificial variable): columns are the n variables, the m
// slacks, the artificials, then the right-hand side. `objective` holds the
// reduced costs and, in its last entry, minus the objective's value.
class Tableau {
 public:
  Tableau(const LinearProgram& lp, double tolerance) : n_(lp.cost.size()), m_(lp.rows.size()), tol_(tolerance) {
    std::vector<std::size_t> negative;
    for (std::size_t i = 0; i < m_; ++i) {
      if (lp.bounds[i] < 0) negative.push_back(i);
    }
    artificial_begin_ = n_ + m_;
    columns_ = artificial_begin_ + negative.size();
    cells_.assign(m_, std::vector<double>(columns_ + 1, 0.0));
    basis_.assign(m_, 0);
    std::size_t next_artificial = artificial_begin_;
    for (std::size_t i = 0; i < m_; ++i) {
      const double sign = lp.bounds[i] < 0 ? -1.0 : 1.0;
      for (std::size_t j = 0; j < n_; ++j) cells_[i][j] = sign * lp.rows[i][j];
      cells_[i][n_ + i] = sign;
      cells_[i][columns_] = sign * lp.bounds[i];
      if (sign < 0) {
        cells_[i][next_artificial] = 1.0;
        basis_[i] = next_artificial++;
      } else {
        basis_[i] = n_ + i;
      }
    }
  }

  bool has_artificials() const { return columns_ > artificial_begin_; }

  // Phase one: minimize the sum of the artificials. False when it cannot
  // reach zero (no x satisfies the constraints).
  bool find_feasible() {
    objective_.assign(columns_ + 1, 0.0);
    for (std::size_t i = 0; i < m_; ++i) {
      if (!is_artificial(basis_[i])) continue;
      for (std::size_t j = 0; j <= columns_; ++j) {
        if (!is_artificial(j)) objective_[j] -= cells_[i][j];
      }
    }
    if (!optimize(/*allow_artificial=*/true)) throw Error("linear program: phase one cannot be unbounded");
    if (-objective_[columns_] > tol_ * (1.0 + scale())) return false;
    // Artificials still basic sit at zero; swap them for any real column so
    // that phase two never sees them. A row with no real column left is
    // redundant and keeps its artificial at zero for good.
    for (std::size_t i = 0; i < m_; ++i) {
      if (!is_artificial(basis_[i])) continue;
      for (std::size_t j = 0; j < artificial_begin_; ++j) {
        if (std::abs(cells_[i][j]) > tol_) {
          pivot(i, j);
          break;
        }
      }
    }
    return true;
  }

  // Phase two: minimize `cost`. False when unbounded.
  bool minimize(const std::vector<double>& cost) {
    objective_.assign(columns_ + 1, 0.0);
    for (std::size_t j = 0; j < n_; ++j) objective_[j] = cost[j];
    for (std::size_t i = 0; i < m_; ++i) {
      const double c = basis_[i] < n_ ? cost[basis_[i]] : 0.0;
      if (c == 0.0) continue;
      for (std::size_t j = 0; j <= columns_; ++j) objective_[j] -= c * cells_[i][j];
    }
    return optimize(/*allow_artificial=*/false);
  }

  std::vector<double> solution() const {
    std::vector<double> x(n_, 0.0);
    for (std::size_t i = 0; i < m_; ++i) {
      if (basis_[i] < n_) x[basis_[i]] = cells_[i][columns_];
    }
    return x;
  }

 private:
  bool is_artificial(std::size_t column) const { return column >= artificial_begin_ && column < columns_; }

  double scale() const {
    double s = 0;
    for (const auto& row : cells_) s = std::max(s, std::abs(row[columns_]));
    return s;
  }

  // Bland's rule: the lowest-numbered improving column enters; among rows
  // with the smallest ratio, the one whose basic variable is lowest leaves.
  bool optimize(bool allow_artificial) {
    const std::size_t limit = 64 * (m_ + columns_ + 1);
    for (std::size_t iteration = 0; iteration < limit; ++iteration) {
      std::size_t enter = columns_;
      for (std::size_t j = 0; j < columns_; ++j) {
        if (!allow_artificial && is_artificial(j)) continue;
        if (objective_[j] < -tol_) {
          enter = j;
          break;
        }
      }
      if (enter == columns_) return true;
      std::size_t leave = m_;
      double best = 0;
      for (std::size_t i = 0; i < m_; ++i) {
        const double a = cells_[i][enter];
        if (a <= tol_) continue;
        const double ratio = cells_[i][columns_] / a;
        if (leave == m_ || ratio < best - tol_ || (ratio <= best + tol_ && basis_[i] < basis_[leave])) {
          leave = i;
          best = ratio;
        }
      }
      if (leave == m_) return false;
      pivot(leave, enter);
    }
    throw Error(fmt::format("linear program: no optimum after {} pivots ({} rows, {} columns)", limit, m_, columns_));
  }

  void pivot(std::size_t r, std::size_t c) {
    std::vector<double>& row = cells_[r];
    const double p = row[c];
    for (double& v : row) v /= p;
    row[c] = 1.0;
    auto eliminate = [&](std::vector<double>& other) {
      const double f = other[c];
      if (f == 0.0) return;
      for (std::size_t j = 0; j <= columns_; ++j) other[j] -= f * row[j];
      other[c] = 0.0;
    };
    for (std::size_t i = 0; i < m_; ++i) {
      if (i != r) eliminate(cells_[i]);
    }
    eliminate(objective_);
    basis_[r] = c;
  }

  std::size_t n_, m_;
  double tol_;
  std::size_t artificial_begin_ = 0, columns_ = 0;
  std::vector<std::vector<double>> cells_;
  std::vector<double> objective_;
  std::vector<std::size_t> basis_;
};

}  // namespace

LinearSolution solve(const LinearProgram& lp, double tolerance) {
  if (lp.rows.size() != lp.bounds.size()) {
    throw InvalidArgument(fmt::format("linear program: {} rows but {} bounds", lp.rows.size(), lp.bounds.size()));
  }
  for (std::size_t i = 0; i < lp.rows.size(); ++i) {
    if (lp.rows[i].size() != lp.cost.size()) {
      throw InvalidArgument(fmt::format("linear program: row {} has {} coefficients for {} variables", i,
                                        lp.rows[i].size(), lp.cost.size()));
    }
  }
  Tableau tableau(lp, tolerance);
  LinearSolution out;
  if (tableau.has_artificials() && !tableau.find_feasible()) {
    out.status = LinearSolution::Status::Infeasible;
    return out;
  }
  if (!tableau.minimize(lp.cost)) {
    out.status = LinearSolution::Status::Unbounded;
    return out;
  }
  out.status = LinearSolution::Status::Optimal;
  out.x = tableau.solution();
  for (std::size_t j = 0; j < out.x.size(); ++j) out.value += lp.cost[j] * out.x[j];
  return out;
}

}  // namespace bagua
