// CudaStage under the engine: gradient buckets in device memory, staged
// through host buffers, averaged over two ranks. Skipped (saying why)
// without a CUDA build or device.
#include "engine/cuda/cuda_stage.hpp"

#include <gtest/gtest.h>

#include "algorithms/registry.hpp"
#include "codec/cuda/cuda_codec.hpp"
#include "engine/engine.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using namespace std::chrono_literals;

TEST(CudaStage, EngineAveragesBucketsThatLiveOnTheDevice) {
  if (!cuda::built() || cuda::device_count() == 0) {
    GTEST_SKIP() << (cuda::built() ? "no CUDA device here" : "this build has no CUDA support (no nvcc)");
  }
  auto world = LoopbackWorld::create(2);
  std::vector<std::exception_ptr> errors(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        const std::size_t n = 100003;
        cuda::DeviceBuffer device(n * sizeof(float));
        std::vector<float> host(n), values(n);
        auto algo = AlgorithmRegistry::instance().create("gradient_allreduce", WorldInfo{rank, 2, {}});
        Engine engine(world->communicator(rank, 10s), std::move(algo), 10s);
        engine.set_stage(cuda::make_stage(0));
        BucketSpec spec{host.data(), n, DType::F32, {0}};
        spec.device = device.data();
        engine.set_buckets({spec}, 1);
        for (int iteration = 0; iteration < 3; ++iteration) {
          for (std::size_t i = 0; i < n; ++i) values[i] = float(rank + 1) * float(iteration + 1) + float(i % 7);
          device.upload(values.data(), n * sizeof(float));
          engine.mark_ready(0);
          engine.wait_all();  // the legacy default stream waits for the copy back
          cuda::synchronize();
          device.download(values.data(), n * sizeof(float));
          for (std::size_t i = 0; i < n; i += 101) {
            ASSERT_FLOAT_EQ(values[i], 1.5f * float(iteration + 1) + float(i % 7)) << "rank " << rank << " at " << i;
          }
        }
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

}  // namespace bagua
