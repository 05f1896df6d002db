// The engine's staging of buckets that live on a device, through a
// ThreadedStage whose copies lag: the exchange must read the gradients the
// copy out brought (not the host buffer's old contents), and the end of
// backward must not return before the copy back has landed. Removing
// either wait in engine.cpp makes these tests fail.
#include <gtest/gtest.h>

#include <cmath>

#include "algorithms/registry.hpp"
#include "core/error.hpp"
#include "engine/engine.hpp"
#include "engine/threaded_stage.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using namespace std::chrono_literals;

namespace {

// A bucket's "device" buffer and its host staging buffer.
struct StagedBucket {
  std::vector<float> device;
  std::vector<float> host;
};

std::vector<BucketSpec> specs_of(std::vector<StagedBucket>& buckets) {
  std::vector<BucketSpec> specs;
  std::size_t tensor = 0;
  for (auto& b : buckets) {
    BucketSpec spec{b.host.data(), b.host.size(), DType::F32, {tensor++}};
    spec.device = b.device.data();
    specs.push_back(spec);
  }
  return specs;
}

// `quantized`: the exchange rounds to 8 bits twice (reduce-scatter, then
// all-gather), each off by at most a chunk's range / 255; no rank's own
// value is within that of the mean, so a copy back that had not landed
// still fails the check.
void run_staged(const std::string& algorithm, int world_size, int lanes, bool quantized) {
  auto world = LoopbackWorld::create(world_size);
  std::vector<std::exception_ptr> errors(world_size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        auto algo = AlgorithmRegistry::instance().create(algorithm, WorldInfo{rank, world_size, {}});
        Engine engine(world->communicator(rank, 10s), std::move(algo), 10s, lanes);
        auto stage = std::make_shared<ThreadedStage>(ThreadedStage::Delays{.copy_out = 20ms, .copy_in = 20ms});
        engine.set_stage(stage);
        std::vector<StagedBucket> buckets(3);
        for (std::size_t b = 0; b < buckets.size(); ++b) {
          buckets[b].device.assign(1000 + 7 * b, 0.0f);
          // What a host buffer held before: an exchange that read it would
          // spread NaN into every rank's result.
          buckets[b].host.assign(buckets[b].device.size(), std::nanf(""));
        }
        engine.set_buckets(specs_of(buckets), buckets.size());
        for (int iteration = 0; iteration < 3; ++iteration) {
          // "Backward" writes this iteration's gradients on the device.
          for (std::size_t b = 0; b < buckets.size(); ++b) {
            for (std::size_t i = 0; i < buckets[b].device.size(); ++i) {
              buckets[b].device[i] = float(rank + 1) * float(iteration + 1) + float(i % 5);
            }
            engine.mark_ready(b);
          }
          engine.wait_all();
          // The mean over ranks of (r + 1) * (it + 1) + i % 5, on the device.
          float mean_rank = 0;
          for (int r = 0; r < world_size; ++r) mean_rank += float(r + 1);
          mean_rank /= float(world_size);
          for (std::size_t b = 0; b < buckets.size(); ++b) {
            for (std::size_t i = 0; i < buckets[b].device.size(); i += 97) {
              const float expected = mean_rank * float(iteration + 1) + float(i % 5);
              const float range = float(world_size * (iteration + 1) + 4);
              const float tolerance = quantized ? 2 * range / 255 : 1e-4f;
              ASSERT_NEAR(buckets[b].device[i], expected, tolerance)
                  << "rank " << rank << " iteration " << iteration << " bucket " << b << " value " << i;
            }
          }
        }
        EXPECT_EQ(stage->copies_out(), 9u);
        EXPECT_EQ(stage->copies_in(), 9u);
      } catch (...) {
        errors[rank] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace

TEST(EngineStaging, GradientAllreduceSeesTheCopiedGradientsAndReturnsOnlyOnceTheyLanded) {
  run_staged("gradient_allreduce", 2, 2, false);
}

TEST(EngineStaging, CompressedExchangeOverLanesAtWorldFour) { run_staged("bytegrad", 4, 2, true); }

TEST(EngineStaging, RefusesWhatItCannotStage) {
  auto world = LoopbackWorld::create(1);
  auto algo = AlgorithmRegistry::instance().create("gradient_allreduce", WorldInfo{0, 1, {}});
  Engine engine(world->communicator(0, 1s), std::move(algo), 1s);
  std::vector<StagedBucket> buckets(1);
  buckets[0].device.assign(4, 1.0f);
  buckets[0].host.assign(4, 0.0f);
  EXPECT_THROW(engine.set_buckets(specs_of(buckets), 1), InvalidArgument);  // no stage
  engine.set_stage(std::make_shared<ThreadedStage>());
  EXPECT_THROW(engine.set_buckets(BucketRole::Weights, specs_of(buckets), 1), InvalidArgument);
  engine.set_buckets(specs_of(buckets), 1);
  EXPECT_THROW(engine.set_stage(std::make_shared<ThreadedStage>()), Error);  // after the buckets
}

TEST(EngineStaging, ACopyThatNeverLandsIsAnErrorNamingTheBucket) {
  // Declared before the engine: the late copy still runs (the stage ends
  // with the engine) and must find its buffers.
  std::vector<StagedBucket> buckets(1);
  buckets[0].device.assign(4, 1.0f);
  buckets[0].host.assign(4, 0.0f);
  auto world = LoopbackWorld::create(1);
  auto algo = AlgorithmRegistry::instance().create("gradient_allreduce", WorldInfo{0, 1, {}});
  Engine engine(world->communicator(0, 200ms), std::move(algo), 200ms);
  engine.set_stage(std::make_shared<ThreadedStage>(ThreadedStage::Delays{.copy_out = 1500ms}));
  engine.set_buckets(specs_of(buckets), 1);
  engine.mark_ready(0);
  try {
    engine.wait_all();
    FAIL() << "wait_all returned although the copy to host had not finished";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bucket 0"), std::string::npos) << e.what();
  }
}

}  // namespace bagua
