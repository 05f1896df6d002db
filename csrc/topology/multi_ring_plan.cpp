#include "topology/multi_ring_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.hpp"
#include "topology/linear_program.hpp"

namespace bagua {
namespace {

constexpr std::uint32_t kWeightTotal = 1u << 20;

// The traffic model of one order: a rank's successor and predecessor differ
// between forward and reverse rings, so each enters with the fraction of
// rings that run that way.
struct Model {
  int n;
  double forward;  // fraction of rings running forward

  int next(int i) const { return (i + 1) % n; }
  int prev(int i) const { return (i + n - 1) % n; }
  // Coefficients of the shares in what rank i sends (or receives), in units
  // of the buffer: 2 - f_i - (what its successor, or predecessor, owns in
  // each ring).
  std::vector<double> sent(int i) const { return skipped(i, next(i), prev(i)); }
  std::vector<double> received(int i) const { return skipped(i, prev(i), next(i)); }
  // Rank i's own share, and `forward_side`'s in forward rings or the other
  // side's in reverse ones.
  std::vector<double> skipped(int i, int forward_side, int reverse_side) const {
    std::vector<double> c(n, 0.0);
    c[i] += 1.0;
    c[forward_side] += forward;
    c[reverse_side] += 1.0 - forward;
    return c;
  }
  static double moved(const std::vector<double>& coefficients, const std::vector<double>& shares) {
    double owned = 0;
    for (std::size_t j = 0; j < shares.size(); ++j) owned += coefficients[j] * shares[j];
    return 2.0 - owned;
  }
  // Slowest rank's time, in buffers per unit of (normalized) rate.
  double cost(const std::vector<double>& shares, const std::vector<double>& rate) const {
    double worst = 0;
    for (int i = 0; i < n; ++i) {
      worst = std::max({worst, moved(sent(i), shares) / rate[i], moved(received(i), shares) / rate[i]});
    }
    return worst;
  }
};

// Every rank's send and receive at most `time * rate` when `time` is given;
// otherwise `time` is the last variable, to be minimized.
void add_traffic_rows(LinearProgram& lp, const Model& m, const std::vector<double>& rate, int variables,
                      const double* time) {
  for (int i = 0; i < m.n; ++i) {
    for (const auto& c : {m.sent(i), m.received(i)}) {
      // 2 - c.f <= rate_i * t   <=>   -c.f - rate_i * t <= -2
      std::vector<double> row(variables, 0.0);
      for (int j = 0; j < m.n; ++j) row[j] = -c[j];
      double bound = -2.0;
      if (time) {
        bound += rate[i] * *time;
      } else {
        row[m.n] = -rate[i];
      }
      lp.rows.push_back(std::move(row));
      lp.bounds.push_back(bound);
    }
  }
  // Shares sum to one.
  std::vector<double> sum(variables, 0.0);
  for (int j = 0; j < m.n; ++j) sum[j] = 1.0;
  lp.rows.push_back(sum);
  lp.bounds.push_back(1.0);
  for (double& v : sum) v = -v;
  lp.rows.push_back(sum);
  lp.bounds.push_back(-1.0);
}

// The least time any shares achieve on this order.
double least_time(const Model& m, const std::vector<double>& rate) {
  LinearProgram lp;
  lp.cost.assign(m.n + 1, 0.0);
  lp.cost[m.n] = 1.0;
  add_traffic_rows(lp, m, rate, m.n + 1, nullptr);
  const LinearSolution s = solve(lp);
  if (s.status != LinearSolution::Status::Optimal) throw Error("multi_ring plan: the share program has no optimum");
  return s.value;
}

// Among shares within `time`, the ones closest to equal (least total
// absolute deviation): ties between optimal vertices go to the plan that
// depends least on the model being exact.
std::vector<double> balanced_shares(const Model& m, const std::vector<double>& rate, double time) {
  const int n = m.n;
  LinearProgram lp;
  lp.cost.assign(2 * n, 0.0);
  for (int j = n; j < 2 * n; ++j) lp.cost[j] = 1.0;  // deviations d_j
  add_traffic_rows(lp, m, rate, 2 * n, &time);
  for (int j = 0; j < n; ++j) {
    std::vector<double> row(2 * n, 0.0);
    row[j] = 1.0;
    row[n + j] = -1.0;  // f_j - d_j <= 1/n
    lp.rows.push_back(row);
    lp.bounds.push_back(1.0 / n);
    row[j] = -1.0;  // -f_j - d_j <= -1/n
    lp.rows.push_back(row);
    lp.bounds.push_back(-1.0 / n);
  }
  const LinearSolution s = solve(lp);
  if (s.status != LinearSolution::Status::Optimal) throw Error("multi_ring plan: the balancing program has no optimum");
  return {s.x.begin(), s.x.begin() + n};
}

std::vector<std::uint32_t> to_weights(const std::vector<double>& shares) {
  const std::size_t n = shares.size();
  std::vector<std::uint32_t> w(n);
  std::vector<double> frac(n);
  std::uint32_t given = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double exact = std::clamp(shares[i], 0.0, 1.0) * kWeightTotal;
    w[i] = static_cast<std::uint32_t>(std::floor(exact));
    frac[i] = exact - w[i];
    given += w[i];
  }
  std::vector<std::size_t> by_fraction(n);
  std::iota(by_fraction.begin(), by_fraction.end(), 0);
  std::stable_sort(by_fraction.begin(), by_fraction.end(), [&](auto a, auto b) { return frac[a] > frac[b]; });
  for (std::size_t k = 0; given < kWeightTotal; k = (k + 1) % n, ++given) ++w[by_fraction[k]];
  while (given > kWeightTotal) {  // shares summing a hair over one
    auto it = std::max_element(w.begin(), w.end());
    --*it;
    --given;
  }
  return w;
}

// With both directions, rings 0, 2, 4... run forward and 1, 3... reverse.
double forward_fraction(int rings, bool both_directions) {
  return both_directions ? double((rings + 1) / 2) / rings : 1.0;
}

std::string percent(double v) { return fmt::format("{:.1f}%", 100.0 * v); }

}  // namespace

