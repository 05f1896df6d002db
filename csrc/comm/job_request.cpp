#include "comm/job_request.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

void JobRequest::finish(std::exception_ptr error) {
  std::lock_guard lock(mu_);
  done_ = true;
  error_ = std::move(error);
  cv_.notify_all();
}

void JobRequest::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return done_; })) {
    throw TimeoutError(fmt::format("{} did not finish within {} ms", label_, timeout.count()));
  }
  if (error_) std::rethrow_exception(error_);
}

}  // namespace bagua
