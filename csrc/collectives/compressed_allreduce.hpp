// All-reduce with compressed messages (BAGUA's scatter-reduce): the buffer
// is cut into one chunk per rank; every rank sends each other rank that
// rank's chunk, compressed; the owner decodes all copies, adds them in fp32
// in rank order (its own copy also passes through the codec, so every
// contribution is treated alike), averages, compresses the result once and
// sends it to everyone, who decodes it. All ranks end with identical values:
//     chunk_r = D(C(op_q D(C(x_q[chunk_r]))))      for op = sum or average.
// Wire volume per rank: 2 (n-1)/n of the buffer, in the codec's size.
#pragma once

#include <vector>

#include "codec/codec.hpp"
#include "comm/communicator.hpp"

namespace bagua {

// Error feedback on both sides of the exchange (1-bit Adam): what a rank's
// compression of its chunks loses (`worker`, count values) and what the
// owner's compression of the reduced chunk loses (`server`, the owned
// chunk's values) is added to the next call's values instead of being lost.
struct ErrorFeedbackBuffers {
  std::vector<float>* worker = nullptr;
  std::vector<float>* server = nullptr;
};

// `ranks`: the group (ascending or not, the same list on every member);
// the calling rank must be in it. A group of one leaves `data` as it is.
// `op`: Sum or Avg. `feedback`: null, or both residuals (sized by the caller
// with compressed_allreduce_owned_count for the server side).
void compressed_allreduce(Communicator& comm, const std::vector<int>& ranks, float* data, std::size_t count,
                          const Codec& codec, ReduceOp op, Tag tag, const ErrorFeedbackBuffers* feedback = nullptr);

// After an average (op = Avg) of n ranks: the variance of the error that
// the codec's rounding added to each averaged value, estimated from the
// averaged values alone (every rank gets the same answer). The owner's
// encoding of a chunk adds the codec's rounding variance at the chunk's
// own scale; the n senders' encodings, averaged, add 1/n of theirs, taken
// at the same scale (a sender's block usually spans more than the
// average's, which cancels some of each sender's spread: the estimate errs
// low, never inventing variance that is not there). False where the codec cannot say (codec.hpp).
bool compressed_average_rounding_variance(const float* averaged, std::size_t count, int n, const Codec& codec,
                                          float* out);

// How many values of a `count`-value buffer the rank at `position` of an
// n-rank group owns (reduces) in compressed_allreduce.
std::size_t compressed_allreduce_owned_count(std::size_t count, int n, int position);

}  // namespace bagua
