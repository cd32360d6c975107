// Paged KV storage for one worker: the model reads and writes keys and values through per-sequence
// block tables; which block belongs to which sequence is decided by the engine's block pool.
//
// Memory layout, per layer, for K and for V alike:
//
//   block 0                              block 1
//   +------------------------------------+------------------------------------+--
//   | slot 0: [kv_heads][head_dim] dtype | slot 0: ...                        |
//   | slot 1: [kv_heads][head_dim] dtype |                                    |
//   | ... block_size slots               |                                    |
//   +------------------------------------+------------------------------------+--
//
// The element type is F16 (default), F32 or Q8_0 (GGUF blocks of 32 along head_dim, each with an
// f16 scale: 34 bytes per 32 elements, so head_dim must be a multiple of 32). Values are rounded
// when written (Write) and converted back by the attention kernel (kernels/attention.h).
//
// Token position p of a sequence lives in block block_table[p / block_size], slot p % block_size.
//
// Storage is one buffer, layer-major, K before V: [layer][K | V][num_blocks * block_size slots].
// It is the cache's own unless UseExternalStorage moved it (e.g. into shared memory that a
// prefill worker on the same host writes blocks into).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/attention.h"

namespace cleave {

// "f16" | "f32" | "q8_0" -> DType.
Result<DType> ParseKvCacheDType(std::string_view name);

class KvCache {
 public:
  // dtype must pass CheckSupported (CHECKed).
  KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
          int64_t head_dim, DType dtype = DType::kF16);

  // Whether a cache of this dtype can hold heads of head_dim elements.
  static Status CheckSupported(DType dtype, int64_t head_dim);
  // K plus V bytes one token takes over all layers: what capacity in bytes divides by.
  static int64_t BytesPerToken(DType dtype, int64_t num_layers, int64_t num_kv_heads,
                               int64_t head_dim);

  DType dtype() const { return dtype_; }
  int64_t num_layers() const { return num_layers_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t token_stride() const { return token_stride_; }  // elements per slot: kv_heads * head_dim
  int64_t slot_bytes() const { return slot_bytes_; }      // bytes per slot in dtype
  int64_t bytes() const;

  // Converts one token's K and V ([kv_heads][head_dim] floats each) to dtype and stores them.
  // Distinct slots may be written from different threads at once.
  void Write(int64_t layer, int64_t block, int64_t slot, const float* k, const float* v);
  // Reads a slot back as floats (token_stride of them): what attention sees after rounding.
  void ReadK(int64_t layer, int64_t block, int64_t slot, float* out) const;
  void ReadV(int64_t layer, int64_t block, int64_t slot, float* out) const;

  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Allocation hook: the cache reads and writes `storage` (exactly bytes() bytes, in the layout
  // above; it must outlive the cache) from now on, and releases its own buffer. The contents
  // are copied over unless keep_contents is false (a fresh cache over zeroed storage). Call
  // before any other thread uses the cache.
  void UseExternalStorage(std::span<uint8_t> storage, bool keep_contents = true);

  // Copies every layer's K and V of block src into block dst (copy-on-write, benchmarks).
  void CopyBlock(int64_t src, int64_t dst);
  // The raw bytes of one layer's K (value = false) or V of `block`: block_bytes() of them, in the
  // layout above. What KV transfer between workers copies; both sides must use the same dtype.
  std::span<uint8_t> BlockBytes(bool value, int64_t layer, int64_t block) {
    uint8_t* data = value ? v_[layer] : k_[layer];
    return {data + Offset(block, 0), static_cast<size_t>(block_bytes())};
  }
  int64_t block_bytes() const { return block_size_ * slot_bytes_; }

  // One layer's K or V for kernels::PagedAttention.
  kernels::PagedKv KView(int64_t layer) const { return View(k_[layer]); }
  kernels::PagedKv VView(int64_t layer) const { return View(v_[layer]); }

 private:
  int64_t Offset(int64_t block, int64_t slot) const {
    return (block * block_size_ + slot) * slot_bytes_;
  }
  kernels::PagedKv View(const uint8_t* layer) const {
    return kernels::PagedKv{dtype_, layer, block_size_, slot_bytes_};
  }
  void PointInto(uint8_t* base);  // sets k_ and v_ for storage at base
  int64_t num_layers_, num_blocks_, block_size_, token_stride_, slot_bytes_;
  DType dtype_;
  std::vector<uint8_t> owned_;   // the storage, unless external
  std::vector<uint8_t*> k_, v_;  // [layer] -> num_blocks * block_size * slot_bytes
};

}  // namespace cleave
