// A handle to an asynchronous communication operation.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

namespace bagua {

class Request {
 public:
  virtual ~Request() = default;
  // Blocks until the operation is done. Throws TimeoutError when `timeout`
  // passes first, or the operation's own failure (a bagua::Error).
  virtual void wait(std::chrono::milliseconds timeout) = 0;
};

using RequestPtr = std::shared_ptr<Request>;

// An operation that finished when it was issued (buffered sends, local no-ops).
class CompletedRequest final : public Request {
 public:
  void wait(std::chrono::milliseconds) override {}
};

// Waits for every request (null entries are skipped: operations that sent
// nothing), each with `timeout`, then empties the list.
inline void wait_all(std::vector<RequestPtr>& requests, std::chrono::milliseconds timeout) {
  for (auto& r : requests) {
    if (r) r->wait(timeout);
  }
  requests.clear();
}

}  // namespace bagua
