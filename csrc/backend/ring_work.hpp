// The Work handle of an all-reduce that the backend runs on its own
// communication thread (our ring, or a compressed all-reduce). Completion marks both the Work (wait/isCompleted) and
// its Future (getFuture, which DDP comm hooks chain on).
#pragma once

#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace bagua {

class RingWork final : public c10d::Work {
 public:
  // `profiling_name`: how torch's profiler and flight recorder name it.
  RingWork(int rank, std::vector<at::Tensor> tensors, const char* profiling_name);

  // Called once by the communication thread.
  void complete(std::exception_ptr error);

  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }
  std::vector<at::Tensor> result() override { return tensors_; }

 private:
  std::vector<at::Tensor> tensors_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

}  // namespace bagua
