#include "engine/block_pool.h"

#include <algorithm>

#include "core/status.h"

namespace cleave {

namespace {

// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
uint64_t Fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace

BlockHash HashBlockTokens(BlockHash parent, std::span<const TokenId> tokens) {
  // Each step folds one token into a 64-bit state through a full-avalanche bijection, so two
  // different (parent, tokens) inputs collide with probability about 2^-64.
  uint64_t h = Fmix64(parent ^ (0x9e3779b97f4a7c15ull * (tokens.size() + 1)));
  for (TokenId t : tokens) {
    h = Fmix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) * 0xbf58476d1ce4e5b9ull +
                    0x94d049bb133111ebull));
  }
  return h;
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : block_size_(block_size), enable_prefix_caching_(enable_prefix_caching), blocks_(num_blocks) {
  CLEAVE_CHECK(num_blocks > 0 && block_size > 0, "num_blocks {} block_size {}", num_blocks,
               block_size);
  for (BlockId id = 0; id < num_blocks; ++id) PushFreeTail(id);
}

BlockPoolStats BlockPool::stats() const {
  BlockPoolStats s = stats_;
  s.num_blocks = num_blocks();
  s.num_free_blocks = num_free_;
  s.num_cached_blocks = num_cached_blocks();
  return s;
}

void BlockPool::PushFreeTail(BlockId id) {
  Block& b = blocks_[id];
  CLEAVE_CHECK(!b.in_free_queue);
  b.prev = free_tail_;
  b.next = -1;
  if (free_tail_ >= 0) {
    blocks_[free_tail_].next = id;
  } else {
    free_head_ = id;
  }
  free_tail_ = id;
  b.in_free_queue = true;
  ++num_free_;
}

void BlockPool::RemoveFromFreeQueue(BlockId id) {
  Block& b = blocks_[id];
  CLEAVE_CHECK(b.in_free_queue);
  if (b.prev >= 0) {
    blocks_[b.prev].next = b.next;
  } else {
    free_head_ = b.next;
  }
  if (b.next >= 0) {
    blocks_[b.next].prev = b.prev;
  } else {
    free_tail_ = b.prev;
  }
  b.prev = b.next = -1;
  b.in_free_queue = false;
  --num_free_;
}

void BlockPool::Uncache(BlockId id) {
  Block& b = blocks_[id];
  if (!b.cached) return;
  auto it = cached_.find(b.hash);
  CLEAVE_CHECK(it != cached_.end() && it->second == id);
  cached_.erase(it);
  b.cached = false;
  b.tokens.clear();
}

bool BlockPool::Allocate(int32_t n, std::vector<BlockId>* out) {
  CLEAVE_CHECK(n >= 0);
  if (n > num_free_) return false;
  for (int32_t i = 0; i < n; ++i) {
    BlockId id = free_head_;
    RemoveFromFreeQueue(id);
    if (blocks_[id].cached) {
      Uncache(id);
      ++stats_.num_evictions;
    }
    blocks_[id].ref_count = 1;
    out->push_back(id);
  }
  return true;
}

void BlockPool::Free(std::span<const BlockId> blocks) {
  for (BlockId id : blocks) {
    Block& b = blocks_[id];
    CLEAVE_CHECK(b.ref_count > 0, "double free of block {}", id);
    if (--b.ref_count == 0) PushFreeTail(id);
  }
}

void BlockPool::Acquire(std::span<const BlockId> blocks) {
  for (BlockId id : blocks) {
    Block& b = blocks_[id];
    if (b.ref_count == 0) RemoveFromFreeQueue(id);
    ++b.ref_count;
  }
}

std::vector<BlockId> BlockPool::FindCachedPrefix(std::span<const TokenId> tokens,
                                                 int32_t max_blocks,
                                                 std::vector<BlockHash>* hashes_out) {
  std::vector<BlockId> found;
  if (!enable_prefix_caching_) return found;
  int64_t num_full = std::min<int64_t>(tokens.size() / block_size_, max_blocks);
  ++stats_.num_prefix_queries;
  stats_.num_queried_tokens += num_full * block_size_;
  BlockHash parent = kRootBlockHash;
  for (int64_t i = 0; i < num_full; ++i) {
    auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    BlockHash h = HashBlockTokens(parent, block_tokens);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const Block& b = blocks_[it->second];
    if (b.parent_hash != parent ||
        !std::equal(b.tokens.begin(), b.tokens.end(), block_tokens.begin(), block_tokens.end())) {
      break;  // a 64-bit collision: treat as a miss
    }
    found.push_back(it->second);
    if (hashes_out) hashes_out->push_back(h);
    parent = h;
  }
  stats_.num_hit_tokens += static_cast<int64_t>(found.size()) * block_size_;
  return found;
}

BlockHash BlockPool::CacheFullBlock(BlockId id, BlockHash parent, std::span<const TokenId> tokens) {
  CLEAVE_CHECK(static_cast<int32_t>(tokens.size()) == block_size_);
  BlockHash h = HashBlockTokens(parent, tokens);
  if (!enable_prefix_caching_) return h;
  Block& b = blocks_[id];
  CLEAVE_CHECK(b.ref_count > 0, "caching unreferenced block {}", id);
  if (b.cached) {
    CLEAVE_CHECK(b.hash == h, "block {} re-registered with different content", id);
    return h;
  }
  if (cached_.emplace(h, id).second) {
    b.cached = true;
    b.hash = h;
    b.parent_hash = parent;
    b.tokens.assign(tokens.begin(), tokens.end());
  }
  return h;
}

void BlockPool::CheckInvariants() const {
  int32_t n = 0;
  BlockId prev = -1;
  for (BlockId id = free_head_; id >= 0; id = blocks_[id].next) {
    const Block& b = blocks_[id];
    CLEAVE_CHECK(b.in_free_queue && b.ref_count == 0 && b.prev == prev, "free queue at {}", id);
    prev = id;
    ++n;
    CLEAVE_CHECK(n <= num_blocks(), "free queue cycle");
  }
  CLEAVE_CHECK(prev == free_tail_ && n == num_free_, "free queue length {} vs {}", n, num_free_);
  int32_t num_cached = 0;
  for (BlockId id = 0; id < num_blocks(); ++id) {
    const Block& b = blocks_[id];
    CLEAVE_CHECK(b.ref_count >= 0 && b.in_free_queue == (b.ref_count == 0), "block {}", id);
    if (b.cached) {
      ++num_cached;
      auto it = cached_.find(b.hash);
      CLEAVE_CHECK(it != cached_.end() && it->second == id, "cached block {} not in map", id);
      CLEAVE_CHECK(HashBlockTokens(b.parent_hash, b.tokens) == b.hash, "block {} hash", id);
    }
  }
  CLEAVE_CHECK(num_cached == num_cached_blocks(), "hash map size");
}

}  // namespace cleave
