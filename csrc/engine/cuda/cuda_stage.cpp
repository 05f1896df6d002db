#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
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

// An event recorded on some stream. cudaEventSynchronize has no timeout, so
// a host wait polls the event, with a sleep that grows to 1 ms.
class EventPoint : public StagePoint {
 public:
  // `keep`: what the work before the event uses, alive as long as the point.
  EventPoint(int device, cudaStream_t stream, std::shared_ptr<void> keep = nullptr)
      : device_(device), keep_(std::move(keep)) {
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventRecord(event_, stream), "cudaEventRecord");
  }
  ~EventPoint() override { cudaEventDestroy(event_); }
  EventPoint(const EventPoint&) = delete;
  EventPoint& operator=(const EventPoint&) = delete;

  bool wait_for(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto nap = std::chrono::microseconds(5);
    for (;;) {
      const cudaError_t rc = cudaEventQuery(event_);
      if (rc == cudaSuccess) return true;
      if (rc != cudaErrorNotReady) check(rc, "cudaEventQuery");
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
    check(cudaSetDevice(device_), "cudaSetDevice");
    // Non-blocking: the legacy default stream must not serialise with it.
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaStage() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);  // copies in flight write buffers their owners still hold
    cudaStreamDestroy(stream_);
  }

  StagePointPtr record(std::uintptr_t producer) override {
    return std::make_shared<EventPoint>(device_, stream_of(producer));
  }

  // A copy's buffers stay alive with its point; a point dropped early (a
  // timed-out job) leaves them to the stream's synchronisation in ~CudaStage
  // only if their owner outlives the stage, which the engine's does.
  StagePointPtr copy_out(const void* device, void* host, std::size_t bytes, const StagePointPtr& after,
                         std::shared_ptr<void> keep) override {
    std::lock_guard lock(mu_);
    check(cudaSetDevice(device_), "cudaSetDevice");
    if (auto* point = dynamic_cast<EventPoint*>(after.get())) {
      check(cudaStreamWaitEvent(stream_, point->event(), 0), "cudaStreamWaitEvent");
    }
    check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (to host)");
    return std::make_shared<EventPoint>(device_, stream_, std::move(keep));
  }

  StagePointPtr copy_in(const void* host, void* device, std::size_t bytes, std::shared_ptr<void> keep) override {
    std::lock_guard lock(mu_);
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (to device)");
    return std::make_shared<EventPoint>(device_, stream_, std::move(keep));
  }

  void order_before(const StagePointPtr& point, std::uintptr_t consumer, std::chrono::milliseconds timeout,
                    const std::string& what) override {
    auto* event = dynamic_cast<EventPoint*>(point.get());
    if (!event) {
      wait_for_point(*this, point, timeout, what);
      return;
    }
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaStreamWaitEvent(stream_of(consumer), event->event(), 0), "cudaStreamWaitEvent");
  }

  std::string name() const override { return fmt::format("cuda:{}", device_); }

 private:
  const int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;  // keeps each copy and its event together in the stream's order
};

}  // namespace

DeviceStagePtr make_stage(int device) { return std::make_shared<CudaStage>(device); }

}  // namespace bagua::cuda
