// What distinguishes one decoder-only architecture from another in a GGUF file: the prefix of
// its metadata keys, its RoPE layout, optional biases, and the names of its tensors. Each
// architecture is one table in src/model/arch/<name>.cc; adding one is a new file plus a line in
// FindArchitecture().
#pragma once

#include <string_view>

namespace cleave {

// Tensor names for one architecture. "{}" is replaced by the layer index. An empty name means the
// architecture has no such tensor.
struct TensorNames {
  std::string_view token_embd = "token_embd.weight";
  std::string_view output_norm = "output_norm.weight";
  std::string_view output = "output.weight";          // absent => tied to token_embd
  std::string_view rope_freqs = "rope_freqs.weight";  // optional per-dimension freq factors
  std::string_view attn_norm = "blk.{}.attn_norm.weight";
  std::string_view attn_q = "blk.{}.attn_q.weight";
  std::string_view attn_k = "blk.{}.attn_k.weight";
  std::string_view attn_v = "blk.{}.attn_v.weight";
  std::string_view attn_q_bias = "blk.{}.attn_q.bias";  // optional
  std::string_view attn_k_bias = "blk.{}.attn_k.bias";  // optional
  std::string_view attn_v_bias = "blk.{}.attn_v.bias";  // optional
  std::string_view attn_output = "blk.{}.attn_output.weight";
  std::string_view ffn_norm = "blk.{}.ffn_norm.weight";
  std::string_view ffn_gate = "blk.{}.ffn_gate.weight";
  std::string_view ffn_up = "blk.{}.ffn_up.weight";
  std::string_view ffn_down = "blk.{}.ffn_down.weight";
};

struct Architecture {
  std::string_view name;   // `general.architecture`, also the metadata key prefix
  bool rope_neox = false;  // rotate (i, i + d/2) pairs instead of (2i, 2i + 1)
  bool requires_qkv_bias = false;
  TensorNames tensors;
};

// The architecture named by `general.architecture`, or nullptr if cleave does not support it.
const Architecture* FindArchitecture(std::string_view name);

namespace arch {
extern const Architecture kLlama;
extern const Architecture kQwen2;
}  // namespace arch

}  // namespace cleave
