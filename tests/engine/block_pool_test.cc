#include "engine/block_pool.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <unordered_set>

namespace cleave {
namespace {

std::vector<TokenId> Iota(int32_t n, TokenId first = 100) {
  std::vector<TokenId> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Registers every full block of `tokens` held in `table`, as the scheduler does.
void CacheAll(BlockPool& pool, const std::vector<BlockId>& table,
              const std::vector<TokenId>& tokens) {
  BlockHash parent = kRootBlockHash;
  const int32_t bs = pool.block_size();
  for (size_t i = 0; i < tokens.size() / bs; ++i) {
    parent = pool.CacheFullBlock(table[i], parent, std::span(tokens).subspan(i * bs, bs));
  }
}

TEST(BlockPoolTest, AllocateAndFreeCountBlocks) {
  BlockPool pool(8, 4, true);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(5, &a));
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(pool.num_free_blocks(), 3);
  std::vector<BlockId> b;
  EXPECT_FALSE(pool.Allocate(4, &b));  // not enough: nothing taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.num_free_blocks(), 3);
  ASSERT_TRUE(pool.Allocate(3, &b));
  EXPECT_EQ(pool.num_free_blocks(), 0);
  std::unordered_set<BlockId> distinct(a.begin(), a.end());
  distinct.insert(b.begin(), b.end());
  EXPECT_EQ(distinct.size(), 8u);
  pool.Acquire(std::span(a).first(2));
  EXPECT_EQ(pool.ref_count(a[0]), 2);
  pool.Free(a);
  EXPECT_EQ(pool.num_free_blocks(), 3);  // a[0], a[1] still held once
  pool.Free(std::span(a).first(2));
  pool.Free(b);
  pool.CheckInvariants();
  EXPECT_EQ(pool.num_free_blocks(), pool.num_blocks());
}

TEST(BlockPoolTest, LongestCachedPrefixIsFoundAndVerified) {
  BlockPool pool(16, 4, true);
  std::vector<TokenId> tokens = Iota(14);  // 3 full blocks + 2 tokens
  std::vector<BlockId> table;
  ASSERT_TRUE(pool.Allocate(4, &table));
  CacheAll(pool, table, tokens);
  EXPECT_EQ(pool.num_cached_blocks(), 3);

  std::vector<BlockHash> hashes;
  auto hit = pool.FindCachedPrefix(tokens, 100, &hashes);
  EXPECT_EQ(hit, std::vector<BlockId>(table.begin(), table.begin() + 3));
  EXPECT_EQ(hashes.size(), 3u);
  EXPECT_EQ(pool.FindCachedPrefix(tokens, 2).size(), 2u);  // max_blocks respected

  // Same second block after a different first block: no hit past the divergence.
  std::vector<TokenId> other = tokens;
  other[1] = 7;
  EXPECT_TRUE(pool.FindCachedPrefix(other, 100).empty());
  other = tokens;
  other[9] = 7;  // third block differs
  EXPECT_EQ(pool.FindCachedPrefix(other, 100).size(), 2u);

  // A block registered under the same hash twice keeps the first; the twin stays private.
  std::vector<BlockId> twin;
  ASSERT_TRUE(pool.Allocate(1, &twin));
  pool.CacheFullBlock(twin[0], kRootBlockHash, std::span(tokens).first(4));
  EXPECT_FALSE(pool.is_cached(twin[0]));
  EXPECT_EQ(pool.FindCachedPrefix(tokens, 1), std::vector<BlockId>{table[0]});

  auto stats = pool.stats();
  EXPECT_GT(stats.num_hit_tokens, 0);
  EXPECT_GT(stats.num_queried_tokens, stats.num_hit_tokens);
  pool.Free(twin);
  pool.Free(table);
  pool.CheckInvariants();
  EXPECT_EQ(pool.num_free_blocks(), pool.num_blocks());
  EXPECT_EQ(pool.num_cached_blocks(), 3);  // cached blocks outlive their users
}

TEST(BlockPoolTest, UnreferencedCachedBlocksAreEvictedLeastRecentlyFreedFirst) {
  BlockPool pool(6, 2, true);
  std::vector<TokenId> t1 = Iota(4, 10), t2 = Iota(4, 50);
  std::vector<BlockId> s1, s2;
  ASSERT_TRUE(pool.Allocate(2, &s1));
  ASSERT_TRUE(pool.Allocate(2, &s2));
  CacheAll(pool, s1, t1);
  CacheAll(pool, s2, t2);
  pool.Free(std::vector<BlockId>(s1.rbegin(), s1.rend()));  // freed first: evicted first
  pool.Free(std::vector<BlockId>(s2.rbegin(), s2.rend()));
  EXPECT_EQ(pool.num_free_blocks(), 6);
  EXPECT_EQ(pool.num_cached_blocks(), 4);

  // 2 never-cached blocks come first, then s1's tail block, then s1's head.
  std::vector<BlockId> fresh;
  ASSERT_TRUE(pool.Allocate(3, &fresh));
  EXPECT_EQ(pool.num_cached_blocks(), 3);
  EXPECT_EQ(pool.FindCachedPrefix(t1, 100).size(), 1u);  // head block survived
  EXPECT_EQ(pool.FindCachedPrefix(t2, 100).size(), 2u);

  // A hit on a free cached block takes it out of the free queue: it can no longer be evicted.
  auto hit = pool.FindCachedPrefix(t2, 100);
  pool.Acquire(hit);
  EXPECT_EQ(pool.num_free_blocks(), 1);
  ASSERT_TRUE(pool.Allocate(1, &fresh));
  EXPECT_EQ(pool.FindCachedPrefix(t1, 100).size(), 0u);  // the last evictable one went
  EXPECT_EQ(pool.FindCachedPrefix(t2, 100), hit);
  EXPECT_EQ(pool.stats().num_evictions, 2);
  pool.Free(hit);
  pool.Free(fresh);
  pool.CheckInvariants();
  EXPECT_EQ(pool.num_free_blocks(), pool.num_blocks());
}

TEST(BlockPoolTest, CachingOffFindsNothing) {
  BlockPool pool(4, 2, false);
  std::vector<BlockId> t;
  ASSERT_TRUE(pool.Allocate(2, &t));
  std::vector<TokenId> tokens = Iota(4);
  CacheAll(pool, t, tokens);
  EXPECT_EQ(pool.num_cached_blocks(), 0);
  EXPECT_TRUE(pool.FindCachedPrefix(tokens, 10).empty());
  pool.Free(t);
  EXPECT_EQ(pool.num_free_blocks(), pool.num_blocks());
}

TEST(BlockPoolTest, HashDependsOnParentOrderAndEveryToken) {
  std::vector<TokenId> a = Iota(16);
  BlockHash h = HashBlockTokens(kRootBlockHash, a);
  EXPECT_NE(h, HashBlockTokens(kRootBlockHash + 1, a));
  std::vector<TokenId> swapped = a;
  std::swap(swapped[3], swapped[4]);
  EXPECT_NE(h, HashBlockTokens(kRootBlockHash, swapped));
  // No collision among many random blocks and their one-token variants.
  std::mt19937 rng(7);
  std::unordered_set<BlockHash> seen;
  for (int i = 0; i < 50000; ++i) {
    std::vector<TokenId> t(16);
    for (auto& x : t) x = TokenId(rng() % 50000);
    ASSERT_TRUE(seen.insert(HashBlockTokens(kRootBlockHash, t)).second);
    t[rng() % 16] ^= 1;
    ASSERT_TRUE(seen.insert(HashBlockTokens(kRootBlockHash, t)).second);
  }
}

}  // namespace
}  // namespace cleave
