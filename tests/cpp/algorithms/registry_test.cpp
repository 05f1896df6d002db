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

}  // namespace bagua
