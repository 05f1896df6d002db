#include "engine/engine.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "algorithms/registry.hpp"
#include "collectives/ring_allreduce.hpp"
#include "comm/tags.hpp"
#include "core/error.hpp"
#include "support/run_ranks.hpp"

namespace bagua {
using namespace std::chrono_literals;

namespace {

// Records the order buckets reach the algorithm, and averages them.
class RecordingAlgorithm final : public Algorithm {
 public:
  std::string spec() const override { return "recording"; }
  void on_bucket_ready(const BucketView& b, StepContext& ctx) override {
    {
      std::lock_guard lock(mu);
      order.push_back(b.index);
    }
    ctx.comm.allreduce(b.data, b.count, b.dtype, ReduceOp::Avg)->wait(ctx.comm.timeout());
  }
  std::mutex mu;
  std::vector<int> order;
};

}  // namespace

TEST(Engine, LaunchesBucketsInOrderWhateverTheReadyOrder) {
  auto world = LoopbackWorld::create(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      auto algo = std::make_shared<RecordingAlgorithm>();
      // Three lanes, but this algorithm does not allow buckets to overlap
      // (its all-reduce is matched by issue order), so order stays strict.
      Engine engine(world->communicator(rank, 5s), algo, 5s, /*lanes=*/3);
      std::vector<float> b0(3, float(rank)), b1(2, float(rank * 2));
      engine.set_buckets({{b0.data(), 3, DType::F32, {0, 1}}, {b1.data(), 2, DType::F32, {2}}}, 3);
      // Bucket 1 completes first; it must still run after bucket 0.
      engine.mark_ready(2);
      engine.mark_ready(rank == 0 ? 1 : 0);
      engine.mark_ready(rank == 0 ? 0 : 1);
      engine.wait_all();
      EXPECT_EQ(algo->order, (std::vector<int>{0, 1}));
      EXPECT_EQ(b0[0], 0.5f);
      EXPECT_EQ(b1[1], 1.0f);
      EXPECT_TRUE(engine.unready_tensors().size() == 3);  // reset for the next iteration
    });
  }
  for (auto& t : threads) t.join();
}

TEST(Engine, LanesRunBucketsConcurrentlyAndCorrectly) {
  // Ranks mark the six buckets ready in opposite orders; with three lanes,
  // buckets overlap, yet every lane's sequence is the same on both ranks.
  auto world = LoopbackWorld::create(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      auto algo = AlgorithmRegistry::instance().create("gradient_allreduce", WorldInfo{rank, 2, {}});
      Engine engine(world->communicator(rank, 5s), std::move(algo), 5s, /*lanes=*/3);
      std::vector<std::vector<float>> data(6);
      std::vector<BucketSpec> specs;
      for (std::size_t b = 0; b < 6; ++b) {
        data[b].assign(1000 + b, float(rank * 10 + b));
        specs.push_back({data[b].data(), data[b].size(), DType::F32, {b}});
      }
      engine.set_buckets(specs, 6);
      for (int iteration = 0; iteration < 3; ++iteration) {
        for (std::size_t i = 0; i < 6; ++i) engine.mark_ready(rank == 0 ? i : 5 - i);
        engine.wait_all();
      }
      for (std::size_t b = 0; b < 6; ++b) EXPECT_EQ(data[b].back(), 5.f + b) << "bucket " << b;
    });
  }
  for (auto& t : threads) t.join();
}

