// BlockPool: the KV cache's fixed-size blocks, as ids, with reference counts and prefix caching.
//
// The pool never sees tensors: a block is an id 0..num_blocks-1 that the executor maps to
// block_size token slots of K and V in every layer. A sequence's block table lists its blocks
// in position order; token position p lives in block_table[p / block_size], slot p % block_size.
//
//   block table [7, 2, 9]  (block_size 4)
//   positions    0 1 2 3 | 4 5 6 7 | 8 9
//   block         --7--    --2--     -9- (slots 2..3 of block 9 still empty)
//
// Prefix caching: once every slot of a block holds computed KV, the block may be registered under
// a hash chained from its parent block's hash and its own token ids, so a later sequence with the
// same prefix reuses it instead of recomputing it. Blocks whose reference count drops to 0 go to
// the tail of the free queue; a registered block stays findable there until a fresh allocation
// takes it from the head (least recently freed first), at which point its hash is dropped.
//
// Thread-safety: none; the scheduler that owns it runs on one thread.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace cleave {

using BlockId = int32_t;
using BlockHash = uint64_t;

// Hash of a full block: chained from the parent block's hash (kRootBlockHash for the first
// block) over the block's token ids. 64-bit, well mixed; collisions are additionally guarded
// against by comparing the stored tokens and parent hash on every hit.
inline constexpr BlockHash kRootBlockHash = 0x6a09e667f3bcc908ull;
BlockHash HashBlockTokens(BlockHash parent, std::span<const TokenId> tokens);

struct BlockPoolStats {
  int32_t num_blocks = 0;
  int32_t num_free_blocks = 0;     // reference count 0 (includes cached blocks not in use)
  int32_t num_cached_blocks = 0;   // registered in the prefix cache (in use or not)
  int64_t num_prefix_queries = 0;  // FindCachedPrefix calls
  int64_t num_queried_tokens = 0;  // tokens looked up (full blocks only)
  int64_t num_hit_tokens = 0;      // tokens found in the cache
  int64_t num_evictions = 0;       // cached blocks reused for fresh allocations
};

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  bool prefix_caching_enabled() const { return enable_prefix_caching_; }
  int32_t num_free_blocks() const { return num_free_; }
  int32_t num_cached_blocks() const { return static_cast<int32_t>(cached_.size()); }
  BlockPoolStats stats() const;
  // Blocks needed to hold num_tokens tokens.
  int32_t BlocksFor(int64_t num_tokens) const {
    return static_cast<int32_t>((num_tokens + block_size_ - 1) / block_size_);
  }

  // Appends n fresh blocks (reference count 1, no hash) to *out, evicting least recently freed
  // cached blocks as needed. Returns false, leaving *out and the pool unchanged, when fewer than
  // n blocks are free: running out is not an error, the scheduler preempts or waits.
  bool Allocate(int32_t n, std::vector<BlockId>* out);
  // Drops one reference to each block. Blocks reaching 0 join the free queue's tail in the order
  // given, so callers pass a table reversed to make its tail blocks evicted first.
  void Free(std::span<const BlockId> blocks);
  // Takes one more reference to each block (a prefix-cache hit); blocks at 0 leave the free queue.
  void Acquire(std::span<const BlockId> blocks);

  // The longest run of cached full blocks that matches tokens from the start, at most
  // max_blocks blocks. Does not take references (call Acquire). hashes_out, if given, receives
  // the chain hash of each returned block. Always empty when prefix caching is off.
  std::vector<BlockId> FindCachedPrefix(std::span<const TokenId> tokens, int32_t max_blocks,
                                        std::vector<BlockHash>* hashes_out = nullptr);
  // Registers a block whose block_size slots now hold computed KV for `tokens`, under
  // HashBlockTokens(parent, tokens), and returns that hash. If another block is already
  // registered under the hash, this one stays unregistered (its twin serves later hits).
  // No-op (but still returns the hash) when prefix caching is off.
  BlockHash CacheFullBlock(BlockId block, BlockHash parent, std::span<const TokenId> tokens);

  int32_t ref_count(BlockId block) const { return blocks_[block].ref_count; }
  bool is_cached(BlockId block) const { return blocks_[block].cached; }
  // Aborts if the internal structures disagree (free queue vs reference counts vs hash map).
  // For tests; O(num_blocks).
  void CheckInvariants() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    bool cached = false;  // registered in cached_ under hash
    BlockHash hash = 0;
    BlockHash parent_hash = 0;
    std::vector<TokenId> tokens;  // block_size ids, kept to verify hits
    // Free queue links (an intrusive doubly linked list; -1 = none).
    BlockId prev = -1;
    BlockId next = -1;
    bool in_free_queue = false;
  };

  void PushFreeTail(BlockId id);
  void RemoveFromFreeQueue(BlockId id);
  void Uncache(BlockId id);

  int32_t block_size_;
  bool enable_prefix_caching_;
  std::vector<Block> blocks_;
  BlockId free_head_ = -1;
  BlockId free_tail_ = -1;
  int32_t num_free_ = 0;
  std::unordered_map<BlockHash, BlockId> cached_;
  BlockPoolStats stats_;
};

}  // namespace cleave