int auto_rings(int cores, int ranks_on_host) {
  return std::clamp(cores / std::max(1, ranks_on_host), 1, 4);
}

MultiRingPlan MultiRingPlan::make(std::vector<int> ranks, std::vector<double> link_mbit,
                                  const MultiRingOptions& options) {
  Ring::of(ranks);  // checks: non-empty, distinct, non-negative
  if (options.rings < 1 || options.rings > kMaxRings) {
    throw InvalidArgument(fmt::format("multi_ring: rings={} is out of range; use 1 to {}", options.rings, kMaxRings));
  }
  const int n = static_cast<int>(ranks.size());
  if (!link_mbit.empty() && static_cast<int>(link_mbit.size()) != n) {
    throw InvalidArgument(fmt::format("multi_ring: {} link rates for {} ranks; give one rate per rank", link_mbit.size(), n));
  }
  for (double r : link_mbit) {
    if (!(r > 0) || !std::isfinite(r)) {
      throw InvalidArgument(fmt::format("multi_ring: link rate {} Mbit/s is not a positive number", r));
    }
  }
  MultiRingPlan plan;
  plan.ranks_ = ranks;
  plan.order_ = ranks;
  plan.link_mbit_ = link_mbit;
  plan.rings_ = options.rings;
  plan.both_directions_ = options.both_directions;
  plan.min_part_bytes_ = std::max<std::size_t>(1, options.min_part_bytes);
  plan.weights_ = to_weights(std::vector<double>(n, 1.0 / n));
  if (link_mbit.empty() || n == 1) {
    plan.reason_ = link_mbit.empty() ? "link rates unknown: equal chunks" : "one rank: nothing to exchange";
    return plan;
  }

  const double fastest = *std::max_element(link_mbit.begin(), link_mbit.end());
  const double slowest = *std::min_element(link_mbit.begin(), link_mbit.end());
  const double bytes_per_s = fastest * 1e6 / 8;  // of the normalized rate 1
  const Model model{n, forward_fraction(options.rings, options.both_directions)};
  plan.equal_cost_ = (2.0 - 2.0 / n) / (slowest / fastest) / bytes_per_s;
  plan.cost_ = plan.equal_cost_;
  if (fastest < options.uniform_ratio * slowest) {
    plan.reason_ = fmt::format("link rates within a factor of {:g} of each other: equal chunks", options.uniform_ratio);
    return plan;
  }

  // The order matters (neighbours of a slow rank can relieve it); up to 7
  // ranks every cyclic order is tried, beyond that the given one and the
  // one sorted by rate (slow ranks side by side).
  auto rates_of = [&](const std::vector<int>& order) {
    std::vector<double> r(n);
    for (int i = 0; i < n; ++i) {
      r[i] = link_mbit[std::find(ranks.begin(), ranks.end(), order[i]) - ranks.begin()] / fastest;
    }
    return r;
  };
  std::vector<std::vector<int>> candidates;
  if (n <= 7) {
    std::vector<int> rest(ranks.begin() + 1, ranks.end());
    std::vector<int> positions(rest.size());
    std::iota(positions.begin(), positions.end(), 0);
    do {
      std::vector<int> order{ranks[0]};
      for (int p : positions) order.push_back(rest[p]);
      candidates.push_back(std::move(order));
    } while (std::next_permutation(positions.begin(), positions.end()));
  } else {
    candidates.push_back(ranks);
    std::vector<int> sorted = ranks;
    std::stable_sort(sorted.begin(), sorted.end(), [&](int a, int b) {
      auto rate = [&](int r) { return link_mbit[std::find(ranks.begin(), ranks.end(), r) - ranks.begin()]; };
      return rate(a) > rate(b);
    });
    candidates.push_back(std::move(sorted));
  }
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> best_order;
  for (const auto& order : candidates) {
    const double t = least_time(model, rates_of(order));
    if (t < best * (1 - 1e-9)) {
      best = t;
      best_order = order;
    }
  }
  const double gain = 1.0 - best / (plan.equal_cost_ * bytes_per_s);
  if (gain < options.min_gain) {
    plan.reason_ = fmt::format("bandwidth-aware shares would gain only {}: equal chunks", percent(gain));
    return plan;
  }
  const std::vector<double> rate = rates_of(best_order);
  const std::vector<double> shares = balanced_shares(model, rate, best * (1 + 1e-6) + 1e-12);
  plan.order_ = best_order;
  plan.weights_ = to_weights(shares);
  plan.uneven_ = true;
  plan.cost_ = model.cost(plan.shares(), rate) / bytes_per_s;
  plan.reason_ = fmt::format("shares from link rates: predicted {} faster than equal chunks",
                             fmt::format("{:.2f}x", plan.equal_cost_ / plan.cost_));
  return plan;
}

