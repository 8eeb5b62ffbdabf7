#include <gtest/gtest.h>

#include "server/workers/worker_group.h"

namespace ds::server {
namespace {

control::MemoryReport report(uint64_t free, uint64_t page, uint64_t slot) {
  control::MemoryReport r;
  r.set_free_bytes(free);
  r.set_kv_page_bytes(page);
  r.set_gdn_slot_bytes(slot);
  return r;
}

TEST(PoolSizing, SlotsForEveryRunningRequestThenPagesFromTheRest) {
  auto pools = size_pools({report(1000'000, 1000, 100)}, 255, 0);
  EXPECT_EQ(pools.num_gdn_slots, 256);                 // 255 + scratch
  EXPECT_EQ(pools.num_kv_pages, (1000'000 - 25'600) / 1000);
}

TEST(PoolSizing, TheTightestRankDecides) {
  auto pools = size_pools({report(1000'000, 1000, 100), report(500'000, 1000, 100)}, 15, 0);
  EXPECT_EQ(pools.num_kv_pages, (500'000 - 1'600) / 1000);
}

TEST(PoolSizing, SlotsTakeAtMostHalfTheMemory) {
  auto pools = size_pools({report(100'000, 1000, 1000)}, 255, 0);
  EXPECT_EQ(pools.num_gdn_slots, 50);
  EXPECT_EQ(pools.num_kv_pages, 50);
}

TEST(PoolSizing, CapsPagesAndRefusesWhenNothingFits) {
  EXPECT_EQ(size_pools({report(1 << 30, 1000, 100)}, 7, 64).num_kv_pages, 64);
  EXPECT_THROW(size_pools({report(100, 1000, 100)}, 7, 0), std::runtime_error);
}

TEST(NodeRanks, EveryNodeHostsAnEqualShareInNodeOrder) {
  EXPECT_EQ(node_ranks(4, 2, 0, false).first, 0);
  EXPECT_EQ(node_ranks(4, 2, 0, false).count, 2);
  EXPECT_EQ(node_ranks(4, 2, 1, false).first, 2);
  EXPECT_EQ(node_ranks(4, 2, 1, false).count, 2);
  EXPECT_THROW(node_ranks(3, 2, 0, false), std::invalid_argument);
  EXPECT_THROW(node_ranks(2, 2, 2, false), std::invalid_argument);
}

TEST(NodeRanks, ADedicatedFrontEndHostsNoneAndTheOtherNodesCoverEveryRank) {
  EXPECT_EQ(node_ranks(2, 3, 0, true).count, 0);
  EXPECT_EQ(node_ranks(2, 3, 1, true).first, 0);
  EXPECT_EQ(node_ranks(2, 3, 1, true).count, 1);
  EXPECT_EQ(node_ranks(2, 3, 2, true).first, 1);
  EXPECT_EQ(node_ranks(2, 3, 2, true).count, 1);
  EXPECT_EQ(node_ranks(16, 3, 2, true).first, 8);
  EXPECT_EQ(node_ranks(16, 3, 2, true).count, 8);
  EXPECT_THROW(node_ranks(2, 1, 0, true), std::invalid_argument);  // nobody would host the ranks
  EXPECT_THROW(node_ranks(4, 4, 1, true), std::invalid_argument);  // 4 ranks over 3 worker nodes
}

}  // namespace
}  // namespace ds::server
