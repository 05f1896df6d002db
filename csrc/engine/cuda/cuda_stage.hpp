// The DeviceStage of a CUDA device: copies run on a non-blocking stream of
// the stage's own, points are CUDA events, and order_before makes the
// consumer's stream wait for an event (the host never blocks on the device).
// Host buffers should be pinned (torch's pin_memory) for the copies to be
// asynchronous. CUDA-header-free, like codec/cuda/cuda_codec.hpp; without a
// CUDA build make_stage says how to get one.
#pragma once

#include "engine/device_stage.hpp"

namespace bagua::cuda {

// A stage for device `device`; throws when this build or machine has no
// CUDA device of that index.
DeviceStagePtr make_stage(int device);

}  // namespace bagua::cuda
