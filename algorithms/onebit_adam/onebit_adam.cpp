// onebit_adam (1-bit Adam, DeepSpeed style): qadam's schedule and optimizer
// (algorithms/qadam) with the momentum sent as signs times one scale per
// chunk (sign1bit), and an error-feedback residual on each side of the
// exchange: every rank for the chunks it sends, and the owner of a chunk for
// the reduced chunk it sends back. What compression loses in one step is
// added to the next, so over time nothing is lost.
#include "algorithms/qadam/qadam.hpp"

namespace bagua {

// One sign scale per 256 values, where qadam's 8-bit codes have one range
// per 4096. A sign gives every value of its block the block's mean |m|, so
// a value far below that mean is sent as the mean, and the error feedback
// carries the difference into the next steps. Through the momentum, which
// every rank replaces by the compressed average, that residual moves the
// weights by about lr * |e| / (1 - beta1) / sqrt(v_hat): ten times the
// residual with beta1 = 0.9. Smaller blocks make the scale follow the
// local size of the momentum (an embedding's rows of frequent and rare
// bytes, a layer's few large units), so the residuals stay small.
// Measured on the real-data task (charlm, world 4, a 4-step warm-up, 120
// steps; docs/qadam.md): held-out loss +8.9% of exact Adam with blocks of
// 4096, +3.6% with 1024, +3.8% with 512, +3.4% with 256 (and the closest
// curve early on: +5% at step 20 against +17%). A longer warm-up did not
// do it (+5.4% after 32 exact steps with 4096). Cost: 48 bytes per 256
// values instead of 528 per 4096, 1/21 of fp32 instead of 1/31.
constexpr std::size_t kOnebitBlockElems = 256;

void register_onebit_adam(AlgorithmRegistry& registry) {
  registry.add("onebit_adam",
               AlgorithmEntry{
                   "Adam with momenta averaged as 1-bit signs with error feedback after an exact warm-up "
                   "(use with bagua_ravnest.QAdamOptimizer)",
                   qadam_option_docs(),
                   [](const AlgorithmOptions& o, const WorldInfo& world) -> std::unique_ptr<Algorithm> {
                     QAdamOptions defaults;
                     defaults.name = "onebit_adam";
                     defaults.codec = "sign1bit";
                     defaults.error_feedback = true;
                     defaults.block_elems = kOnebitBlockElems;
                     // Signs give every value its block's scale: the
                     // difference of two averaged momenta is mostly that
                     // scale's flips, not a gradient (docs/qadam.md).
                     defaults.variance = "momentum";
                     return std::make_unique<QAdam>(parse_qadam_options(o, defaults), world.rank, world.size);
                   },
                   "QAdamOptimizer"});
}

}  // namespace bagua
