#include "topology/cluster_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "core/error.hpp"

namespace bagua {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string gb(double bytes) { return fmt::format("{:.2f} GB", bytes / 1e9); }

void check_inputs(const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                  const PlanOptions& options) {
  if (nodes.empty()) throw InvalidArgument("cluster plan: no nodes given");
  if (layers.empty()) throw InvalidArgument("cluster plan: the model profile has no layers");
  if (options.micro_batch < 1) throw InvalidArgument("cluster plan: micro_batch must be at least 1");
  if (!(options.optimizer_state_factor >= 0)) throw InvalidArgument("cluster plan: optimizer_state_factor must be >= 0");
  for (const auto& n : nodes) {
    if (!(n.memory_bytes > 0) || !(n.compute > 0) || !(n.bandwidth_mbit > 0) || !std::isfinite(n.memory_bytes) ||
        !std::isfinite(n.compute) || !std::isfinite(n.bandwidth_mbit)) {
      throw InvalidArgument(fmt::format("cluster plan: node '{}' needs positive memory, compute and bandwidth (got "
                                        "{} bytes, compute {}, {} Mbit/s)",
                                        n.name, n.memory_bytes, n.compute, n.bandwidth_mbit));
    }
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    if (!(l.param_bytes >= 0) || !(l.activation_bytes_per_sample >= 0) || !(l.compute_s_per_sample >= 0)) {
      throw InvalidArgument(fmt::format("cluster plan: layer {} has a negative or missing field", i));
    }
  }
}

// Prefix sums so that a stage's totals cost O(1).
struct Prefix {
  std::vector<double> params, activations, compute;
  explicit Prefix(const std::vector<LayerProfile>& layers) {
    params.push_back(0);
    activations.push_back(0);
    compute.push_back(0);
    for (const auto& l : layers) {
      params.push_back(params.back() + l.param_bytes);
      activations.push_back(activations.back() + l.activation_bytes_per_sample);
      compute.push_back(compute.back() + l.compute_s_per_sample);
    }
  }
};

StagePlan cost_stage(const PlanNode& node, int node_index, const std::vector<LayerProfile>& layers,
                     const Prefix& prefix, std::size_t first, std::size_t end, int stages, const PlanOptions& options) {
  StagePlan s;
  s.node = node_index;
  s.first_layer = first;
  s.end_layer = end;
  const double mb = options.micro_batch;
  const double weights = prefix.params[end] - prefix.params[first];
  const double activations = (prefix.activations[end] - prefix.activations[first]) * mb;
  s.memory_bytes = weights * (2.0 + options.optimizer_state_factor + stages) + stages * activations;
  s.compute_s = (prefix.compute[end] - prefix.compute[first]) * mb / node.compute;
  // Out: activations to the next stage, gradients to the previous one; in:
  // the reverse. Each direction of the node's own link at its rate.
  const double to_next = end < layers.size() ? layers[end - 1].activation_bytes_per_sample * mb : 0.0;
  const double from_prev = first > 0 ? layers[first - 1].activation_bytes_per_sample * mb : 0.0;
  const double out = to_next + from_prev, in = from_prev + to_next;
  s.transfer_s = std::max(out, in) * 8 / (node.bandwidth_mbit * 1e6);
  s.time_s = std::max(s.compute_s, s.transfer_s);
  return s;
}

// One micro-batch's way through the chain with nothing queued: every
// stage's compute, and every link crossed twice (activations on, gradients
// back) at the slower end's rate. Stage 0 admits a micro-batch only while
// fewer than S are in flight, so a cluster of S stages finishes at most S
// micro-batches per round trip, whatever its stages' own times: a slow
// link inside a chain costs twice, once as the stage time of the nodes on
// it and once in this loop.
double link_s(const PlanNode& a, const PlanNode& b, const std::vector<LayerProfile>& layers, std::size_t cut,
              const PlanOptions& options) {
  const double bytes = layers[cut - 1].activation_bytes_per_sample * options.micro_batch;
  return bytes * 8 / (std::min(a.bandwidth_mbit, b.bandwidth_mbit) * 1e6);
}

void time_cluster(ClusterPlan& plan, const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                  const PlanOptions& options) {
  double slowest = 0, round_trip = 0;
  for (std::size_t i = 0; i < plan.stages.size(); ++i) {
    const StagePlan& s = plan.stages[i];
    slowest = std::max(slowest, s.time_s);
    round_trip += s.compute_s;
    if (i + 1 < plan.stages.size()) {
      round_trip += 2 * link_s(nodes[s.node], nodes[plan.stages[i + 1].node], layers, s.end_layer, options);
    }
  }
  plan.round_trip_s = round_trip;
  plan.time_per_microbatch_s = std::max(slowest, round_trip / static_cast<double>(plan.stages.size()));
}

// Splits of layers over a fixed chain, by dynamic programming over
// contiguous cuts; every node gets at least one layer and must hold its
// stage.
class Splitter {
 public:
  Splitter(const std::vector<PlanNode>& nodes, const std::vector<int>& chain, const std::vector<LayerProfile>& layers,
           const Prefix& prefix, const PlanOptions& options)
      : nodes_(nodes), chain_(chain), layers_(layers), prefix_(prefix), options_(options), m_(chain.size()),
        L_(layers.size()) {}

