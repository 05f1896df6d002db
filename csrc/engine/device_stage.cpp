#include "engine/device_stage.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace bagua {

void wait_for_point(const DeviceStage& stage, const StagePointPtr& point, std::chrono::milliseconds timeout,
                    const std::string& what) {
  if (!point) return;  // nothing was enqueued
  if (!point->wait_for(timeout)) {
    throw TimeoutError(fmt::format("{}: the {} copy did not finish within {} ms (is the device hung?)", what,
                                   stage.name(), timeout.count()));
  }
}

}  // namespace bagua
