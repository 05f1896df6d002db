#include "algorithms/composition.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "algorithms/bytegrad/bytegrad.hpp"
#include "core/error.hpp"

namespace bagua {
namespace {

const std::vector<std::string> kKeys{"codec", "exchange", "hierarchical"};
const std::vector<std::string> kExchanges{"allreduce"};
// Codecs that can be averaged as they are; sign1bit needs error feedback.
const std::vector<std::string> kAllreduceCodecs{"identity", "fp16", "bf16", "minmax_uint8"};

}  // namespace

std::unique_ptr<Algorithm> compose_algorithm(const AlgorithmOptions& parts, const WorldInfo& world) {
  for (const auto& [key, _] : parts) {
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      throw InvalidArgument(fmt::format("composed algorithm: unknown part '{}'; parts are {}", key, fmt::join(kKeys, ", ")));
    }
  }
  const std::string exchange = option_choice(parts, "exchange", kExchanges, "allreduce");
  const auto codec_it = parts.find("codec");
  if (codec_it == parts.end()) {
    throw InvalidArgument(fmt::format("composed algorithm: name a codec (codec=...); with exchange={} the codecs are {}",
                                      exchange, fmt::join(kAllreduceCodecs, ", ")));
  }
  const std::string& codec = codec_it->second;
  if (codec == "sign1bit") {
    throw InvalidArgument(
        "composed algorithm: codec=sign1bit with exchange=allreduce is not meaningful: averaging signs loses the "
        "gradient's magnitude unless each side keeps an error-feedback residual, which a plain all-reduce does not "
        "(that is 1-bit Adam's job); with exchange=allreduce choose one of " +
        fmt::format("{}", fmt::join(kAllreduceCodecs, ", ")));
  }
  const std::string chosen = option_choice(parts, "codec", kAllreduceCodecs, "");
  const bool hierarchical = option_bool(parts, "hierarchical", false);
  return make_bytegrad(fmt::format("codec={},exchange={},", chosen, exchange), chosen, hierarchical, world);
}

}  // namespace bagua
