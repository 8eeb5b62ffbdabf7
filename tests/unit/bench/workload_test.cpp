// Workload generation: lengths in range, reproducible from the seed, shared prefixes, JSONL, arrivals.
#include "bench/workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

namespace ds::bench {
namespace {

RandomOptions ids_options() {
  RandomOptions o;
  o.num_prompts = 200;
  o.input_len = 50;
  o.output_len = 20;
  o.range_ratio = 0.5;
  o.token_id_min = 1000;
  o.token_id_max = 1100;
  return o;
}

TEST(Workload, RandomLengthsAndIdsInRange) {
  std::mt19937_64 rng(7);
  auto specs = random_requests(ids_options(), rng);
  ASSERT_EQ(specs.size(), 200u);
  bool saw_min = false, saw_max = false;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    EXPECT_EQ(s.index, int(i));
    const auto& ids = std::get<std::vector<uint32_t>>(s.prompt);
    EXPECT_EQ(int(ids.size()), s.prompt_len);
    EXPECT_GE(s.prompt_len, 25);
    EXPECT_LE(s.prompt_len, 50);
    EXPECT_GE(s.output_len, 10);
    EXPECT_LE(s.output_len, 20);
    saw_min |= s.output_len == 10;
    saw_max |= s.output_len == 20;
    for (uint32_t id : ids) {
      EXPECT_GE(id, 1000u);
      EXPECT_LT(id, 1100u);
    }
  }
  EXPECT_TRUE(saw_min && saw_max) << "both ends of [L*R, L] are drawn";
}

TEST(Workload, SameSeedSameRequests) {
  std::mt19937_64 a(3), b(3), c(4);
  auto x = random_requests(ids_options(), a), y = random_requests(ids_options(), b), z = random_requests(ids_options(), c);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].prompt, y[i].prompt);
    EXPECT_EQ(x[i].output_len, y[i].output_len);
  }
  EXPECT_NE(x[0].prompt, z[0].prompt);
}

TEST(Workload, RangeRatioOneGivesExactLengths) {
  auto o = ids_options();
  o.range_ratio = 1.0;
  std::mt19937_64 rng(1);
  for (const auto& s : random_requests(o, rng)) {
    EXPECT_EQ(s.prompt_len, 50);
    EXPECT_EQ(s.output_len, 20);
  }
}

TEST(Workload, SharedPrefixGroups) {
  auto o = ids_options();
  o.range_ratio = 1.0;
  o.shared_prefix_len = 8;
  o.shared_prefix_groups = 2;
  std::mt19937_64 rng(1);
  auto specs = random_requests(o, rng);
  auto prefix = [&](size_t i) {
    const auto& ids = std::get<std::vector<uint32_t>>(specs[i].prompt);
    return std::vector<uint32_t>(ids.begin(), ids.begin() + 8);
  };
  EXPECT_EQ(specs[0].prompt_len, 58);
  EXPECT_EQ(std::get<std::vector<uint32_t>>(specs[0].prompt).size(), 58u);
  EXPECT_EQ(prefix(0), prefix(2));
  EXPECT_EQ(prefix(1), prefix(3));
  EXPECT_NE(prefix(0), prefix(1));
  EXPECT_NE(specs[0].prompt, specs[2].prompt);  // different suffixes
}

TEST(Workload, TextPromptsHaveTheRequestedWordCount) {
  auto o = ids_options();
  o.format = PromptFormat::kText;
  o.range_ratio = 1.0;
  std::mt19937_64 rng(1);
  auto specs = random_requests(o, rng);
  const auto& text = std::get<std::string>(specs[0].prompt);
  EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 49);
  EXPECT_EQ(specs[0].prompt_len, 50);
}

TEST(Workload, BadOptionsAreNamed) {
  std::mt19937_64 rng(1);
  auto o = ids_options();
  o.range_ratio = 1.5;
  EXPECT_THROW(random_requests(o, rng), std::invalid_argument);
  o = ids_options();
  o.token_id_max = o.token_id_min;
  try {
    random_requests(o, rng);
    FAIL() << "empty id range accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("token id range"), std::string::npos);
  }
}

class JsonlFile : public ::testing::Test {
 protected:
  std::string write(const std::string& content) {
    path_ = std::filesystem::temp_directory_path() /
            ("bench_jsonl_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl");
    std::ofstream(path_) << content;
    return path_.string();
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
};

TEST_F(JsonlFile, PromptsInOrderAndReused) {
  auto path = write("{\"prompt\": \"a b c\", \"output_len\": 5}\n\n{\"prompt\": [1, 2], \"output_len\": 7}\n{\"prompt\": \"x\"}\n");
  auto specs = jsonl_requests(path, 4, 9);
  ASSERT_EQ(specs.size(), 4u);
  EXPECT_EQ(std::get<std::string>(specs[0].prompt), "a b c");
  EXPECT_EQ(specs[0].prompt_len, 3);
  EXPECT_EQ(specs[0].output_len, 5);
  EXPECT_EQ(std::get<std::vector<uint32_t>>(specs[1].prompt), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(specs[1].output_len, 7);
  EXPECT_EQ(specs[2].output_len, 9);  // the default
  EXPECT_EQ(specs[3].prompt, specs[0].prompt);
  EXPECT_EQ(specs[3].index, 3);
}

TEST_F(JsonlFile, BadLineNamesFileAndLine) {
  auto path = write("{\"prompt\": \"ok\"}\n{\"prompt\": 5}\n");
  try {
    jsonl_requests(path, 1, 9);
    FAIL() << "bad prompt accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(jsonl_requests(path + ".missing", 1, 9), std::runtime_error);
}

TEST(Workload, PoissonArrivals) {
  std::mt19937_64 rng(11);
  auto t = poisson_arrivals(20000, 10.0, rng);
  EXPECT_EQ(t[0], 0.0);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_GE(t[i], t[i - 1]);
  double mean_gap = t.back() / double(t.size() - 1);
  EXPECT_NEAR(mean_gap, 0.1, 0.005);  // 1/rate (the standard error here is 0.0007)
  auto all = poisson_arrivals(5, INFINITY, rng);
  EXPECT_EQ(all, std::vector<double>(5, 0.0));
  EXPECT_THROW(poisson_arrivals(5, 0.0, rng), std::invalid_argument);
}

}  // namespace
}  // namespace ds::bench