  // The least slowest-stage time of any split (kInf when none fits), and
  // every stage time that some split could have, for the search below.
  double least_slowest(std::vector<double>& stage_times) const {
    return solve([&](double before, const StagePlan& s, double) {
      stage_times.push_back(s.time_s);
      return std::max(before, s.time_s);
    }).first;
  }

  // Among the splits whose every stage takes at most `limit`, one with the
  // shortest round trip (kInf and no plan when there is none).
  std::pair<double, std::optional<ClusterPlan>> shortest_round_trip(double limit) const {
    return solve([&](double before, const StagePlan& s, double link) {
      return s.time_s > limit ? kInf : before + s.compute_s + link;
    });
  }

 private:
  // best[i][j]: the objective over the first i nodes holding layers [0, j);
  // `step` folds a stage (and the link after it, 0 for the last) into it.
  template <class Step>
  std::pair<double, std::optional<ClusterPlan>> solve(Step step) const {
    if (m_ > L_) return {kInf, std::nullopt};
    const int stages = static_cast<int>(m_);
    std::vector<std::vector<double>> best(m_ + 1, std::vector<double>(L_ + 1, kInf));
    std::vector<std::vector<std::size_t>> cut(m_ + 1, std::vector<std::size_t>(L_ + 1, 0));
    best[0][0] = 0;
    for (std::size_t i = 1; i <= m_; ++i) {
      const PlanNode& node = nodes_[chain_[i - 1]];
      const std::size_t j_end = i == m_ ? L_ : L_ - (m_ - i);
      for (std::size_t j = i; j <= j_end; ++j) {
        if (i == m_ && j != L_) continue;
        const double link = i < m_ ? 2 * link_s(node, nodes_[chain_[i]], layers_, j, options_) : 0.0;
        for (std::size_t a = i - 1; a < j; ++a) {
          if (best[i - 1][a] == kInf) continue;
          const StagePlan s = cost_stage(node, chain_[i - 1], layers_, prefix_, a, j, stages, options_);
          if (s.memory_bytes > node.memory_bytes) continue;
          const double t = step(best[i - 1][a], s, link);
          if (t < best[i][j]) {
            best[i][j] = t;
            cut[i][j] = a;
          }
        }
      }
    }
    if (best[m_][L_] == kInf) return {kInf, std::nullopt};
    ClusterPlan plan;
    std::size_t j = L_;
    for (std::size_t i = m_; i >= 1; --i) {
      const std::size_t a = cut[i][j];
      plan.stages.push_back(cost_stage(nodes_[chain_[i - 1]], chain_[i - 1], layers_, prefix_, a, j, stages, options_));
      j = a;
    }
    std::reverse(plan.stages.begin(), plan.stages.end());
    time_cluster(plan, nodes_, layers_, options_);
    return {best[m_][L_], std::move(plan)};
  }

