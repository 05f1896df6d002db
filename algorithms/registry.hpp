// Algorithms by name. A spec string is "name" or "name:key=value,key=value";
// unknown names and options are errors that list what is available.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/algorithm.hpp"

namespace bagua {

// Facts about the job an algorithm may need when it is built.
struct WorldInfo {
  int rank = 0;
  int size = 1;
  std::vector<long long> host_keys;  // one per rank; equal keys = same host
};

using AlgorithmOptions = std::map<std::string, std::string>;

struct AlgorithmEntry {
  std::string summary;
  // Accepted option keys with a one-line description each.
  std::map<std::string, std::string> options;
  std::function<std::unique_ptr<Algorithm>(const AlgorithmOptions&, const WorldInfo&)> make;
};

class AlgorithmRegistry {
 public:
  static AlgorithmRegistry& instance();

  void add(const std::string& name, AlgorithmEntry entry);
  std::vector<std::string> names() const;
  const AlgorithmEntry& entry(const std::string& name) const;  // throws, listing names
  std::unique_ptr<Algorithm> create(const std::string& spec, const WorldInfo& world) const;

 private:
  std::map<std::string, AlgorithmEntry> entries_;
};

// Splits "name:k=v,k=v" into its name and options; throws on malformed text.
// A composed spec ("codec=minmax_uint8,exchange=allreduce") has no name: it
// comes back with an empty name and all its parts as options.
std::pair<std::string, AlgorithmOptions> parse_algorithm_spec(const std::string& spec);

// Helpers for factories: typed option lookups with clear errors.
bool option_bool(const AlgorithmOptions& options, const std::string& key, bool fallback);
std::string option_choice(const AlgorithmOptions& options, const std::string& key,
                          const std::vector<std::string>& choices, const std::string& fallback);

}  // namespace bagua
