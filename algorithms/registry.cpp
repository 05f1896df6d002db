#include "algorithms/registry.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace bagua {

void register_builtin_algorithms(AlgorithmRegistry& registry);  // builtin_algorithms.cpp

AlgorithmRegistry& AlgorithmRegistry::instance() {
  static AlgorithmRegistry* registry = [] {
    auto* r = new AlgorithmRegistry();
    register_builtin_algorithms(*r);
    return r;
  }();
  return *registry;
}

void AlgorithmRegistry::add(const std::string& name, AlgorithmEntry entry) {
  if (!entries_.emplace(name, std::move(entry)).second) {
    throw InvalidArgument(fmt::format("algorithm '{}' is registered twice", name));
  }
}

std::vector<std::string> AlgorithmRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : entries_) out.push_back(name);
  return out;
}

const AlgorithmEntry& AlgorithmRegistry::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw InvalidArgument(
        fmt::format("unknown algorithm '{}'; available: {}", name, fmt::join(names(), ", ")));
  }
  return it->second;
}

std::unique_ptr<Algorithm> AlgorithmRegistry::create(const std::string& spec, const WorldInfo& world) const {
  auto [name, options] = parse_algorithm_spec(spec);
  if (name.empty()) {
    if (!composer_) throw InvalidArgument(fmt::format("'{}' is a composed spec, and this build composes none", spec));
    return composer_(options, world);
  }
  const AlgorithmEntry& e = entry(name);
  for (const auto& [key, _] : options) {
    if (!e.options.count(key)) {
      std::vector<std::string> valid;
      for (const auto& [k, _d] : e.options) valid.push_back(k);
      throw InvalidArgument(fmt::format("algorithm '{}' has no option '{}'; valid options: {}", name, key,
                                        valid.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(valid, ", "))));
    }
  }
  return e.make(options, world);
}

void AlgorithmRegistry::set_composer(AlgorithmFactory composer) { composer_ = std::move(composer); }

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// "k=v,k=v" (values may contain ':', as in exchange=decentralized:shift_one).
AlgorithmOptions parse_options(const std::string& text, const std::string& spec) {
  AlgorithmOptions options;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    std::string item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!item.empty()) {
      const auto eq = item.find('=');
      if (eq == std::string::npos) {
        throw InvalidArgument(fmt::format("algorithm option '{}' in '{}' is not of the form key=value", item, spec));
      }
      std::string key = trim(item.substr(0, eq));
      if (!options.emplace(key, trim(item.substr(eq + 1))).second) {
        throw InvalidArgument(fmt::format("algorithm option '{}' is given twice in '{}'", key, spec));
      }
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return options;
}

}  // namespace

std::pair<std::string, AlgorithmOptions> parse_algorithm_spec(const std::string& spec) {
  // A composed spec starts with a key: its first '=' comes before any ':' or ','.
  const auto first = spec.find_first_of(":,=");
  if (first != std::string::npos && spec[first] == '=') return {"", parse_options(spec, spec)};
  const auto colon = spec.find(':');
  std::string name = trim(spec.substr(0, colon));
  if (name.empty()) throw InvalidArgument(fmt::format("algorithm spec '{}' has no name", spec));
  AlgorithmOptions options;
  if (colon != std::string::npos) options = parse_options(spec.substr(colon + 1), spec);
  return {name, options};
}

std::vector<std::string> split_algorithm_specs(const std::string& text) {
  std::vector<std::string> out;
  // Whether the last spec takes options: a following key=value is one of them.
  bool open = false;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const std::string token = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!token.empty()) {
      const auto eq = token.find('=');
      const bool key_value = eq != std::string::npos && token.substr(0, eq).find(':') == std::string::npos;
      if (key_value && open) {
        out.back() += "," + token;
      } else {
        out.push_back(token);
        // Opened by options after a name ("b:x=1") or by a first part ("codec=fp16").
        open = token.find(':') != std::string::npos || key_value;
      }
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool option_bool(const AlgorithmOptions& options, const std::string& key, bool fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  std::string v = it->second;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  throw InvalidArgument(fmt::format("option {}='{}' is not a boolean; use true or false", key, it->second));
}

std::optional<HostLayout> hosts_if_hierarchical(bool hierarchical, const WorldInfo& world, const std::string& who) {
  if (!hierarchical) return std::nullopt;
  if (static_cast<int>(world.host_keys.size()) != world.size) {
    throw InvalidArgument(fmt::format("{}: hierarchical=true needs one host key per rank", who));
  }
  return HostLayout::from_host_keys(world.host_keys);
}

double option_number(const AlgorithmOptions& options, const std::string& key, double fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (it->second.empty() || used != it->second.size() || !std::isfinite(value)) {
    throw InvalidArgument(fmt::format("option {}='{}' is not a number", key, it->second));
  }
  return value;
}

std::uint64_t option_count(const AlgorithmOptions& options, const std::string& key, std::uint64_t fallback,
                           std::uint64_t minimum) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  const std::string& text = it->second;
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    if (!text.empty() && text[0] != '-') value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || value < minimum) {
    throw InvalidArgument(fmt::format("option {}='{}' is not an integer >= {}", key, text, minimum));
  }
  return value;
}

std::string option_choice(const AlgorithmOptions& options, const std::string& key,
                          const std::vector<std::string>& choices, const std::string& fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  if (std::find(choices.begin(), choices.end(), it->second) == choices.end()) {
    throw InvalidArgument(
        fmt::format("option {}='{}' is not valid; choose one of: {}", key, it->second, fmt::join(choices, ", ")));
  }
  return it->second;
}

}  // namespace bagua