  const std::vector<PlanNode>& nodes_;
  const std::vector<int>& chain_;
  const std::vector<LayerProfile>& layers_;
  const Prefix& prefix_;
  const PlanOptions& options_;
  std::size_t m_, L_;
};

// Best split over a chain, or nullopt when nothing fits: the least
// max(slowest stage, round trip / S). Allowing slower stages can only
// shorten the shortest round trip, so over the stage times a split can
// have, the best lies where the two cross: found by bisection, after the
// common case (the round trip does not bind at the least slowest stage)
// has been settled with one more pass.
std::optional<ClusterPlan> best_split(const std::vector<PlanNode>& nodes, const std::vector<int>& chain,
                                      const std::vector<LayerProfile>& layers, const Prefix& prefix,
                                      const PlanOptions& options) {
  const Splitter splitter(nodes, chain, layers, prefix, options);
  std::vector<double> times;
  const double least = splitter.least_slowest(times);
  if (least == kInf) return std::nullopt;
  const double stages = static_cast<double>(chain.size());
  auto [round_trip, plan] = splitter.shortest_round_trip(least);
  if (round_trip / stages <= least) return plan;
  std::sort(times.begin(), times.end());
  times.erase(std::unique(times.begin(), times.end()), times.end());
  times.erase(times.begin(), std::lower_bound(times.begin(), times.end(), least));
  // Invariant: at times[lo] the round trip still binds; find the first
  // limit where it does not (if any).
  std::size_t lo = 0, hi = times.size();
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (splitter.shortest_round_trip(times[mid]).first / stages > times[mid]) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  // The best is the binding side's last plan or the other side's first.
  if (hi < times.size()) {
    auto other = splitter.shortest_round_trip(times[hi]).second;
    auto binding = splitter.shortest_round_trip(times[lo]).second;
    if (other && (!binding || other->time_per_microbatch_s < binding->time_per_microbatch_s)) return other;
    return binding;
  }
  return splitter.shortest_round_trip(times[lo]).second;
}

// Chains tried for a set of nodes: every order up to 4 nodes, beyond that
// fastest first (ties by index).
std::vector<std::vector<int>> chains_of(const std::vector<PlanNode>& nodes, std::vector<int> members) {
  std::vector<std::vector<int>> out;
  std::sort(members.begin(), members.end());
  if (members.size() <= 4) {
    do out.push_back(members);
    while (std::next_permutation(members.begin(), members.end()));
  } else {
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return nodes[a].compute > nodes[b].compute; });
    out.push_back(members);
  }
  return out;
}

std::optional<ClusterPlan> best_cluster(const std::vector<PlanNode>& nodes, const std::vector<int>& members,
                                        const std::vector<LayerProfile>& layers, const Prefix& prefix,
                                        const PlanOptions& options) {
  std::optional<ClusterPlan> best;
  for (const auto& chain : chains_of(nodes, members)) {
    auto p = best_split(nodes, chain, layers, prefix, options);
    if (p && (!best || p->time_per_microbatch_s < best->time_per_microbatch_s * (1 - 1e-12))) best = std::move(p);
  }
  return best;
}

double samples_per_s(const std::vector<ClusterPlan>& clusters, const PlanOptions& options) {
  double slowest = 0;
  for (const auto& c : clusters) slowest = std::max(slowest, c.time_per_microbatch_s);
  return slowest > 0 ? clusters.size() * options.micro_batch / slowest : 0.0;
}

double spread(const std::vector<ClusterPlan>& clusters) {
  double lo = kInf, hi = 0;
  for (const auto& c : clusters) {
    lo = std::min(lo, c.time_per_microbatch_s);
    hi = std::max(hi, c.time_per_microbatch_s);
  }
  return lo > 0 ? hi / lo : 1.0;
}

// Better by the planner's goals 3 and 4 (goal 2 is inside each cluster).
bool better(const std::vector<ClusterPlan>& a, std::size_t a_unused, const std::vector<ClusterPlan>& b,
            std::size_t b_unused, const PlanOptions& options) {
  const double sa = samples_per_s(a, options), sb = samples_per_s(b, options);
  if (sa > sb * (1 + 1e-9)) return true;
  if (sa < sb * (1 - 1e-9)) return false;
  const double pa = spread(a), pb = spread(b);
  if (pa < pb * (1 - 1e-9)) return true;
  if (pa > pb * (1 + 1e-9)) return false;
  if (a.size() != b.size()) return a.size() > b.size();
  return a_unused < b_unused;
}

// Each set partition of n items once, as restricted growth strings.
template <typename F>
void for_each_partition(int n, F&& visit) {
  std::vector<int> label(n, 0), max_before(n, 0);
  for (;;) {
    visit(label);
    int i = n - 1;
    while (i > 0 && label[i] == max_before[i] + 1) --i;
    if (i <= 0) return;
    ++label[i];
    for (int j = i + 1; j < n; ++j) {
      label[j] = 0;
      max_before[j] = std::max(max_before[j - 1], label[j - 1]);
    }
  }
}

