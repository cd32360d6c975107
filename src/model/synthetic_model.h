// Synthetic Llama-family GGUF models with random weights: tiny ones that tests write in every
// weight format and architecture variant, and full-size shapes (e.g. Llama-3.2-1B) for
// benchmarking kernels on files no package ships. `cleave synth` exposes this on the command line.
//
// The vocabulary is a real byte-level BPE vocabulary (256 byte tokens, a few ChatML control
// tokens, then tokens built by merges of earlier ones), so the model loads, tokenizes and chats
// like a real one; it just talks nonsense.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace cleave {

struct SyntheticModelSpec {
  std::string arch = "llama";  // "llama" or "qwen2" (which adds Q/K/V biases and NeoX RoPE)
  int64_t num_layers = 2;
  int64_t hidden = 256;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t ffn_hidden = 512;
  int64_t vocab_size = 384;
  int64_t context_length = 2048;
  float rope_freq_base = 10000.0f;
  DType weight_type = DType::kF32;     // the 2-D layer weights
  DType embedding_type = DType::kF32;  // token_embd (and output when untied)
  bool tied_embeddings = true;         // no output.weight
  uint64_t seed = 1;
};

// Writes the model to `path`, streaming tensor data (bounded memory even for multi-GiB files).
Status WriteSyntheticModel(const SyntheticModelSpec& spec, const std::string& path);

// The Llama-3.2-1B shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192,
// vocab 128256), in the given weight format.
SyntheticModelSpec Llama32_1BSpec(DType weight_type);

}  // namespace cleave
