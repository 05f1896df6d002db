// The Work handle of a user's send or recv that the backend carries over
// its shared-memory transport (same-host peers): completed by waiting on the
// transport's request, bounded by the group's timeout when the caller
// gives none.
#pragma once

#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>

#include "comm/request.hpp"

namespace bagua {

class MessageWork final : public c10d::Work {
 public:
  // `staging`: the contiguous tensor the message is carried in; for a recv
  // into a non-contiguous `target`, copied there once the message is in.
  MessageWork(int rank, c10d::OpType type, const char* profiling_name, RequestPtr request, at::Tensor target,
              at::Tensor staging, std::chrono::milliseconds default_timeout);

  bool wait(std::chrono::milliseconds timeout = ::kNoTimeout) override;
  std::vector<at::Tensor> result() override { return {target_}; }

 private:
  RequestPtr request_;
  at::Tensor target_, staging_;
  std::chrono::milliseconds default_timeout_;
  bool receiving_;
};

}  // namespace bagua
