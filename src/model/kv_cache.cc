#include "model/kv_cache.h"

#include <cstring>

#include "kernels/quant_formats.h"

namespace cleave {

Result<DType> ParseKvCacheDType(std::string_view name) {
  if (name == "f16") return DType::kF16;
  if (name == "f32") return DType::kF32;
  if (name == "q8_0") return DType::kQ8_0;
  return InvalidArgument("unknown KV cache dtype '{}' (expected f16, f32 or q8_0)", name);
}

Status KvCache::CheckSupported(DType dtype, int64_t head_dim) {
  return kernels::CheckKvDType(dtype, head_dim);
}

int64_t KvCache::BytesPerToken(DType dtype, int64_t num_layers, int64_t num_kv_heads,
                               int64_t head_dim) {
  return 2 * num_layers * num_kv_heads * kernels::KvHeadBytes(dtype, head_dim);
}

KvCache::KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads,
                 int64_t head_dim, DType dtype)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      token_stride_(num_kv_heads * head_dim),
      slot_bytes_(0),
      dtype_(dtype),
      k_(num_layers),
      v_(num_layers) {
  CLEAVE_CHECK(num_layers > 0 && num_blocks > 0 && block_size > 0 && token_stride_ > 0);
  const Status supported = CheckSupported(dtype, head_dim);
  CLEAVE_CHECK(supported.ok(), "{}", supported.message());
  slot_bytes_ = num_kv_heads * kernels::KvHeadBytes(dtype, head_dim);
  owned_.assign(static_cast<size_t>(bytes()), 0);
  PointInto(owned_.data());
}

void KvCache::PointInto(uint8_t* base) {
  const int64_t per_layer = num_blocks_ * block_size_ * slot_bytes_;
  for (int64_t l = 0; l < num_layers_; ++l) {
    k_[l] = base + (2 * l) * per_layer;
    v_[l] = base + (2 * l + 1) * per_layer;
  }
}

void KvCache::UseExternalStorage(std::span<uint8_t> storage, bool keep_contents) {
  CLEAVE_CHECK(int64_t(storage.size()) == bytes(), "external KV storage of {} bytes for {}",
               storage.size(), bytes());
  if (keep_contents && storage.data() != k_[0])
    std::memcpy(storage.data(), k_[0], storage.size());  // k_[0]: base
  PointInto(storage.data());
  std::vector<uint8_t>().swap(owned_);
}

int64_t KvCache::bytes() const {
  return 2 * num_layers_ * num_blocks_ * block_size_ * slot_bytes_;
}

void KvCache::Write(int64_t layer, int64_t block, int64_t slot, const float* k, const float* v) {
  kernels::QuantizeRow(dtype_, k, k_[layer] + Offset(block, slot), token_stride_);
  kernels::QuantizeRow(dtype_, v, v_[layer] + Offset(block, slot), token_stride_);
}

void KvCache::ReadK(int64_t layer, int64_t block, int64_t slot, float* out) const {
  kernels::DequantizeRow(dtype_, k_[layer] + Offset(block, slot), out, token_stride_);
}

void KvCache::ReadV(int64_t layer, int64_t block, int64_t slot, float* out) const {
  kernels::DequantizeRow(dtype_, v_[layer] + Offset(block, slot), out, token_stride_);
}

void KvCache::CopyBlock(int64_t src, int64_t dst) {
  CLEAVE_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_);
  const int64_t block_bytes = block_size_ * slot_bytes_;
  for (int64_t l = 0; l < num_layers_; ++l) {
    std::memcpy(k_[l] + dst * block_bytes, k_[l] + src * block_bytes, block_bytes);
    std::memcpy(v_[l] + dst * block_bytes, v_[l] + src * block_bytes, block_bytes);
  }
}

}  // namespace cleave
