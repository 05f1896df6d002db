#include "algorithms/registry.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"

namespace bagua {

TEST(Registry, ParsesSpecs) {
  auto [name, opts] = parse_algorithm_spec(" gradient_allreduce : hierarchical=true , allreduce = inner ");
  EXPECT_EQ(name, "gradient_allreduce");
  EXPECT_EQ(opts.at("hierarchical"), "true");
  EXPECT_EQ(opts.at("allreduce"), "inner");
  EXPECT_THROW(parse_algorithm_spec("x:novalue"), InvalidArgument);
  EXPECT_THROW(parse_algorithm_spec("x:a=1,a=2"), InvalidArgument);
  EXPECT_THROW(parse_algorithm_spec(":a=1"), InvalidArgument);
}

TEST(Registry, SplitsListsOfSpecs) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split_algorithm_specs("a, b:x=1,y=2 ,c"), (V{"a", "b:x=1,y=2", "c"}));
  EXPECT_EQ(split_algorithm_specs("ddp,codec=fp16,exchange=allreduce,qadam"),
            (V{"ddp", "codec=fp16,exchange=allreduce", "qadam"}));
  EXPECT_EQ(split_algorithm_specs("x:a=exchange:ring,b=2,y"), (V{"x:a=exchange:ring,b=2", "y"}));
  EXPECT_EQ(split_algorithm_specs(",,a,,"), (V{"a"}));
  EXPECT_EQ(split_algorithm_specs(""), V{});
}

TEST(Registry, UnknownNameListsAvailable) {
  try {
    AlgorithmRegistry::instance().create("nope", WorldInfo{});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("gradient_allreduce"), std::string::npos) << e.what();
  }
}

