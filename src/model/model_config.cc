#include "model/model_config.h"

#include <filesystem>

#include "model/gguf.h"

namespace cleave {

Status ModelConfig::Validate() const {
  auto positive = [](int64_t v, std::string_view what) -> Status {
    if (v <= 0 || v > (int64_t{1} << 24))
      return InvalidArgument("model config: {} = {} out of range", what, v);
    return Status::Ok();
  };
  CLEAVE_RETURN_IF_ERROR(positive(num_layers, "block_count"));
  CLEAVE_RETURN_IF_ERROR(positive(hidden, "embedding_length"));
  CLEAVE_RETURN_IF_ERROR(positive(num_heads, "attention.head_count"));
  CLEAVE_RETURN_IF_ERROR(positive(num_kv_heads, "attention.head_count_kv"));
  CLEAVE_RETURN_IF_ERROR(positive(head_dim, "head dimension"));
  CLEAVE_RETURN_IF_ERROR(positive(ffn_hidden, "feed_forward_length"));
  CLEAVE_RETURN_IF_ERROR(positive(vocab_size, "vocab size"));
  CLEAVE_RETURN_IF_ERROR(positive(context_length, "context_length"));
  if (num_heads % num_kv_heads != 0) {
    return InvalidArgument("model config: head_count {} is not a multiple of head_count_kv {}",
                           num_heads, num_kv_heads);
  }
  if (head_dim % 2 != 0) return InvalidArgument("model config: head dimension {} is odd", head_dim);
  if (!(rms_norm_eps > 0.0f) || !(rope_freq_base > 0.0f) || !(rope_freq_scale > 0.0f)) {
    return InvalidArgument("model config: rms eps, rope base and rope scale must be positive");
  }
  return Status::Ok();
}

Result<ModelConfig> ReadModelConfig(const gguf::GgufFile& file) {
  CLEAVE_ASSIGN_OR_RETURN(std::string arch_name, file.GetString("general.architecture"));
  ModelConfig c;
  c.arch = FindArchitecture(arch_name);
  if (c.arch == nullptr) {
    return Unimplemented("architecture '{}' is not supported (supported: llama, qwen2)", arch_name);
  }
  auto key = [&](std::string_view suffix) { return fmt::format("{}.{}", arch_name, suffix); };
  CLEAVE_ASSIGN_OR_RETURN(
      c.name,
      file.GetStringOr("general.name", std::filesystem::path(file.path()).filename().string()));
  CLEAVE_ASSIGN_OR_RETURN(c.num_layers, file.GetInt(key("block_count")));
  CLEAVE_ASSIGN_OR_RETURN(c.hidden, file.GetInt(key("embedding_length")));
  CLEAVE_ASSIGN_OR_RETURN(c.num_heads, file.GetInt(key("attention.head_count")));
  CLEAVE_ASSIGN_OR_RETURN(c.num_kv_heads,
                          file.GetIntOr(key("attention.head_count_kv"), c.num_heads));
  CLEAVE_ASSIGN_OR_RETURN(c.ffn_hidden, file.GetInt(key("feed_forward_length")));
  CLEAVE_ASSIGN_OR_RETURN(c.context_length, file.GetInt(key("context_length")));
  int64_t default_head_dim = c.num_heads > 0 ? c.hidden / c.num_heads : 0;
  CLEAVE_ASSIGN_OR_RETURN(c.head_dim, file.GetIntOr(key("attention.key_length"), default_head_dim));
  CLEAVE_ASSIGN_OR_RETURN(int64_t value_length,
                          file.GetIntOr(key("attention.value_length"), c.head_dim));
  if (value_length != c.head_dim) {
    return Unimplemented("attention key_length {} != value_length {} is not supported", c.head_dim,
                         value_length);
  }
  CLEAVE_ASSIGN_OR_RETURN(int64_t rope_dim, file.GetIntOr(key("rope.dimension_count"), c.head_dim));
  if (rope_dim != c.head_dim) {
    return Unimplemented(
        "partial rotary embedding (rope.dimension_count {} < head dim {}) is not supported",
        rope_dim, c.head_dim);
  }
  CLEAVE_ASSIGN_OR_RETURN(double eps,
                          file.GetFloatOr(key("attention.layer_norm_rms_epsilon"), 1e-5));
  c.rms_norm_eps = static_cast<float>(eps);
  CLEAVE_ASSIGN_OR_RETURN(double base, file.GetFloatOr(key("rope.freq_base"), 10000.0));
  c.rope_freq_base = static_cast<float>(base);
  CLEAVE_ASSIGN_OR_RETURN(std::string scaling, file.GetStringOr(key("rope.scaling.type"), "none"));
  if (scaling == "linear") {
    CLEAVE_ASSIGN_OR_RETURN(double factor, file.GetFloat(key("rope.scaling.factor")));
    if (!(factor >= 1.0)) return InvalidArgument("rope.scaling.factor {} must be >= 1", factor);
    c.rope_scaling = RopeScaling::kLinear;
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling != "none" && scaling != "") {
    return Unimplemented(
        "rope scaling type '{}' is not supported (supported: none, linear; "
        "llama3 scaling comes as the rope_freqs tensor)",
        scaling);
  }
  // The vocabulary size: explicit key, else the tokenizer's token count.
  auto vocab = file.GetInt(key("vocab_size"));
  if (vocab.ok()) {
    c.vocab_size = *vocab;
  } else {
    const gguf::Value* tokens = file.Find("tokenizer.ggml.tokens");
    if (tokens == nullptr || tokens->type != gguf::ValueType::kArray) {
      return NotFound("neither {} nor tokenizer.ggml.tokens gives the vocabulary size",
                      key("vocab_size"));
    }
    c.vocab_size = static_cast<int64_t>(std::get<gguf::Array>(tokens->data).items.size());
  }
  CLEAVE_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace cleave