std::vector<double> MultiRingPlan::shares() const {
  std::vector<double> out;
  for (auto w : weights_) out.push_back(double(w) / kWeightTotal);
  return out;
}

int MultiRingPlan::rings_for(std::size_t bytes) const {
  return static_cast<int>(std::clamp<std::size_t>(bytes / min_part_bytes_, 1, static_cast<std::size_t>(rings_)));
}

Ring MultiRingPlan::ring(int k) const {
  if (k < 0 || k >= rings_) throw InvalidArgument(fmt::format("multi_ring: no ring {} in a plan of {}", k, rings_));
  std::vector<int> base = order_;
  if (reversed(k)) std::reverse(base.begin(), base.end());
  std::vector<int> ranks(base.size());
  for (std::size_t i = 0; i < base.size(); ++i) ranks[i] = base[(i + k) % base.size()];
  return Ring{std::move(ranks)};
}

Segment MultiRingPlan::part(int k, int used, std::size_t count) const { return partition(count, used).at(k); }

std::vector<Segment> MultiRingPlan::segments(int k, Segment part) const {
  const Ring r = ring(k);
  const int n = r.size();
  std::vector<std::size_t> counts(n);
  if (!uneven_) {
    // Exactly ring_allreduce's equal partition.
    const std::vector<Segment> equal = partition(part.count, n);
    for (int j = 0; j < n; ++j) counts[j] = equal[j].count;
  } else {
    // Segment j belongs to position j - 1; its size is that rank's share,
    // rounded by largest remainder so that the sizes add up to the part.
    std::vector<std::uint64_t> remainder(n);
    std::size_t given = 0;
    for (int j = 0; j < n; ++j) {
      const int owner = r.ranks[(j + n - 1) % n];
      const auto w = weights_[std::find(order_.begin(), order_.end(), owner) - order_.begin()];
      const unsigned __int128 exact = static_cast<unsigned __int128>(part.count) * w;
      counts[j] = static_cast<std::size_t>(exact / kWeightTotal);
      remainder[j] = static_cast<std::uint64_t>(exact % kWeightTotal);
      given += counts[j];
    }
    std::vector<int> by_remainder(n);
    std::iota(by_remainder.begin(), by_remainder.end(), 0);
    std::stable_sort(by_remainder.begin(), by_remainder.end(),
                     [&](int a, int b) { return remainder[a] > remainder[b]; });
    for (int k2 = 0; given < part.count; ++k2, ++given) ++counts[by_remainder[k2 % n]];
  }
  std::vector<Segment> out(n);
  std::size_t offset = part.offset;
  for (int j = 0; j < n; ++j) {
    out[j] = {offset, counts[j]};
    offset += counts[j];
  }
  return out;
}

