// The options of qadam and onebit_adam: what a spec may set and how it is
// read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "algorithms/registry.hpp"

namespace bagua {

struct QAdamOptions {
  std::string name = "qadam";
  std::string codec = "minmax_uint8";
  bool error_feedback = false;
  // Values per codec header. Adam divides each momentum by its own sqrt(v),
  // so the compression error must follow each region's own scale, not the
  // range of a whole chunk (one chunk of a bucket mixes layers whose
  // momenta differ by orders of magnitude). onebit_adam uses
  // kOnebitBlockElems (algorithms/onebit_adam).
  std::size_t block_elems = 4096;
  std::uint64_t warmup_steps = 100;
  // double, as Python passes it: the momentum weight 1 - beta1 is then
  // rounded to fp32 once, like torch's lerp_(g, 1 - beta1) does.
  double beta1 = 0.9;
  bool precondition = false;
  double beta2 = 0.999;  // with precondition: the variance's decay, as the optimizer's betas[1]
  double eps = 1e-8;     // with precondition: as the optimizer's eps
  // How the optimizer's variance goes on after the switch (the optimizer
  // does the arithmetic; the algorithm only carries the choice, so that the
  // start-up agreement sees it: ranks with different rules would drift
  // apart). "recovered": it keeps learning from the averaged gradient that
  // two consecutive averaged momenta give back; "momentum": from the square
  // of the averaged momentum (a sign codec cannot give a gradient back);
  // "frozen": as at the switch. docs/qadam.md.
  std::string variance = "recovered";
};

// The values `variance=` takes.
inline const std::vector<std::string>& qadam_variance_rules() {
  static const std::vector<std::string> rules{"recovered", "momentum", "frozen"};
  return rules;
}

// Reads warmup_steps, beta1, precondition, beta2, eps and variance from a spec's
// options (shared by qadam and onebit_adam).
QAdamOptions parse_qadam_options(const AlgorithmOptions& o, QAdamOptions defaults);

// The options both take, with their help text.
std::map<std::string, std::string> qadam_option_docs();

}  // namespace bagua
