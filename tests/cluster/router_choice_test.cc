// The router's choice functions and continuation requests, without processes: prefill worker by
// queued tokens minus prefix overlap, decode worker by free blocks then batch size, the chained
// block hashes the overlap is computed from, and what a migrated request asks for.
#include <gtest/gtest.h>

#include "cluster/router.h"

namespace cleave::cluster {
namespace {

WorkerLoad Prefill(int64_t queued, int64_t overlap, bool alive = true) {
  WorkerLoad w;
  w.role = WorkerRole::kPrefill;
  w.queued_prompt_tokens = queued;
  w.overlap_tokens = overlap;
  w.alive = alive;
  return w;
}

WorkerLoad Decode(int64_t free_blocks, int32_t running, bool alive = true) {
  WorkerLoad w;
  w.role = WorkerRole::kDecode;
  w.free_blocks = free_blocks;
  w.num_running = running;
  w.alive = alive;
  return w;
}

TEST(RouterChoiceTest, PrefillByQueuedTokensMinusOverlap) {
  // Without overlap the shorter queue wins.
  std::vector<WorkerLoad> w = {Prefill(300, 0), Prefill(100, 0)};
  EXPECT_EQ(ChoosePrefill(w), 1);
  // 256 cached prompt tokens on worker 0 outweigh its 200 extra queued tokens.
  w = {Prefill(300, 256), Prefill(100, 0)};
  EXPECT_EQ(ChoosePrefill(w), 0);
  // ... but not 64 of them.
  w = {Prefill(300, 64), Prefill(100, 0)};
  EXPECT_EQ(ChoosePrefill(w), 1);
  // Ties go to the lower index; dead and non-prefill workers are never chosen.
  w = {Decode(100, 0), Prefill(50, 0), Prefill(50, 0)};
  EXPECT_EQ(ChoosePrefill(w), 1);
  w = {Prefill(0, 0, /*alive=*/false), Prefill(500, 0)};
  EXPECT_EQ(ChoosePrefill(w), 1);
  w = {Decode(100, 0), Prefill(0, 0, false)};
  EXPECT_EQ(ChoosePrefill(w), -1);
}

TEST(RouterChoiceTest, DecodeByFreeBlocksThenBatch) {
  std::vector<WorkerLoad> w = {Decode(10, 0), Decode(40, 8), Prefill(0, 0)};
  EXPECT_EQ(ChooseDecode(w), 1);
  w = {Decode(40, 8), Decode(40, 3)};
  EXPECT_EQ(ChooseDecode(w), 1);
  w = {Decode(100, 0, false), Decode(5, 9)};
  EXPECT_EQ(ChooseDecode(w), 1);
  w = {Prefill(0, 0), Decode(5, 0, false)};
  EXPECT_EQ(ChooseDecode(w), -1);
}

TEST(RouterChoiceTest, BlockHashesAreChainedOverFullBlocks) {
  std::vector<TokenId> a(40), b(40);
  for (int i = 0; i < 40; ++i) a[i] = b[i] = TokenId(i * 7 + 1);
  // 40 tokens: two full blocks; the partial third is not hashed.
  ASSERT_EQ(PrefixBlockHashes(a).size(), 2u);
  EXPECT_EQ(PrefixBlockHashes(std::span<const TokenId>(a).first(15)).size(), 0u);
  EXPECT_EQ(PrefixBlockHashes(a), PrefixBlockHashes(b));
  // A change in block 1 changes hash 1 only; a change in block 0 changes both (chained).
  b[20] += 1;
  EXPECT_EQ(PrefixBlockHashes(a)[0], PrefixBlockHashes(b)[0]);
  EXPECT_NE(PrefixBlockHashes(a)[1], PrefixBlockHashes(b)[1]);
  b = a;
  b[3] += 1;
  EXPECT_NE(PrefixBlockHashes(a)[0], PrefixBlockHashes(b)[0]);
  EXPECT_NE(PrefixBlockHashes(a)[1], PrefixBlockHashes(b)[1]);
  // A block's hash depends on its position in the chain, not only its tokens.
  std::vector<TokenId> twice(32);
  for (int i = 0; i < 32; ++i) twice[i] = TokenId(i % 16);
  const std::vector<uint64_t> h = PrefixBlockHashes(twice);
  EXPECT_NE(h[0], h[1]);
}

}  // namespace
}  // namespace cleave::cluster
