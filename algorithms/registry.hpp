// Algorithms by name. A spec string is "name" or "name:key=value,key=value";
// unknown names and options are errors that list what is available.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/algorithm.hpp"
#include "topology/host_layout.hpp"

namespace bagua {

// Facts about the job an algorithm may need when it is built.
struct WorldInfo {
  int rank = 0;
  int size = 1;
  std::vector<long long> host_keys;  // one per rank; equal keys = same host
  // Each rank's link rate in Mbit/s, for plans that size work by bandwidth.
  // Asked only by an algorithm that needs it, on every rank alike: it may
  // run a collective probe. Unset when a spec is only being validated.
  std::function<std::vector<double>()> link_mbit;
  // The smallest of every rank's value, under the same rules (an algorithm
  // whose choice depends on this rank's machine must agree with the rest).
  std::function<int(int)> min_over_ranks;
};

using AlgorithmOptions = std::map<std::string, std::string>;

using AlgorithmFactory = std::function<std::unique_ptr<Algorithm>(const AlgorithmOptions&, const WorldInfo&)>;

struct AlgorithmEntry {
  std::string summary;
  // Accepted option keys with a one-line description each.
  std::map<std::string, std::string> options;
  AlgorithmFactory make;
  // What the algorithm needs from the Python wrapper, so that no algorithm
  // name is written into it. `optimizer`: the bagua_ravnest class the
  // wrapper's optimizer= must be ("" for any); such an optimizer carries the
  // hyperparameters the algorithm shares with it and writes the spec's
  // options itself (its algorithm_spec(name)).
  std::string optimizer;
  // Whether its post_optimizer_step_hook must follow the optimizer's step
  // (it changes the weights the step produced): the wrapper then needs
  // optimizer=, instead of calling the hook at the end of backward.
  bool needs_optimizer = false;
};

class AlgorithmRegistry {
 public:
  static AlgorithmRegistry& instance();

  void add(const std::string& name, AlgorithmEntry entry);
  std::vector<std::string> names() const;
  const AlgorithmEntry& entry(const std::string& name) const;  // throws, listing names
  std::unique_ptr<Algorithm> create(const std::string& spec, const WorldInfo& world) const;

  // Builds composed specs (no name, only parts: "codec=...,exchange=...").
  // Set by whoever knows the parts (builtin_algorithms.cpp), so that the
  // registry itself knows no concrete algorithm.
  void set_composer(AlgorithmFactory composer);

 private:
  std::map<std::string, AlgorithmEntry> entries_;
  AlgorithmFactory composer_;
};

// Splits "name:k=v,k=v" into its name and options; throws on malformed text.
// A composed spec ("codec=minmax_uint8,exchange=allreduce") has no name: it
// comes back with an empty name and all its parts as options.
std::pair<std::string, AlgorithmOptions> parse_algorithm_spec(const std::string& spec);

// Splits a comma-separated list of specs, as command lines write them:
// "a,b:x=1,y=2,c" -> {"a", "b:x=1,y=2", "c"} (a key=value continues the spec
// before it when that spec has options or is composed);
// "ddp,codec=fp16,exchange=allreduce" -> {"ddp", "codec=fp16,exchange=allreduce"}.
std::vector<std::string> split_algorithm_specs(const std::string& text);

// Helpers for factories: typed option lookups with clear errors.
bool option_bool(const AlgorithmOptions& options, const std::string& key, bool fallback);
// The host layout for an algorithm's `hierarchical=true` (nullopt when
// false); throws, naming `who`, when the world has no host key per rank.
std::optional<HostLayout> hosts_if_hierarchical(bool hierarchical, const WorldInfo& world, const std::string& who);

// A finite number.
double option_number(const AlgorithmOptions& options, const std::string& key, double fallback);
// An integer >= minimum.
std::uint64_t option_count(const AlgorithmOptions& options, const std::string& key, std::uint64_t fallback,
                           std::uint64_t minimum = 1);
std::string option_choice(const AlgorithmOptions& options, const std::string& key,
                          const std::vector<std::string>& choices, const std::string& fallback);

}  // namespace bagua
