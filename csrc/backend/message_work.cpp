#include "backend/message_work.hpp"

namespace bagua {

MessageWork::MessageWork(int rank, c10d::OpType type, const char* profiling_name, RequestPtr request,
                         at::Tensor target, at::Tensor staging, std::chrono::milliseconds default_timeout)
    : c10d::Work(rank, type, profiling_name, std::vector<at::Tensor>{target}),
      request_(std::move(request)),
      target_(std::move(target)),
      staging_(std::move(staging)),
      default_timeout_(default_timeout),
      receiving_(type == c10d::OpType::RECV) {}

bool MessageWork::wait(std::chrono::milliseconds timeout) {
  if (isCompleted()) return Work::wait(timeout);  // done before: rethrows its error, if any
  std::exception_ptr error;
  try {
    request_->wait(timeout == ::kNoTimeout ? default_timeout_ : timeout);
    if (receiving_ && !staging_.is_same(target_)) target_.copy_(staging_);
  } catch (...) {
    error = std::current_exception();
  }
  finish(error);
  if (error) std::rethrow_exception(error);
  return true;
}

}  // namespace bagua