std::string describe(const std::vector<PlanNode>& nodes, const std::vector<ClusterPlan>& clusters,
                     const std::vector<int>& unused, const PlanOptions& options, const std::string& method) {
  std::string out = fmt::format("{}: {} cluster{} of {} node{}, micro-batch {}; predicted {:.1f} samples/s\n", method,
                                clusters.size(), clusters.size() == 1 ? "" : "s", nodes.size(),
                                nodes.size() == 1 ? "" : "s", options.micro_batch, samples_per_s(clusters, options));
  for (std::size_t c = 0; c < clusters.size(); ++c) {
    const auto& cl = clusters[c];
    out += fmt::format("  cluster {}: {} stage{}, {:.2f} ms per micro-batch\n", c, cl.stages.size(),
                       cl.stages.size() == 1 ? "" : "s", cl.time_per_microbatch_s * 1e3);
    const StagePlan* slowest = nullptr;
    for (const auto& s : cl.stages) {
      const PlanNode& n = nodes[s.node];
      out += fmt::format(
          "    {} (compute {:g}, {:g} Mbit/s): layers {}-{}, needs {} of {} (weights, gradients, optimizer state, "
          "{} stashed version{}, activations of {} micro-batch{}), compute {:.2f} ms, transfers {:.2f} ms\n",
          n.name, n.compute, n.bandwidth_mbit, s.first_layer, s.end_layer - 1, gb(s.memory_bytes), gb(n.memory_bytes),
          cl.stages.size(), cl.stages.size() == 1 ? "" : "s", cl.stages.size(), cl.stages.size() == 1 ? "" : "es",
          s.compute_s * 1e3, s.transfer_s * 1e3);
      if (!slowest || s.time_s > slowest->time_s) slowest = &s;
    }
    if (slowest && slowest->time_s >= cl.time_per_microbatch_s) {
      out += fmt::format("    slowest stage: {} ({})\n", nodes[slowest->node].name,
                         slowest->transfer_s > slowest->compute_s ? "its link" : "its compute");
    } else if (slowest) {
      out += fmt::format("    bound by its round trip: a micro-batch takes {:.2f} ms through every stage and link and "
                         "back, and at most {} are in flight (its slowest stage, {}, takes {:.2f} ms)\n",
                         cl.round_trip_s * 1e3, cl.stages.size(), nodes[slowest->node].name, slowest->time_s * 1e3);
    }
  }
  for (int u : unused) {
    out += fmt::format("  left out: {} (compute {:g}, {:g} Mbit/s): every cluster would be slower with it\n",
                       nodes[u].name, nodes[u].compute, nodes[u].bandwidth_mbit);
  }
  return out;
}

}  // namespace

double stage_memory_bytes(const std::vector<LayerProfile>& layers, std::size_t first, std::size_t end, int stages,
                          const PlanOptions& options) {
  const Prefix prefix(layers);
  PlanNode any{"", 1, 1, 1};
  return cost_stage(any, 0, layers, prefix, first, end, stages, options).memory_bytes;
}

ClusterPlan split_layers(const std::vector<PlanNode>& nodes, const std::vector<int>& chain,
                         const std::vector<LayerProfile>& layers, const PlanOptions& options) {
  check_inputs(nodes, layers, options);
  auto p = best_split(nodes, chain, layers, Prefix(layers), options);
  if (!p) {
    throw InvalidArgument(fmt::format("cluster plan: no split of {} layers over {} nodes fits their memory",
                                      layers.size(), chain.size()));
  }
  return *p;
}

ClusterPlan predict_split(const std::vector<PlanNode>& nodes, const std::vector<int>& chain,
                          const std::vector<std::size_t>& stage_ends, const std::vector<LayerProfile>& layers,
                          const PlanOptions& options) {
  if (stage_ends.size() != chain.size() || stage_ends.empty() || stage_ends.back() != layers.size()) {
    throw InvalidArgument("cluster plan: a split needs one increasing end per stage, the last at the layer count");
  }
  const Prefix prefix(layers);
  ClusterPlan plan;
  std::size_t first = 0;
  for (std::size_t i = 0; i < chain.size(); ++i) {
    if (stage_ends[i] <= first) throw InvalidArgument("cluster plan: every stage needs at least one layer");
    plan.stages.push_back(cost_stage(nodes[chain[i]], chain[i], layers, prefix, first, stage_ends[i],
                                     static_cast<int>(chain.size()), options));
    first = stage_ends[i];
  }
  time_cluster(plan, nodes, layers, options);
  return plan;
}

