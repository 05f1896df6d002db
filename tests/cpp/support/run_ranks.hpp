// Runs fn(rank, communicator) on n threads sharing one LoopbackWorld and
// rethrows the first failure on the test thread.
#pragma once

#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/loopback_communicator.hpp"

namespace bagua::testing {

inline void run_ranks(int n, const std::function<void(int, Communicator&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(20),
                      std::shared_ptr<LoopbackWorld> world = nullptr) {
  if (!world) world = LoopbackWorld::create(n);
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto comm = world->communicator(r, timeout);
        fn(r, *comm);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace bagua::testing
