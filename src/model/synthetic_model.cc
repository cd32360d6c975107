#include "model/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "kernels/quant_formats.h"
#include "model/gguf_writer.h"

namespace cleave {
namespace {

// GPT-2's byte -> printable code point mapping (bytes that are printable stay themselves).
std::string ByteToken(uint8_t b) {
  uint32_t cp;
  if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae)) {
    cp = b;
  } else {
    // Non-printable bytes map to 256 + their rank among non-printable bytes.
    uint32_t rank = 0;
    for (uint32_t x = 0; x < b; ++x) {
      if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae))) ++rank;
    }
    cp = 256 + rank;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return out;
}

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Deterministic pseudo-normal values: the sum of four uniforms, rescaled to unit variance.
void FillNormal(uint64_t seed, float stddev, float* out, int64_t n) {
  uint64_t state = seed;
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int k = 0; k < 4; ++k) sum += static_cast<double>(SplitMix(state) >> 11) * 0x1.0p-53;
    out[i] = static_cast<float>((sum - 2.0) * std::sqrt(3.0) * stddev);
  }
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
};

Vocab MakeVocab(int64_t size) {
  Vocab v;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(ByteToken(static_cast<uint8_t>(b)));
    v.types.push_back(6 /* byte */);
  }
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    v.tokens.push_back(special);
    v.types.push_back(3 /* control */);
  }
  // Merged tokens: common English letter pairs first, then pairs of earlier merged tokens.
  std::set<std::string> seen(v.tokens.begin(), v.tokens.end());
  std::vector<std::string> pieces;
  const std::string letters = "etaoinshrdlucmfwypvbgkjqxz";
  const std::string space = ByteToken(' ');
  for (char c : letters) pieces.push_back(std::string(1, c));
  std::vector<std::pair<std::string, std::string>> candidates;
  for (char c : letters) candidates.emplace_back(space, std::string(1, c));
  for (char a : letters)
    for (char b : letters) candidates.emplace_back(std::string(1, a), std::string(1, b));
  size_t next = 0;
  size_t extend_from = 259;  // first merged token not yet extended (each is extended once)
  while (static_cast<int64_t>(v.tokens.size()) < size) {
    if (next == candidates.size()) {
      // Extend with longer tokens: each earlier merged token followed by a letter.
      std::vector<std::pair<std::string, std::string>> more;
      for (; extend_from < v.tokens.size() && more.size() < 100000; ++extend_from)
        for (char c : letters) more.emplace_back(v.tokens[extend_from], std::string(1, c));
      candidates.insert(candidates.end(), more.begin(), more.end());
    }
    auto [a, b] = candidates[next++];
    std::string merged = a + b;
    if (!seen.insert(merged).second) continue;
    v.tokens.push_back(merged);
    v.types.push_back(1 /* normal */);
    v.merges.push_back(a + " " + b);
  }
  v.tokens.resize(size);
  v.types.resize(size);
  return v;
}

}  // namespace

SyntheticModelSpec Llama32_1BSpec(DType weight_type) {
  SyntheticModelSpec s;
  s.num_layers = 16;
  s.hidden = 2048;
  s.num_heads = 32;
  s.num_kv_heads = 8;
  s.ffn_hidden = 8192;
  s.vocab_size = 128256;
  s.context_length = 131072;
  s.rope_freq_base = 500000.0f;
  s.weight_type = weight_type;
  s.embedding_type = weight_type;
  return s;
}

