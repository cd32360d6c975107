// A loaded decoder-only transformer (Llama family): configuration, weights used in place from the
// memory-mapped GGUF, tokenizer and chat template, and the forward pass.
//
// The forward pass runs a batch of token spans from several sequences at once. Each span brings
// its own positions and block table, reads the keys and values of earlier positions from the
// paged KvCache and writes its own. That single entry point serves prefill (a long span), chunked
// prefill (a span starting mid-prompt), decode (spans of one token) and any mix of them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/tokenizer.h"

namespace cleave {

enum class LogitsMode { kNone, kLast, kAll };

struct ForwardItem {
  std::span<const TokenId> tokens;       // computed at positions start_pos, start_pos + 1, ...
  int64_t start_pos = 0;                 // positions before this are already in the cache
  std::span<const int32_t> block_table;  // blocks covering positions [0, start_pos + tokens.size())
  LogitsMode logits = LogitsMode::kLast;
};

class Model {
 public:
  // Reads the file (by default copied onto huge pages, which decodes faster; kFileMapping maps it
  // and shares pages with other processes: see MappedFile), reads config, tokenizer and chat
  // template, and checks every tensor's presence, shape and format. Unsupported formats are an
  // error naming tensor and format.
  static Result<std::unique_ptr<Model>> Load(
      const std::string& path, MappedFile::Backing backing = MappedFile::Backing::kHugePageCopy);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const gguf::GgufFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return *chat_template_; }
  // The KV cache this model needs for `num_blocks` blocks of `block_size` tokens, storing K and V
  // as `kv_dtype` (KvCache::CheckSupported(kv_dtype, head_dim) must pass; CHECKed).
  KvCache MakeKvCache(int64_t num_blocks, int64_t block_size, DType kv_dtype = DType::kF16) const;

  // Called on the forward's thread once layer `layer` has written the batch's K and V to the
  // cache (before that layer's attention), so that a caller can ship those blocks while the
  // remaining layers run (layer-wise KV transfer).
  using LayerKvFn = std::function<void(int64_t layer)>;

  // Runs the batch. `logits` is resized to [rows, vocab]: one row per item with kLast, one per
  // token with kAll, in item order. Not reentrant: one Forward at a time per Model.
  Status Forward(std::span<const ForwardItem> batch, KvCache& cache, ThreadPool& pool,
                 std::vector<float>* logits, const LayerKvFn& on_layer_kv = {});

 private:
  struct Layer {
    kernels::WeightView attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down;
    std::vector<float> attn_norm, ffn_norm;     // [hidden]
    std::vector<float> q_bias, k_bias, v_bias;  // empty when the model has none
  };
  struct Scratch;

  Model() = default;
  Status LoadWeights();
  // out[t, h * head_dim ...] = attention of token t's query head h over its sequence's cache.
  void Attention(std::span<const ForwardItem> batch, int64_t layer, const KvCache& cache,
                 int64_t num_tokens, const float* q, float* out, ThreadPool& pool);

  std::unique_ptr<gguf::GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> chat_template_;
  kernels::WeightView token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<float> inv_freq_;  // [head_dim / 2], base^(-2i/d) / freq_factor[i]
  std::vector<Layer> layers_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace cleave