TEST(Engine, MultiRingGradientAllreduceOnUnevenLinksWithLanes) {
  // gradient_allreduce:allreduce=multi_ring asks the world for link rates
  // (once, on every rank), plans uneven shares from them, and averages
  // buckets that overlap on three lanes, each operation over three rings
  // with its own tags.
  constexpr int n = 4;
  auto world = LoopbackWorld::create(n);
  std::atomic<int> asked{0};
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      WorldInfo info{rank, n, {}};
      info.link_mbit = [&] {
        ++asked;
        return std::vector<double>{1000, 1000, 100, 20};
      };
      auto algo = AlgorithmRegistry::instance().create("gradient_allreduce:allreduce=multi_ring,rings=3", info);
      EXPECT_EQ(algo->spec(), "gradient_allreduce:allreduce=multi_ring,hierarchical=false,rings=3,directions=one");
      EXPECT_NE(algo->plan_description().find("20 Mbit/s"), std::string::npos) << algo->plan_description();
      Engine engine(world->communicator(rank, 5s), std::move(algo), 5s, /*lanes=*/3);
      std::vector<std::vector<float>> data(5);
      std::vector<BucketSpec> specs;
      for (std::size_t b = 0; b < 5; ++b) {
        data[b].assign(70'000 + b, float(rank * 10 + b));  // parts above 64 KiB: all three rings run
        specs.push_back({data[b].data(), data[b].size(), DType::F32, {b}});
      }
      engine.set_buckets(specs, 5);
      for (int iteration = 0; iteration < 2; ++iteration) {
        for (std::size_t i = 0; i < 5; ++i) engine.mark_ready(rank % 2 == 0 ? i : 4 - i);
        engine.wait_all();
      }
      // Mean over ranks of rank*10 + b is 15 + b; averaged again, unchanged.
      for (std::size_t b = 0; b < 5; ++b) {
        for (float v : data[b]) ASSERT_EQ(v, 15.f + b) << "bucket " << b;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(asked.load(), n);
}

TEST(Engine, DeadPeerBecomesTimeoutNamingRankOpAndBucket) {
  auto world = LoopbackWorld::create(2);
  world->kill(1);
  auto algo = AlgorithmRegistry::instance().create("gradient_allreduce", WorldInfo{0, 2, {}});
  Engine engine(world->communicator(0, 300ms), std::move(algo), 2s);
  std::vector<float> b(64, 1.f);
  engine.set_buckets({{b.data(), b.size(), DType::F32, {0}}}, 1);
  engine.mark_ready(0);
  try {
    engine.wait_all();
    FAIL() << "expected a timeout";
  } catch (const TimeoutError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("gradient_allreduce"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bucket 0"), std::string::npos) << msg;
  }
  // The failure sticks: the next iteration is refused with the first error
  // instead of reusing a transport that lost a peer.
  try {
    engine.wait_all();
    FAIL() << "expected the earlier failure";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("failed earlier"), std::string::npos) << e.what();
  }
}

namespace {
class StuckAlgorithm final : public Algorithm {
 public:
  std::string spec() const override { return "stuck"; }
  void on_bucket_ready(const BucketView&, StepContext&) override { std::this_thread::sleep_for(1500ms); }
};
}  // namespace

TEST(Engine, WatchdogFiresForAnOperationWithoutItsOwnTimeout) {
  auto world = LoopbackWorld::create(1);
  Engine engine(world->communicator(0, 1s), std::make_shared<StuckAlgorithm>(), 200ms);
  float x = 0;
  engine.set_buckets({{&x, 1, DType::F32, {0}}}, 1);
  engine.mark_ready(0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(engine.wait_all(), TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1200ms);
}

TEST(Engine, MisuseIsReported) {
  auto world = LoopbackWorld::create(1);
  Engine engine(world->communicator(0, 1s), std::make_shared<RecordingAlgorithm>(), 1s);
  float x[2] = {0, 0};
  engine.set_buckets({{x, 2, DType::F32, {0, 1}}}, 2);
  EXPECT_THROW(engine.mark_ready(7), InvalidArgument);
  engine.mark_ready(0);
  EXPECT_THROW(engine.mark_ready(0), Error);
  EXPECT_EQ(engine.unready_tensors(), (std::vector<std::size_t>{1}));
  EXPECT_THROW(engine.wait_all(), Error);  // bucket never became ready
}

namespace {

// Contract v2 from the algorithm's side: weight buckets, work launched from
// a hook, a reset after a given step, a control and a thread of its own.
class WeightsAlgorithm final : public Algorithm {
 public:
  std::string spec() const override { return "weights"; }
  std::vector<BucketRole> bucket_roles() const override {
    return reset_done ? std::vector<BucketRole>{BucketRole::Gradients} : std::vector<BucketRole>{BucketRole::Weights};
  }
  std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(BucketRole role,
                                                                          const std::vector<TensorInfo>& tensors,
                                                                          const BucketingOptions&) override {
    if (role == BucketRole::Gradients) return std::nullopt;
    std::vector<std::size_t> all(tensors.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    return std::vector<std::vector<std::size_t>>{all};
  }
  void forward_pre_hook(StepContext& ctx) override {
    hook_tags.push_back(ctx.tags[0]);
    // Sums the weights over ranks on the communication thread, into a copy.
    ctx.launch("sum of weights", [this](StepContext& job) {
      job_tags.push_back(job.tags[0]);
      const BucketView& w = job.weights[0];
      sum.assign(static_cast<float*>(w.data), static_cast<float*>(w.data) + w.count);
      ring_allreduce(job.comm, Ring::natural(job.comm.size()), sum.data(), sum.size(), DType::F32, ReduceOp::Sum,
                     job.tags[0]);
    });
  }
  void post_backward_hook(StepContext& ctx) override {
    auto* w = static_cast<float*>(ctx.weights[0].data);
    std::copy(sum.begin(), sum.end(), w);
  }
  bool need_reset(std::uint64_t step) override {
    if (step == 2 && !reset_done) return reset_done = true;
    return false;
  }
  void start(ThreadContext ctx) override {
    started = true;
    thread_tag = ctx.tags.next()[0];
  }
  void stop(std::chrono::milliseconds) override { ++stops; }
  std::vector<std::string> controls() const override { return {"poke"}; }
  void control(const std::string& name, StepContext&) override { pokes.push_back(name); }

  std::vector<float> sum;
  std::vector<Tag> hook_tags, job_tags;
  std::vector<std::string> pokes;
  bool reset_done = false, started = false;
  int stops = 0;
  Tag thread_tag = 0;
};

}  // namespace

TEST(Engine, ContractTwoWeightsLaunchResetControlsAndThread) {
  auto world = LoopbackWorld::create(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      auto algo = std::make_shared<WeightsAlgorithm>();
      {
        Engine engine(world->communicator(rank, 5s), algo, 5s);
        std::vector<TensorInfo> tensors{{3, DType::F32}, {2, DType::F32}};
        ASSERT_EQ(engine.bucket_roles(), std::vector<BucketRole>{BucketRole::Weights});
        const auto plan = engine.plan(BucketRole::Weights, tensors, {});
        ASSERT_EQ(plan, (std::vector<std::vector<std::size_t>>{{0, 1}}));
        std::vector<float> weights{1, 2, 3, 4, float(rank)};
        engine.set_buckets(BucketRole::Weights, {{weights.data(), 5, DType::F32, plan.front()}}, 2);
        engine.start();
        EXPECT_TRUE(algo->started);
        EXPECT_GE(algo->thread_tag, tags::kAlgorithmThreadBase);
        for (int step = 0; step < 2; ++step) {
          engine.forward_pre_hook();
          engine.wait_all();  // no gradient buckets: waits for the launched job, then post_backward
          engine.post_optimizer_step_hook();
          EXPECT_EQ(engine.need_reset(), step == 1);
        }
        // Two steps of summing over two ranks: x4 (the last weight: (0 + 1) * 2).
        EXPECT_EQ(weights, (std::vector<float>{4, 8, 12, 16, 2}));
        // Hooks and jobs got tag blocks of their own, in the same order on every rank.
        EXPECT_EQ(algo->job_tags.size(), 2u);
        EXPECT_NE(algo->job_tags[0], algo->hook_tags[0]);
        EXPECT_EQ(engine.bucket_roles(), std::vector<BucketRole>{BucketRole::Gradients});
        engine.control("poke");
        EXPECT_EQ(algo->pokes, std::vector<std::string>{"poke"});
        try {
          engine.control("shake");
          FAIL();
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("poke"), std::string::npos) << e.what();
        }
        engine.stop();
        engine.stop();  // idempotent
      }
      EXPECT_EQ(algo->stops, 1);  // and the destructor does not stop twice
    });
  }
  for (auto& t : threads) t.join();
}

TEST(Engine, AnAlgorithmsOwnPlanIsChecked) {
  class BadPlan final : public Algorithm {
   public:
    std::string spec() const override { return "bad_plan"; }
    std::optional<std::vector<std::vector<std::size_t>>> tensors_to_buckets(BucketRole, const std::vector<TensorInfo>&,
                                                                            const BucketingOptions&) override {
      return std::vector<std::vector<std::size_t>>{{0}, {0}};
    }
  };
  auto world = LoopbackWorld::create(1);
  Engine engine(world->communicator(0, 1s), std::make_shared<BadPlan>(), 1s);
  EXPECT_THROW(engine.plan(BucketRole::Gradients, {{1, DType::F32}, {1, DType::F32}}, {}), InvalidArgument);
}

}  // namespace bagua
