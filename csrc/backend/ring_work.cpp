#include "backend/ring_work.hpp"

namespace bagua {

RingWork::RingWork(int rank, std::vector<at::Tensor> tensors, const char* profiling_name)
    : c10d::Work(rank, c10d::OpType::ALLREDUCE, profiling_name, tensors),
      tensors_(std::move(tensors)),
      future_(c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {}

void RingWork::complete(std::exception_ptr error) {
  // Work first: callbacks chained on the future run inside markCompleted,
  // and code they release may already ask the Work whether it is done.
  finish(error);
  if (error) {
    future_->setError(error);
  } else {
    future_->markCompleted(c10::IValue(tensors_));
  }
}

}  // namespace bagua
