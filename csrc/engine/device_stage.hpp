// The device work of a bucket whose tensors live off the host (a GPU): the
// copies between its device buffer and its host staging buffer, and the
// points that order them against the device's own work (the backward pass
// that wrote the gradients, the optimizer step that reads the result).
//
// The engine stays torch-free and CUDA-free by seeing only this interface.
// Two implementations: CudaStage (cuda/cuda_stage.hpp: a copy stream, events,
// pinned host memory) and ThreadedStage (threaded_stage.hpp: copies on a
// thread of its own, with injected delays, so that the CPU suite proves the
// engine's ordering).
//
// A queue is what a device orders work on (a cudaStream_t, passed as an
// integer; 0 is the device's default). Thread rules: every call may come
// from any thread (autograd's, a communication lane, the training thread);
// an implementation serialises its own copies in call order.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bagua {

// A point in a stage's work: reached once everything enqueued before it ran.
class StagePoint {
 public:
  virtual ~StagePoint() = default;
  // Blocks the calling host thread until the point is reached, at most
  // `timeout`; returns whether it was.
  virtual bool wait_for(std::chrono::milliseconds timeout) = 0;
};
using StagePointPtr = std::shared_ptr<StagePoint>;

class DeviceStage {
 public:
  virtual ~DeviceStage() = default;

  // What the queue `producer` has reached now (recorded, not waited for):
  // the gradients autograd has written into a bucket so far.
  virtual StagePointPtr record(std::uintptr_t producer) = 0;
  // Copies `bytes` from device address `device` to host address `host` once
  // `after` is reached; returns the copy's end. Never blocks the caller.
  // `keep` (the buffers' owner) stays alive until the copy has run, even
  // when nobody waits for it any more (a timed-out job).
  virtual StagePointPtr copy_out(const void* device, void* host, std::size_t bytes, const StagePointPtr& after,
                                 std::shared_ptr<void> keep) = 0;
  // Copies `bytes` from host to device after every copy enqueued before it;
  // returns its end. Never blocks the caller; `keep` as for copy_out.
  virtual StagePointPtr copy_in(const void* host, void* device, std::size_t bytes, std::shared_ptr<void> keep) = 0;
  // Makes the queue `consumer` wait for `point` before its later work (an
  // optimizer step). Where the device can order this itself (CUDA: a stream
  // waits for an event) the host does not block; elsewhere the caller
  // blocks until the point is reached, and a point not reached within
  // `timeout` is a TimeoutError naming `what`.
  virtual void order_before(const StagePointPtr& point, std::uintptr_t consumer, std::chrono::milliseconds timeout,
                            const std::string& what) = 0;
  // For logs and errors: "cuda:0", "threaded".
  virtual std::string name() const = 0;
};
using DeviceStagePtr = std::shared_ptr<DeviceStage>;

// Waits for `point` on the calling host thread; a point not reached within
// `timeout` is a TimeoutError naming `what` and the stage.
void wait_for_point(const DeviceStage& stage, const StagePointPtr& point, std::chrono::milliseconds timeout,
                    const std::string& what);

}  // namespace bagua
