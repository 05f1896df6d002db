#include "algorithms/qadam/qadam_options.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

QAdamOptions parse_qadam_options(const AlgorithmOptions& o, QAdamOptions opts) {
  opts.warmup_steps = option_count(o, "warmup_steps", opts.warmup_steps, 0);
  opts.beta1 = option_number(o, "beta1", opts.beta1);
  opts.precondition = option_bool(o, "precondition", opts.precondition);
  opts.variance = option_choice(o, "variance", qadam_variance_rules(), opts.variance);
  for (auto [key, target] : {std::pair{"beta2", &opts.beta2}, std::pair{"eps", &opts.eps}}) {
    auto it = o.find(key);
    if (it == o.end()) continue;
    if (!opts.precondition) {
      throw InvalidArgument(fmt::format("{}: {} is used only with precondition=true", opts.name, key));
    }
    *target = option_number(o, key, *target);
  }
  return opts;
}

std::map<std::string, std::string> qadam_option_docs() {
  return {{"warmup_steps", "steps of exact Adam before compression starts (default 100)"},
          {"beta1", "momentum decay, as the optimizer's betas[0] (default 0.9)"},
          {"precondition", "true: compress the momentum divided by Adam's frozen denominator (default false)"},
          {"beta2", "with precondition: the variance's decay, as the optimizer's betas[1] (default 0.999)"},
          {"eps", "with precondition: as the optimizer's eps (default 1e-8)"},
          {"variance",
           "the optimizer's variance after the warm-up: recovered (learns from the averaged gradient that two "
           "averaged momenta give back), momentum (learns from the averaged momentum's square) or frozen "
           "(qadam: recovered, onebit_adam: momentum)"}};
}

}  // namespace bagua
