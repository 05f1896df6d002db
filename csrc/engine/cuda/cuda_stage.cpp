#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <thread>

#include "core/error.hpp"
#include "engine/cuda/cuda_stage.hpp"

namespace bagua::cuda {
namespace {

void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(fmt::format("CUDA {} failed: {}", what, cudaGetErrorString(rc)));
}

cudaStream_t stream_of(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// Makes `device` current on this thread for a scope, then restores the
// caller's: the stage is called from autograd's, the lanes' and the user's
// threads, whose current device torch relies on.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    restore_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// An event recorded on some stream. cudaEventSynchronize has no timeout, so
// a host wait polls the event, with a sleep that grows to 1 ms.
class EventPoint : public StagePoint {
 public:
  // `keep`: what the work before the event uses, alive as long as the point.
  EventPoint(int device, cudaStream_t stream, std::shared_ptr<void> keep = nullptr)
      : device_(device), keep_(std::move(keep)) {
    DeviceGuard guard(device_);
    check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventRecord(event_, stream), "cudaEventRecord");
  }
  ~EventPoint() override {
    DeviceGuard guard(device_);
    cudaEventDestroy(event_);
  }
  EventPoint(const EventPoint&) = delete;
  EventPoint& operator=(const EventPoint&) = delete;

  bool reached() {
    DeviceGuard guard(device_);
    const cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaSuccess) return true;
    if (rc != cudaErrorNotReady) check(rc, "cudaEventQuery");
    return false;
  }

  bool wait_for(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto nap = std::chrono::microseconds(5);
    for (;;) {
      if (reached()) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
  cudaEvent_t event() const { return event_; }

 private:
  int device_;
  std::shared_ptr<void> keep_;
  cudaEvent_t event_ = nullptr;
};

class CudaStage : public DeviceStage {
 public:
  explicit CudaStage(int device) : device_(device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
    if (device < 0 || device >= count) {
      throw InvalidArgument(fmt::format("no CUDA device {} here ({} visible)", device, count));
    }
    DeviceGuard guard(device_);
    // Non-blocking: the legacy default stream must not serialise with it.
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  // Copies in flight write buffers that their points keep alive: waits for
  // them, at most kDrainLimit (a hung device must not hang the process);
  // past it the stream and those buffers are left behind, never freed under
  // a copy.
  ~CudaStage() override {
    try {
      DeviceGuard guard(device_);
      const auto deadline = std::chrono::steady_clock::now() + kDrainLimit;
      cudaError_t rc;
      while ((rc = cudaStreamQuery(stream_)) == cudaErrorNotReady && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (rc == cudaErrorNotReady) {
        new std::deque<StagePointPtr>(std::move(in_flight_));  // deliberately leaked, see above
        return;
      }
      in_flight_.clear();
      cudaStreamDestroy(stream_);
    } catch (...) {
      // A destructor cannot report.
    }
  }

  StagePointPtr record(std::uintptr_t producer) override {
    return std::make_shared<EventPoint>(device_, stream_of(producer));
  }

  StagePointPtr copy_out(const void* device, void* host, std::size_t bytes, const StagePointPtr& after,
                         std::shared_ptr<void> keep) override {
    std::lock_guard lock(mu_);
    DeviceGuard guard(device_);
    if (auto* point = dynamic_cast<EventPoint*>(after.get())) {
      check(cudaStreamWaitEvent(stream_, point->event(), 0), "cudaStreamWaitEvent");
    }
    check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (to host)");
    return track(std::make_shared<EventPoint>(device_, stream_, std::move(keep)));
  }

  StagePointPtr copy_in(const void* host, void* device, std::size_t bytes, std::shared_ptr<void> keep) override {
    std::lock_guard lock(mu_);
    DeviceGuard guard(device_);
    check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (to device)");
    return track(std::make_shared<EventPoint>(device_, stream_, std::move(keep)));
  }

  void order_before(const StagePointPtr& point, std::uintptr_t consumer, std::chrono::milliseconds timeout,
                    const std::string& what) override {
    auto* event = dynamic_cast<EventPoint*>(point.get());
    if (!event) {
      wait_for_point(*this, point, timeout, what);
      return;
    }
    DeviceGuard guard(device_);
    check(cudaStreamWaitEvent(stream_of(consumer), event->event(), 0), "cudaStreamWaitEvent");
  }

  std::string name() const override { return fmt::format("cuda:{}", device_); }

 private:
  static constexpr std::chrono::seconds kDrainLimit{60};

  // The stage holds every copy's point (and so the buffers it keeps) until
  // the copy has run, even when its caller let go of it (a timed-out job);
  // reached ones are dropped at the next copy. With mu_ held.
  StagePointPtr track(std::shared_ptr<EventPoint> point) {
    while (!in_flight_.empty() && static_cast<EventPoint&>(*in_flight_.front()).reached()) in_flight_.pop_front();
    in_flight_.push_back(point);
    return point;
  }

  const int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;  // keeps each copy and its event together in the stream's order
  std::deque<StagePointPtr> in_flight_;  // copies in stream order, oldest first
};

}  // namespace

DeviceStagePtr make_stage(int device) { return std::make_shared<CudaStage>(device); }

}  // namespace bagua::cuda