TEST(Registry, BadOptionsAreExplained) {
  auto& reg = AlgorithmRegistry::instance();
  try {
    reg.create("gradient_allreduce:colour=red", WorldInfo{0, 2, {}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("hierarchical"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reg.create("gradient_allreduce:allreduce=magic", WorldInfo{0, 2, {}}), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:hierarchical=maybe", WorldInfo{0, 2, {}}), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:hierarchical=true", WorldInfo{0, 2, {}}), InvalidArgument);
  auto a = reg.create("gradient_allreduce:hierarchical=1", WorldInfo{0, 2, {5, 5}});
  EXPECT_EQ(a->spec(), "gradient_allreduce:allreduce=ring,hierarchical=true");
}

TEST(Registry, MultiRingGradientAllreduce) {
  auto& reg = AlgorithmRegistry::instance();
  int asked = 0;
  WorldInfo world{0, 4, {}};
  world.link_mbit = [&] {
    ++asked;
    return std::vector<double>{};
  };
  // The rates are asked only by an algorithm that plans with them.
  EXPECT_EQ(reg.create("gradient_allreduce", world)->spec(), "gradient_allreduce:allreduce=ring,hierarchical=false");
  EXPECT_EQ(asked, 0);
  int agreed = 0;
  world.min_over_ranks = [&](int v) {
    ++agreed;
    EXPECT_GE(v, 1);
    EXPECT_LE(v, 4);
    return 1;
  };
  auto a = reg.create("gradient_allreduce:allreduce=multi_ring", world);
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(agreed, 1);  // rings=auto: this rank's proposal, agreed with the others
  EXPECT_EQ(a->spec(), "gradient_allreduce:allreduce=multi_ring,hierarchical=false,rings=auto,directions=one");
  EXPECT_NE(a->plan_description().find("1 ring ("), std::string::npos) << a->plan_description();
  EXPECT_EQ(reg.create("gradient_allreduce:allreduce=multi_ring,rings=3", world)->spec(),
            "gradient_allreduce:allreduce=multi_ring,hierarchical=false,rings=3,directions=one");
  EXPECT_EQ(agreed, 1);  // a number given is not agreed: it is the same everywhere
  EXPECT_NE(a->plan_description().find("equal chunks"), std::string::npos);
  // Validation (no rates at all) builds the same canonical form.
  EXPECT_EQ(reg.create(a->spec(), WorldInfo{0, 4, {}})->spec(), a->spec());
  EXPECT_THROW(reg.create("gradient_allreduce:rings=2", world), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:directions=both", world), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:allreduce=multi_ring,directions=up", world), InvalidArgument);
  EXPECT_EQ(reg.create("gradient_allreduce:allreduce=multi_ring,directions=both,rings=4", world)->spec(),
            "gradient_allreduce:allreduce=multi_ring,hierarchical=false,rings=4,directions=both");
  EXPECT_THROW(reg.create("gradient_allreduce:allreduce=multi_ring,rings=0", world), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:allreduce=multi_ring,rings=9", world), InvalidArgument);
  EXPECT_THROW(reg.create("gradient_allreduce:allreduce=multi_ring,hierarchical=true", WorldInfo{0, 2, {5, 5}}),
               InvalidArgument);
}

TEST(Registry, ComposedSpecsBuildFromTheirParts) {
  auto& reg = AlgorithmRegistry::instance();
  const WorldInfo world{0, 4, {0, 0, 1, 1}};
  auto [name, opts] = parse_algorithm_spec("codec=minmax_uint8, exchange=allreduce");
  EXPECT_EQ(name, "");
  EXPECT_EQ(opts.at("codec"), "minmax_uint8");
  EXPECT_EQ(reg.create("codec=minmax_uint8,exchange=allreduce", world)->spec(),
            "codec=minmax_uint8,exchange=allreduce,hierarchical=false");
  EXPECT_EQ(reg.create("codec=fp16", world)->spec(), "codec=fp16,exchange=allreduce,hierarchical=false");
  EXPECT_EQ(reg.create("codec=bf16,hierarchical=true", world)->spec(),
            "codec=bf16,exchange=allreduce,hierarchical=true");
  auto message = [&](const std::string& spec) {
    try {
      reg.create(spec, world);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("codec=sign1bit,exchange=allreduce").find("error-feedback"), std::string::npos);
  EXPECT_NE(message("codec=zip").find("minmax_uint8"), std::string::npos);
  EXPECT_NE(message("codec=fp16,exchange=gossip").find("allreduce"), std::string::npos);
  EXPECT_NE(message("exchange=allreduce").find("name a codec"), std::string::npos);
  EXPECT_NE(message("codec=fp16,when=now").find("parts are codec, exchange, schedule, hierarchical"),
            std::string::npos);
}

TEST(Registry, ComposedWeightsSchedulesAndExchanges) {
  auto& reg = AlgorithmRegistry::instance();
  const WorldInfo world{1, 4, {0, 0, 1, 1}};
  auto spec = [&](const std::string& text) { return reg.create(text, world)->spec(); };
  EXPECT_EQ(spec("codec=minmax_uint8,exchange=decentralized:ring,schedule=every:4"),
            "low_precision_decentralized:check_interval=100,codec=minmax_uint8,communication_interval=4");
  EXPECT_EQ(spec("codec=sign1bit,exchange=decentralized:ring"),
            "low_precision_decentralized:check_interval=100,codec=sign1bit,communication_interval=1");
  EXPECT_EQ(spec("codec=identity,exchange=decentralized:shift_one,schedule=every:2,hierarchical=true"),
            "decentralized:communication_interval=2,hierarchical=true,peer_selection_mode=shift_one");
  EXPECT_EQ(spec("codec=sign1bit,schedule=every:4"),
            "local_sgd:codec=sign1bit,nesterov=false,outer_lr=1,outer_momentum=0,overlap=false,period=4");
  EXPECT_EQ(spec("codec=identity,exchange=decentralized:ring,schedule=async:200"),
            "async_model_average:max_lag=0,peer_selection_mode=ring,sync_interval_ms=200,warmup_steps=0");
  EXPECT_EQ(spec("codec=identity,schedule=async:0"),
            "async_model_average:max_lag=0,peer_selection_mode=all,sync_interval_ms=0,warmup_steps=0");

  // Each meaningless combination says why and lists what is valid.
  auto message = [&](const std::string& text, const WorldInfo& w) {
    try {
      reg.create(text, w);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto refused = [&](const std::string& text, const std::string& why) {
    const std::string m = message(text, world);
    EXPECT_NE(m.find(why), std::string::npos) << text << ": " << m;
    EXPECT_NE(m.find("valid combinations"), std::string::npos) << text << ": " << m;
  };
  refused("codec=minmax_uint8,exchange=decentralized:shift_one", "needs fixed neighbours");
  refused("codec=fp16,exchange=decentralized:all,schedule=every:3", "needs fixed neighbours");
  refused("codec=fp16,schedule=async:100", "average exact fp32 snapshots");
  refused("codec=sign1bit,exchange=allreduce", "error-feedback");
  refused("codec=fp16,exchange=decentralized:ring,hierarchical=true", "hierarchical=true is built for");
  refused("codec=identity,schedule=every:0", "whole number >= 1");
  refused("codec=identity,schedule=sometimes", "not a schedule");
  refused("codec=identity,exchange=decentralized", "not an exchange");
  EXPECT_NE(message("codec=identity,exchange=decentralized:star", world).find("ring"), std::string::npos);
  // shift_one on an odd world: the algorithm it builds refuses it, saying why.
  const WorldInfo odd{0, 3, {0, 1, 2}};
  EXPECT_NE(message("codec=identity,exchange=decentralized:shift_one", odd).find("even number"), std::string::npos);
  EXPECT_NE(message("codec=identity,exchange=decentralized:shift_one,schedule=async:10", odd).find("even number"),
            std::string::npos);
}

TEST(Registry, BytegradPresets) {
  auto& reg = AlgorithmRegistry::instance();
  const WorldInfo world{0, 2, {0, 0}};
  EXPECT_EQ(reg.create("bytegrad", world)->spec(), "bytegrad:hierarchical=false");
  EXPECT_EQ(reg.create("fp16_allreduce:hierarchical=true", world)->spec(), "fp16_allreduce:hierarchical=true");
  EXPECT_THROW(reg.create("bytegrad:codec=fp16", world), InvalidArgument);
}

TEST(Registry, QAdamOptions) {
  auto& reg = AlgorithmRegistry::instance();
  const WorldInfo world{0, 2, {0, 0}};
  EXPECT_EQ(reg.create("qadam:warmup_steps=7,beta1=0.8", world)->spec(), "qadam:beta1=0.8,variance=recovered,warmup_steps=7");
  EXPECT_THROW(reg.create("qadam:warmup_steps=-1", world), InvalidArgument);
  EXPECT_THROW(reg.create("qadam:warmup_steps=many", world), InvalidArgument);
  EXPECT_THROW(reg.create("qadam:beta1=1.0", world), InvalidArgument);
  EXPECT_THROW(reg.create("qadam:beta1=x", world), InvalidArgument);
  // The variance rule travels in the spec (the start-up agreement compares
  // it); each algorithm has its own default.
  EXPECT_EQ(reg.create("qadam:variance=frozen", world)->spec(), "qadam:beta1=0.9,variance=frozen,warmup_steps=100");
  EXPECT_EQ(reg.create("onebit_adam", world)->spec(), "onebit_adam:beta1=0.9,variance=momentum,warmup_steps=100");
  EXPECT_EQ(reg.create("onebit_adam:variance=recovered", world)->spec(),
            "onebit_adam:beta1=0.9,variance=recovered,warmup_steps=100");
  EXPECT_THROW(reg.create("qadam:variance=adaptive", world), InvalidArgument);
}

TEST(Registry, QAdamPrecondition) {
  auto& reg = AlgorithmRegistry::instance();
  const WorldInfo world{0, 2, {0, 0}};
  EXPECT_EQ(reg.create("onebit_adam:precondition=true,warmup_steps=4", world)->spec(),
            "onebit_adam:beta1=0.9,beta2=0.999,eps=1e-08,precondition=true,variance=momentum,warmup_steps=4");
  EXPECT_EQ(reg.create("qadam:precondition=true,beta2=0.99,eps=1e-6,warmup_steps=4", world)->spec(),
            "qadam:beta1=0.9,beta2=0.99,eps=1e-06,precondition=true,variance=recovered,warmup_steps=4");
  EXPECT_EQ(reg.create("qadam:precondition=false,warmup_steps=4", world)->spec(),
            "qadam:beta1=0.9,variance=recovered,warmup_steps=4");
  // beta2 and eps mean nothing without precondition; precondition needs a warm-up to divide by.
  EXPECT_THROW(reg.create("qadam:beta2=0.99", world), InvalidArgument);
  EXPECT_THROW(reg.create("onebit_adam:precondition=true,warmup_steps=0", world), InvalidArgument);
  EXPECT_THROW(reg.create("onebit_adam:precondition=true,beta2=1", world), InvalidArgument);
  EXPECT_THROW(reg.create("onebit_adam:precondition=true,eps=0", world), InvalidArgument);
  EXPECT_THROW(reg.create("onebit_adam:precondition=maybe", world), InvalidArgument);
}

}  // namespace bagua