ClusterPlanResult plan_clusters(const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                                const PlanOptions& options) {
  check_inputs(nodes, layers, options);
  const Prefix prefix(layers);
  const int n = static_cast<int>(nodes.size());

  // Impossible inputs first, with what is missing.
  double smallest_layer = kInf;
  std::size_t smallest_index = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const double need = stage_memory_bytes(layers, i, i + 1, 1, options);
    if (need < smallest_layer) {
      smallest_layer = need;
      smallest_index = i;
    }
  }
  for (const auto& node : nodes) {
    if (node.memory_bytes < smallest_layer) {
      throw InvalidArgument(fmt::format(
          "cluster plan: node '{}' has {} and fits no layer: the smallest, layer {}, needs {} (weights, gradients, "
          "optimizer state, a stashed version, activations of a micro-batch of {}); {} short",
          node.name, gb(node.memory_bytes), smallest_index, gb(smallest_layer), options.micro_batch,
          gb(smallest_layer - node.memory_bytes)));
    }
  }
  double total = 0;
  for (const auto& node : nodes) total += node.memory_bytes;
  const double least = stage_memory_bytes(layers, 0, layers.size(), 1, options);
  if (total < least) {
    throw InvalidArgument(fmt::format("cluster plan: the model needs at least {} to train (weights, gradients, "
                                      "optimizer state, a stashed version, activations of a micro-batch of {}) and "
                                      "the {} nodes have {} in all: {} short",
                                      gb(least), options.micro_batch, n, gb(total), gb(least - total)));
  }

  // Partitions share groups: each group's best chain is computed once.
  std::map<std::vector<int>, std::optional<ClusterPlan>> cache;  // by members
  auto cluster_for = [&](const std::vector<int>& members) -> const std::optional<ClusterPlan>& {
    auto it = cache.find(members);
    if (it == cache.end()) it = cache.emplace(members, best_cluster(nodes, members, layers, prefix, options)).first;
    return it->second;
  };
  const int max_clusters = options.max_clusters > 0 ? options.max_clusters : n;

  std::optional<std::vector<ClusterPlan>> best;
  std::vector<int> best_unused;
  auto consider = [&](const std::vector<std::vector<int>>& groups, const std::vector<int>& unused) {
    if (groups.empty() || static_cast<int>(groups.size()) > max_clusters) return;
    std::vector<ClusterPlan> clusters;
    for (const auto& g : groups) {
      const auto& c = cluster_for(g);
      if (!c) return;  // this group cannot hold the model
      clusters.push_back(*c);
    }
    if (!best || better(clusters, unused.size(), *best, best_unused.size(), options)) {
      best = std::move(clusters);
      best_unused = unused;
    }
  };
  if (n <= 8) {
    // Partitions of the nodes and one extra item: the extra item's block
    // holds the nodes left out.
    for_each_partition(n + 1, [&](const std::vector<int>& label) {
      const int k = *std::max_element(label.begin(), label.end()) + 1;
      std::vector<std::vector<int>> blocks(k);
      for (int i = 0; i < n; ++i) blocks[label[i]].push_back(i);
      std::vector<int> unused = std::move(blocks[label[n]]);
      blocks.erase(blocks.begin() + label[n]);
      consider(blocks, unused);
    });
  } else {
    // Too many partitions to try: for each cluster count, deal the nodes,
    // fastest first, to the cluster with the least compute so far.
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return nodes[a].compute > nodes[b].compute; });
    for (int k = 1; k <= std::min(n, max_clusters); ++k) {
      std::vector<std::vector<int>> groups(k);
      std::vector<double> compute(k, 0.0);
      for (int i : order) {
        const int g = static_cast<int>(std::min_element(compute.begin(), compute.end()) - compute.begin());
        groups[g].push_back(i);
        compute[g] += nodes[i].compute;
      }
      consider(groups, {});
    }
  }
  if (!best) {
    throw InvalidArgument(fmt::format("cluster plan: no grouping of the {} nodes holds the whole model in any "
                                      "cluster ({} of memory in all; a stage also keeps up to one stashed version and "
                                      "one micro-batch's activations per stage of its pipeline)",
                                      n, gb(total)));
  }
  ClusterPlanResult result;
  result.clusters = std::move(*best);
  result.unused = std::move(best_unused);
  result.samples_per_s = samples_per_s(result.clusters, options);
  result.explanation = describe(nodes, result.clusters, result.unused, options, "bagua planner");
  return result;
}

