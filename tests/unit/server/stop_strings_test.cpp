#include <gtest/gtest.h>

#include "server/engine/stop_strings.h"

namespace ds::server {
namespace {

TEST(StopStrings, PassesTextThroughWithoutStops) {
  StopStringMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStrings, HoldsBackAPartialMatchUntilItResolves) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.push("hello E"), "hello ");
  EXPECT_EQ(m.push("N"), "");
  EXPECT_EQ(m.push("x"), "ENx");  // not the stop string after all
  EXPECT_FALSE(m.matched());
}

TEST(StopStrings, CutsAtTheStopStringAcrossPushes) {
  StopStringMatcher m({"###", "END"});
  EXPECT_EQ(m.push("one E"), "one ");
  EXPECT_EQ(m.push("ND two"), "");
  ASSERT_TRUE(m.matched());
  EXPECT_EQ(*m.matched(), "END");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStrings, TheEarliestStopWins) {
  StopStringMatcher m({"b c", "a"});
  EXPECT_EQ(m.push("x a b c"), "x ");
  EXPECT_EQ(*m.matched(), "a");
}

TEST(StopStrings, FlushReturnsTheHeldTail) {
  StopStringMatcher m({"</s>"});
  EXPECT_EQ(m.push("text </"), "text ");
  EXPECT_EQ(m.flush(), "</");
}

TEST(StopStrings, MultiByteStopStrings) {
  StopStringMatcher m({"。終"});
  EXPECT_EQ(m.push("これ。"), "これ");
  EXPECT_EQ(m.push("終わり"), "");
  EXPECT_TRUE(m.matched());
}

TEST(StopStrings, RejectsEmptyStopStrings) { EXPECT_THROW(StopStringMatcher({""}), std::invalid_argument); }

}  // namespace
}  // namespace ds::server