Status WriteSyntheticModel(const SyntheticModelSpec& spec, const std::string& path) {
  if (spec.arch != "llama" && spec.arch != "qwen2") {
    return InvalidArgument("synthetic model: unknown architecture '{}'", spec.arch);
  }
  if (spec.vocab_size < 300) return InvalidArgument("synthetic model: vocab_size must be >= 300");
  if (spec.num_heads % spec.num_kv_heads != 0 || spec.hidden % spec.num_heads != 0) {
    return InvalidArgument("synthetic model: heads must divide hidden and kv heads divide heads");
  }
  const std::string& a = spec.arch;
  const int64_t head_dim = spec.hidden / spec.num_heads;
  const int64_t kv_dim = head_dim * spec.num_kv_heads;
  gguf::GgufWriter w;
  w.SetString("general.architecture", a);
  w.SetString("general.name", "cleave synthetic " + a);
  w.SetUint32(a + ".block_count", static_cast<uint32_t>(spec.num_layers));
  w.SetUint32(a + ".context_length", static_cast<uint32_t>(spec.context_length));
  w.SetUint32(a + ".embedding_length", static_cast<uint32_t>(spec.hidden));
  w.SetUint32(a + ".feed_forward_length", static_cast<uint32_t>(spec.ffn_hidden));
  w.SetUint32(a + ".attention.head_count", static_cast<uint32_t>(spec.num_heads));
  w.SetUint32(a + ".attention.head_count_kv", static_cast<uint32_t>(spec.num_kv_heads));
  w.SetFloat32(a + ".rope.freq_base", spec.rope_freq_base);
  w.SetFloat32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  Vocab vocab = MakeVocab(spec.vocab_size);
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "default");
  w.SetStringArray("tokenizer.ggml.tokens", vocab.tokens);
  w.SetInt32Array("tokenizer.ggml.token_type", vocab.types);
  w.SetStringArray("tokenizer.ggml.merges", vocab.merges);
  w.SetUint32("tokenizer.ggml.bos_token_id", 257);  // <|im_start|>
  w.SetUint32("tokenizer.ggml.eos_token_id", 258);  // <|im_end|>
  w.SetBool("tokenizer.ggml.add_bos_token", false);

  // Each tensor is produced on demand, row by row, from its own seed, so writing streams.
  uint64_t tensor_seed = spec.seed * 1000003;
  auto add = [&](const std::string& name, DType dtype, int64_t cols, int64_t rows, float stddev,
                 float offset) -> Status {
    const uint64_t seed = ++tensor_seed * 0x2545f4914f6cdd1dull;
    auto row_bytes = RowBytes(dtype, cols);
    if (!row_bytes)
      return InvalidArgument("{}: {} columns do not fit {} blocks", name, cols, DTypeName(dtype));
    std::vector<int64_t> shape =
        rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    const uint64_t rb = *row_bytes;
    return w.AddTensorFill(
        name, dtype, shape, [=](uint64_t byte_offset, std::span<uint8_t> dest) -> Status {
          std::vector<float> values(cols);
          std::vector<uint8_t> row(rb);
          uint64_t done = 0;
          while (done < dest.size()) {
            const uint64_t at = byte_offset + done;
            const uint64_t r = at / rb, in_row = at % rb;
            FillNormal(seed + r * 0x9e3779b97f4a7c15ull, stddev, values.data(), cols);
            for (auto& x : values) x += offset;
            if (kernels::IsSupportedWeightType(dtype)) {
              kernels::QuantizeRow(dtype, values.data(), row.data(), cols);
            } else {
              std::fill(row.begin(), row.end(), uint8_t{0});  // zero scales: valid in every format
            }
            const uint64_t n = std::min<uint64_t>(rb - in_row, dest.size() - done);
            std::memcpy(dest.data() + done, row.data() + in_row, n);
            done += n;
          }
          return Status::Ok();
        });
  };
  const float w_std = 1.0f / std::sqrt(static_cast<float>(spec.hidden));
  const float down_std = 1.0f / std::sqrt(static_cast<float>(spec.ffn_hidden));
  CLEAVE_RETURN_IF_ERROR(
      add("token_embd.weight", spec.embedding_type, spec.hidden, spec.vocab_size, 1.0f, 0.0f));
  CLEAVE_RETURN_IF_ERROR(add("output_norm.weight", DType::kF32, spec.hidden, 1, 0.1f, 1.0f));
  if (!spec.tied_embeddings) {
    CLEAVE_RETURN_IF_ERROR(
        add("output.weight", spec.embedding_type, spec.hidden, spec.vocab_size, w_std, 0.0f));
  }
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    auto n = [l](const char* suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    const DType wt = spec.weight_type;
    CLEAVE_RETURN_IF_ERROR(add(n("attn_norm.weight"), DType::kF32, spec.hidden, 1, 0.1f, 1.0f));
    CLEAVE_RETURN_IF_ERROR(add(n("attn_q.weight"), wt, spec.hidden, spec.hidden, w_std, 0.0f));
    CLEAVE_RETURN_IF_ERROR(add(n("attn_k.weight"), wt, spec.hidden, kv_dim, w_std, 0.0f));
    CLEAVE_RETURN_IF_ERROR(add(n("attn_v.weight"), wt, spec.hidden, kv_dim, w_std, 0.0f));
    if (spec.arch == "qwen2") {
      CLEAVE_RETURN_IF_ERROR(add(n("attn_q.bias"), DType::kF32, spec.hidden, 1, 0.5f, 0.0f));
      CLEAVE_RETURN_IF_ERROR(add(n("attn_k.bias"), DType::kF32, kv_dim, 1, 0.5f, 0.0f));
      CLEAVE_RETURN_IF_ERROR(add(n("attn_v.bias"), DType::kF32, kv_dim, 1, 0.5f, 0.0f));
    }
    CLEAVE_RETURN_IF_ERROR(add(n("attn_output.weight"), wt, spec.hidden, spec.hidden, w_std, 0.0f));
    CLEAVE_RETURN_IF_ERROR(add(n("ffn_norm.weight"), DType::kF32, spec.hidden, 1, 0.1f, 1.0f));
    CLEAVE_RETURN_IF_ERROR(
        add(n("ffn_gate.weight"), wt, spec.hidden, spec.ffn_hidden, w_std, 0.0f));
    CLEAVE_RETURN_IF_ERROR(add(n("ffn_up.weight"), wt, spec.hidden, spec.ffn_hidden, w_std, 0.0f));
    CLEAVE_RETURN_IF_ERROR(
        add(n("ffn_down.weight"), wt, spec.ffn_hidden, spec.hidden, down_std, 0.0f));
  }
  return w.WriteFile(path);
}

}  // namespace cleave
