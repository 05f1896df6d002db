#include "algorithms/composition.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "algorithms/bytegrad/bytegrad.hpp"
#include "core/error.hpp"
#include "topology/peer_selection.hpp"

namespace bagua {
namespace {

const std::vector<std::string> kKeys{"codec", "exchange", "schedule", "hierarchical"};
const std::vector<std::string> kCodecs{"identity", "fp16", "bf16", "minmax_uint8", "sign1bit"};
// Codecs that can be averaged as they are; sign1bit needs error feedback.
const std::vector<std::string> kAllreduceCodecs{"identity", "fp16", "bf16", "minmax_uint8"};

constexpr const char* kValid =
    "valid combinations: exchange=allreduce with schedule=step (every step's gradients; codec identity, fp16, bf16 "
    "or minmax_uint8), schedule=every:N (the weights every N steps, local SGD; any codec, sign1bit with error "
    "feedback) or schedule=async:MS (the weights on a background thread every MS ms; codec=identity); "
    "exchange=decentralized:all|shift_one|ring with codec=identity and schedule=step, every:N or async:MS; "
    "exchange=decentralized:ring with a lossy codec (fp16, bf16, minmax_uint8, sign1bit) and schedule=step or "
    "every:N";

// Who talks to whom: the all-reduce, or peers of a decentralized mode.
struct Exchange {
  bool decentralized = false;
  PeerMode mode = PeerMode::All;
  std::string text;
};

// When, and on what: every step's gradients, the weights every N steps, or
// the weights on a background thread every N ms.
struct Schedule {
  enum class Kind { Step, Every, Async } kind = Kind::Step;
  std::uint64_t n = 1;
  std::string text;
};

[[noreturn]] void refuse(const std::string& why) {
  throw InvalidArgument(fmt::format("composed algorithm: {}; {}", why, kValid));
}

Exchange parse_exchange(const AlgorithmOptions& parts) {
  const auto it = parts.find("exchange");
  Exchange out;
  out.text = it == parts.end() ? "allreduce" : it->second;
  if (out.text == "allreduce") return out;
  const std::string prefix = "decentralized:";
  if (out.text.rfind(prefix, 0) != 0) {
    refuse(fmt::format("exchange={} is not an exchange (allreduce, or decentralized:<{}>)", out.text,
                       fmt::join(peer_mode_names(), "|")));
  }
  out.decentralized = true;
  out.mode = peer_mode_from_name(out.text.substr(prefix.size()));
  return out;
}

std::uint64_t count_after(const std::string& text, std::size_t at, std::uint64_t minimum) {
  const std::string digits = text.substr(at);
  if (digits.empty() || digits.size() > 12 || !std::all_of(digits.begin(), digits.end(), ::isdigit) ||
      std::stoull(digits) < minimum) {
    refuse(fmt::format("schedule={} needs a whole number >= {} after the colon", text, minimum));
  }
  return std::stoull(digits);
}

Schedule parse_schedule(const AlgorithmOptions& parts) {
  const auto it = parts.find("schedule");
  Schedule out;
  out.text = it == parts.end() ? "step" : it->second;
  if (out.text == "step") return out;
  if (out.text.rfind("every:", 0) == 0) {
    out.kind = Schedule::Kind::Every;
    out.n = count_after(out.text, 6, 1);
  } else if (out.text.rfind("async:", 0) == 0) {
    out.kind = Schedule::Kind::Async;
    out.n = count_after(out.text, 6, 0);
  } else {
    refuse(fmt::format("schedule={} is not a schedule (step, every:N, async:MS)", out.text));
  }
  return out;
}

std::unique_ptr<Algorithm> named(const std::string& spec, const WorldInfo& world) {
  return AlgorithmRegistry::instance().create(spec, world);
}

}  // namespace

std::unique_ptr<Algorithm> compose_algorithm(const AlgorithmOptions& parts, const WorldInfo& world) {
  for (const auto& [key, _] : parts) {
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      throw InvalidArgument(fmt::format("composed algorithm: unknown part '{}'; parts are {}", key, fmt::join(kKeys, ", ")));
    }
  }
  const Exchange exchange = parse_exchange(parts);
  const Schedule schedule = parse_schedule(parts);
  const auto codec_it = parts.find("codec");
  if (codec_it == parts.end()) {
    throw InvalidArgument(fmt::format("composed algorithm: name a codec (codec=...; identity for none): {}",
                                      fmt::join(kCodecs, ", ")));
  }
  const std::string codec = option_choice(parts, "codec", kCodecs, "");
  const bool lossy = codec != "identity";
  const bool hierarchical = option_bool(parts, "hierarchical", false);
  const bool gradients = !exchange.decentralized && schedule.kind == Schedule::Kind::Step;
  if (hierarchical && !gradients && !(exchange.decentralized && !lossy && schedule.kind != Schedule::Kind::Async)) {
    refuse("hierarchical=true is built for exchange=allreduce with schedule=step and for exchange=decentralized "
           "with codec=identity and schedule=step or every:N");
  }
  if (gradients) {
    if (codec == "sign1bit") {
      refuse("codec=sign1bit with exchange=allreduce and schedule=step is not meaningful: averaging signs loses "
             "the gradient's magnitude unless each side keeps an error-feedback residual, which a plain "
             "all-reduce does not (that is 1-bit Adam's job, or local SGD's with schedule=every:N)");
    }
    return make_bytegrad(fmt::format("codec={},exchange=allreduce,", codec), codec, hierarchical, world);
  }
  if (schedule.kind == Schedule::Kind::Async) {
    if (lossy) {
      refuse(fmt::format("codec={} with schedule=async is not built: the background rounds average exact fp32 "
                         "snapshots (codec=identity)", codec));
    }
    return named(fmt::format("async_model_average:sync_interval_ms={},peer_selection_mode={}", schedule.n,
                             peer_mode_name(exchange.mode)), world);
  }
  // The weights, every N steps.
  if (!exchange.decentralized) return named(fmt::format("local_sgd:period={},codec={}", schedule.n, codec), world);
  if (!lossy) {
    return named(fmt::format("decentralized:peer_selection_mode={},communication_interval={},hierarchical={}",
                             peer_mode_name(exchange.mode), schedule.n, hierarchical ? "true" : "false"),
                 world);
  }
  if (exchange.mode != PeerMode::Ring) {
    refuse(fmt::format("codec={} with exchange={} is not meaningful: compressed gossip sends differences that "
                       "each side adds to its copy of the sender, which needs fixed neighbours (ring); {} changes "
                       "or widens them", codec, exchange.text, peer_mode_name(exchange.mode)));
  }
  return named(fmt::format("low_precision_decentralized:codec={},communication_interval={}", codec, schedule.n),
               world);
}

}  // namespace bagua
