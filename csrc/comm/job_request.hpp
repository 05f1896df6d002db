// A Request completed by whoever runs a job (a communication thread): wait()
// returns when the job finished, rethrows its error, and turns a job still
// running after the timeout into a TimeoutError naming it.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>

#include "comm/request.hpp"

namespace bagua {

class JobRequest final : public Request {
 public:
  explicit JobRequest(std::string label) : label_(std::move(label)) {}
  void finish(std::exception_ptr error);
  void wait(std::chrono::milliseconds timeout) override;

 private:
  std::string label_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

}  // namespace bagua