double MultiRingPlan::predicted_seconds(std::size_t bytes) const { return cost_ * double(bytes); }
double MultiRingPlan::equal_chunk_seconds(std::size_t bytes) const { return equal_cost_ * double(bytes); }

std::string MultiRingPlan::describe() const {
  const int n = size();
  std::string out = fmt::format("multi_ring plan: {} ranks, {} ring{} ({})\n", n, rings_, rings_ == 1 ? "" : "s", reason_);
  for (int k = 0; k < rings_; ++k) {
    out += fmt::format("  ring {}: {}{}\n", k, fmt::join(ring(k).ranks, " -> "), reversed(k) ? " (the reverse way)" : "");
  }
  const std::vector<double> f = shares();
  const Model model{n, forward_fraction(rings_, both_directions_)};
  for (int i = 0; i < n; ++i) {
    out += fmt::format("  rank {}: ", order_[i]);
    if (!link_mbit_.empty()) {
      out += fmt::format("link {:g} Mbit/s, ", link_mbit_[std::find(ranks_.begin(), ranks_.end(), order_[i]) - ranks_.begin()]);
    }
    out += fmt::format("owns {} of each part, sends {:.2f} S and receives {:.2f} S per all-reduce of S\n", percent(f[i]),
                       Model::moved(model.sent(i), f), Model::moved(model.received(i), f));
  }
  if (cost_ > 0) {
    const std::size_t mib16 = 16u << 20;
    out += fmt::format("  predicted for 16 MiB: {:.3f} s (equal chunks: {:.3f} s)\n", predicted_seconds(mib16),
                       equal_chunk_seconds(mib16));
  }
  return out;
}

std::uint64_t MultiRingPlan::fingerprint() const {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](std::uint64_t v) {
    for (int b = 0; b < 8; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(static_cast<std::uint64_t>(rings_));
  mix(both_directions_ ? 1 : 0);
  for (int r : order_) mix(static_cast<std::uint64_t>(r));
  for (auto w : weights_) mix(w);
  return h;
}

}  // namespace bagua