ClusterPlanResult plan_clusters_ravnest(const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                                        const PlanOptions& options) {
  check_inputs(nodes, layers, options);
  const int n = static_cast<int>(nodes.size());
  const Prefix prefix(layers);
  // Ravnest's fitness: a cluster whose summed memory is below the model's
  // size is penalized by the shortfall; otherwise clusters should be alike
  // in their summed memory-over-bandwidth. No compute, no stage memory.
  const double model_bytes = prefix.params.back() * (2.0 + options.optimizer_state_factor);
  auto fitness = [&](const std::vector<int>& genes) {
    std::map<int, std::pair<double, double>> clusters;  // memory, memory / bandwidth
    for (int i = 0; i < n; ++i) {
      auto& c = clusters[genes[i]];
      c.first += nodes[i].memory_bytes;
      c.second += nodes[i].memory_bytes / nodes[i].bandwidth_mbit;
    }
    double shortfall = 0, mean = 0, var = 0;
    for (const auto& [id, c] : clusters) {
      shortfall += std::max(0.0, model_bytes - c.first);
      mean += c.second;
    }
    mean /= clusters.size();
    for (const auto& [id, c] : clusters) var += (c.second - mean) * (c.second - mean);
    var /= clusters.size();
    return -(shortfall / model_bytes) * 1e6 - std::sqrt(var) / (mean > 0 ? mean : 1) + 1e-3 * clusters.size();
  };
  std::mt19937 rng(2401);  // fixed: the same plan every time
  const int population = 40, generations = 80;
  std::uniform_int_distribution<int> gene(0, n - 1);
  std::vector<std::vector<int>> pop(population, std::vector<int>(n));
  for (auto& g : pop) {
    for (int& x : g) x = gene(rng);
  }
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<int> best = pop[0];
  double best_fit = fitness(best);
  for (int gen = 0; gen < generations; ++gen) {
    std::vector<double> fit(population);
    for (int i = 0; i < population; ++i) {
      fit[i] = fitness(pop[i]);
      if (fit[i] > best_fit) {
        best_fit = fit[i];
        best = pop[i];
      }
    }
    std::uniform_int_distribution<int> pick(0, population - 1);
    auto tournament = [&]() -> const std::vector<int>& {
      const int a = pick(rng), b = pick(rng);
      return fit[a] >= fit[b] ? pop[a] : pop[b];
    };
    std::vector<std::vector<int>> next{best};
    while (static_cast<int>(next.size()) < population) {
      const auto& p = tournament();
      const auto& q = tournament();
      std::vector<int> child(n);
      for (int i = 0; i < n; ++i) child[i] = unit(rng) < 0.5 ? p[i] : q[i];
      for (int& x : child) {
        if (unit(rng) < 0.1) x = gene(rng);
      }
      next.push_back(std::move(child));
    }
    pop = std::move(next);
  }
  // Clusters in order of first appearance; nodes in index order; layers
  // split equally (the first clusters' extra layers to the first stages).
  std::map<int, std::vector<int>> groups;
  std::vector<int> order;
  for (int i = 0; i < n; ++i) {
    if (!groups.count(best[i])) order.push_back(best[i]);
    groups[best[i]].push_back(i);
  }
  ClusterPlanResult result;
  for (int id : order) {
    auto chain = groups[id];
    if (chain.size() > layers.size()) chain.resize(layers.size());  // more nodes than layers: the rest idle
    std::vector<std::size_t> ends;
    const std::size_t m = chain.size(), L = layers.size();
    std::size_t end = 0;
    for (std::size_t i = 0; i < m; ++i) {
      end += L / m + (i < L % m ? 1 : 0);
      ends.push_back(end);
    }
    result.clusters.push_back(predict_split(nodes, chain, ends, layers, options));
  }
  result.samples_per_s = samples_per_s(result.clusters, options);
  result.explanation =
      describe(nodes, result.clusters, {}, options, "Ravnest's method (genetic algorithm, equal splits)");
  for (const auto& c : result.clusters) {
    for (const auto& s : c.stages) {
      if (s.memory_bytes > nodes[s.node].memory_bytes) {
        result.fits = false;
        result.explanation += fmt::format("  note: {} would need {} but has {}: this plan does not fit\n",
                                          nodes[s.node].name, gb(s.memory_bytes), gb(nodes[s.node].memory_bytes));
      }
    }
  }
  return result;
}

}  // namespace bagua
