#include "model/model.h"

#include <cmath>
#include <cstring>

#include <fmt/ranges.h>

#include "core/log.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "kernels/quant_formats.h"

namespace cleave {

// Activations of one Forward call, reused across calls (grown, never shrunk).
struct Model::Scratch {
  std::vector<float> x;            // [num_tokens, hidden] residual stream
  std::vector<float> xn;           // [num_tokens, hidden] normed
  std::vector<float> q;            // [num_tokens, q_dim]
  std::vector<float> k, v;         // [num_tokens, kv_dim]
  std::vector<float> attn;         // [num_tokens, q_dim]
  std::vector<float> proj;         // [num_tokens, hidden]
  std::vector<float> gate, up;     // [num_tokens, ffn_hidden]
  std::vector<int32_t> token_ids;  // [num_tokens]
  std::vector<int64_t> positions;  // [num_tokens]
  std::vector<int32_t> item_of;    // [num_tokens] index into the batch
};

namespace {

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::Load(const std::string& path, MappedFile::Backing backing) {
  std::unique_ptr<Model> model(new Model());
  CLEAVE_ASSIGN_OR_RETURN(model->file_, gguf::GgufFile::Open(path, {}, backing));
  CLEAVE_ASSIGN_OR_RETURN(model->config_, ReadModelConfig(*model->file_));
  CLEAVE_ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromGguf(*model->file_));
  if (model->tokenizer_->vocab_size() != model->config_.vocab_size) {
    return InvalidArgument("{}: tokenizer has {} tokens but the model's vocabulary is {}", path,
                           model->tokenizer_->vocab_size(), model->config_.vocab_size);
  }
  auto source = model->file_->GetString("tokenizer.chat_template");
  if (source.ok()) {
    auto parsed = ChatTemplate::Parse(*source);
    if (parsed.ok()) {
      model->chat_template_ = std::make_unique<ChatTemplate>(std::move(parsed).value());
    } else {
      spdlog::warn("chat template does not parse ({}); falling back to ChatML",
                   parsed.status().message());
    }
  }
  if (!model->chat_template_)
    model->chat_template_ = std::make_unique<ChatTemplate>(ChatTemplate::ChatML());
  CLEAVE_RETURN_IF_ERROR(model->LoadWeights().WithContext(path));
  model->scratch_ = std::make_unique<Scratch>();
  return model;
}

Status Model::LoadWeights() {
  const ModelConfig& c = config_;
  const TensorNames& names = c.arch->tensors;
  // A 2-D weight of `rows` outputs by `cols` inputs (GGUF shape [cols, rows]).
  auto matrix = [&](std::string_view name, int64_t cols, int64_t rows,
                    kernels::WeightView* out) -> Status {
    const gguf::TensorInfo* t = file_->FindTensor(name);
    if (t == nullptr) return NotFound("tensor {} is missing", name);
    if (t->shape.size() != 2 || t->shape[0] != cols || t->shape[1] != rows) {
      return InvalidArgument("tensor {} has shape [{}], expected [{}, {}]", name,
                             fmt::join(t->shape, ", "), cols, rows);
    }
    if (!kernels::IsSupportedWeightType(t->dtype)) {
      return Unimplemented(
          "tensor {} is stored as {}, which cleave does not support (supported: "
          "f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q5_K, q6_K)",
          name, DTypeName(t->dtype));
    }
    *out = kernels::WeightView{t->dtype, t->data, rows, cols};
    return Status::Ok();
  };
  // A 1-D tensor of n elements, converted to F32. Optional ones may be absent (out stays empty).
  auto vector = [&](std::string_view name, int64_t n, bool optional,
                    std::vector<float>* out) -> Status {
    const gguf::TensorInfo* t = file_->FindTensor(name);
    if (t == nullptr) return optional ? Status::Ok() : NotFound("tensor {} is missing", name);
    if (t->shape.size() != 1 || t->shape[0] != n) {
      return InvalidArgument("tensor {} has shape [{}], expected [{}]", name,
                             fmt::join(t->shape, ", "), n);
    }
    if (!kernels::IsSupportedWeightType(t->dtype)) {
      return Unimplemented("tensor {} is stored as {}, which cleave does not support", name,
                           DTypeName(t->dtype));
    }
    out->resize(n);
    kernels::DequantizeRow(t->dtype, t->data, out->data(), n);
    return Status::Ok();
  };
  auto layer_name = [](std::string_view pattern, int64_t i) {
    return fmt::format(fmt::runtime(pattern), i);
  };

  CLEAVE_RETURN_IF_ERROR(matrix(names.token_embd, c.hidden, c.vocab_size, &token_embd_));
  if (file_->FindTensor(names.output) != nullptr) {
    CLEAVE_RETURN_IF_ERROR(matrix(names.output, c.hidden, c.vocab_size, &output_));
  } else {
    output_ = token_embd_;  // tied embeddings
  }
  CLEAVE_RETURN_IF_ERROR(vector(names.output_norm, c.hidden, false, &output_norm_));

  const int64_t half = c.head_dim / 2;
  std::vector<float> freq_factors;
  CLEAVE_RETURN_IF_ERROR(vector(names.rope_freqs, half, true, &freq_factors));
  inv_freq_.resize(half);
  for (int64_t i = 0; i < half; ++i) {
    double f = std::pow(static_cast<double>(c.rope_freq_base), -2.0 * i / c.head_dim);
    if (!freq_factors.empty()) f /= freq_factors[i];
    inv_freq_[i] = static_cast<float>(f * c.rope_freq_scale);
  }

  layers_.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    Layer& l = layers_[i];
    CLEAVE_RETURN_IF_ERROR(vector(layer_name(names.attn_norm, i), c.hidden, false, &l.attn_norm));
    CLEAVE_RETURN_IF_ERROR(matrix(layer_name(names.attn_q, i), c.hidden, c.q_dim(), &l.attn_q));
    CLEAVE_RETURN_IF_ERROR(matrix(layer_name(names.attn_k, i), c.hidden, c.kv_dim(), &l.attn_k));
    CLEAVE_RETURN_IF_ERROR(matrix(layer_name(names.attn_v, i), c.hidden, c.kv_dim(), &l.attn_v));
    const bool bias_optional = !c.arch->requires_qkv_bias;
    CLEAVE_RETURN_IF_ERROR(
        vector(layer_name(names.attn_q_bias, i), c.q_dim(), bias_optional, &l.q_bias));
    CLEAVE_RETURN_IF_ERROR(
        vector(layer_name(names.attn_k_bias, i), c.kv_dim(), bias_optional, &l.k_bias));
    CLEAVE_RETURN_IF_ERROR(
        vector(layer_name(names.attn_v_bias, i), c.kv_dim(), bias_optional, &l.v_bias));
    CLEAVE_RETURN_IF_ERROR(
        matrix(layer_name(names.attn_output, i), c.q_dim(), c.hidden, &l.attn_output));
    CLEAVE_RETURN_IF_ERROR(vector(layer_name(names.ffn_norm, i), c.hidden, false, &l.ffn_norm));
    CLEAVE_RETURN_IF_ERROR(
        matrix(layer_name(names.ffn_gate, i), c.hidden, c.ffn_hidden, &l.ffn_gate));
    CLEAVE_RETURN_IF_ERROR(matrix(layer_name(names.ffn_up, i), c.hidden, c.ffn_hidden, &l.ffn_up));
    CLEAVE_RETURN_IF_ERROR(
        matrix(layer_name(names.ffn_down, i), c.ffn_hidden, c.hidden, &l.ffn_down));
  }
  return Status::Ok();
}

KvCache Model::MakeKvCache(int64_t num_blocks, int64_t block_size, DType kv_dtype) const {
  return KvCache(config_.num_layers, num_blocks, block_size, config_.num_kv_heads, config_.head_dim,
                 kv_dtype);
}

Status Model::Forward(std::span<const ForwardItem> batch, KvCache& cache, ThreadPool& pool,
                      std::vector<float>* logits, const LayerKvFn& on_layer_kv) {
  const ModelConfig& c = config_;
  Scratch& s = *scratch_;
  // Validate the batch and flatten it into per-token arrays.
  int64_t num_tokens = 0, num_logit_rows = 0;
  for (const ForwardItem& item : batch) {
    const int64_t n = static_cast<int64_t>(item.tokens.size());
    if (n == 0) return InvalidArgument("forward: empty token span");
    if (item.start_pos < 0) return InvalidArgument("forward: negative start position");
    const int64_t end = item.start_pos + n;
    const int64_t blocks_needed = (end + cache.block_size() - 1) / cache.block_size();
    if (static_cast<int64_t>(item.block_table.size()) < blocks_needed) {
      return InvalidArgument("forward: block table has {} blocks, positions up to {} need {}",
                             item.block_table.size(), end, blocks_needed);
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      if (item.block_table[b] < 0 || item.block_table[b] >= cache.num_blocks()) {
        return InvalidArgument("forward: block id {} out of range", item.block_table[b]);
      }
    }
    num_tokens += n;
    num_logit_rows += item.logits == LogitsMode::kAll    ? n
                      : item.logits == LogitsMode::kLast ? 1
                                                         : 0;
  }
  Grow(s.token_ids, num_tokens);
  Grow(s.positions, num_tokens);
  Grow(s.item_of, num_tokens);
  {
    int64_t t = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      for (size_t j = 0; j < batch[i].tokens.size(); ++j, ++t) {
        const TokenId id = batch[i].tokens[j];
        if (id < 0 || id >= c.vocab_size)
          return InvalidArgument("forward: token id {} out of range", id);
        s.token_ids[t] = id;
        s.positions[t] = batch[i].start_pos + static_cast<int64_t>(j);
        s.item_of[t] = static_cast<int32_t>(i);
      }
    }
  }
  const int64_t hidden = c.hidden, q_dim = c.q_dim(), kv_dim = c.kv_dim(), ffn = c.ffn_hidden;
  Grow(s.x, num_tokens * hidden);
  Grow(s.xn, num_tokens * hidden);
  Grow(s.q, num_tokens * q_dim);
  Grow(s.k, num_tokens * kv_dim);
  Grow(s.v, num_tokens * kv_dim);
  Grow(s.attn, num_tokens * q_dim);
  Grow(s.proj, num_tokens * hidden);
  Grow(s.gate, num_tokens * ffn);
  Grow(s.up, num_tokens * ffn);

  kernels::GetRows(token_embd_, s.token_ids.data(), num_tokens, s.x.data());

  auto norm_rows = [&](const std::vector<float>& weight) {
    pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        kernels::RmsNorm(&s.x[t * hidden], weight.data(), c.rms_norm_eps, hidden,
                         &s.xn[t * hidden]);
      }
    });
  };
  auto add_bias = [&](const std::vector<float>& bias, float* rows, int64_t width) {
    if (bias.empty()) return;
    for (int64_t t = 0; t < num_tokens; ++t) kernels::Add(bias.data(), width, rows + t * width);
  };

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& layer = layers_[l];
    // Attention block.
    norm_rows(layer.attn_norm);
    // q: [T, q_dim], k and v: [T, kv_dim]; one quantization of xn, one parallel section.
    const kernels::MatMulOutput qkv[] = {
        {layer.attn_q, s.q.data()}, {layer.attn_k, s.k.data()}, {layer.attn_v, s.v.data()}};
    kernels::MatMulShared(qkv, s.xn.data(), num_tokens, pool);
    add_bias(layer.q_bias, s.q.data(), q_dim);
    add_bias(layer.k_bias, s.k.data(), kv_dim);
    add_bias(layer.v_bias, s.v.data(), kv_dim);
    pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        kernels::Rope(&s.q[t * q_dim], c.num_heads, c.head_dim, s.positions[t], inv_freq_.data(),
                      c.arch->rope_neox);
        kernels::Rope(&s.k[t * kv_dim], c.num_kv_heads, c.head_dim, s.positions[t],
                      inv_freq_.data(), c.arch->rope_neox);
        // Store this token's K and V in its slot.
        const ForwardItem& item = batch[s.item_of[t]];
        const int64_t pos = s.positions[t];
        const int32_t block = item.block_table[pos / cache.block_size()];
        cache.Write(l, block, pos % cache.block_size(), &s.k[t * kv_dim], &s.v[t * kv_dim]);
      }
    });
    if (on_layer_kv) on_layer_kv(l);
    Attention(batch, l, cache, num_tokens, s.q.data(), s.attn.data(), pool);
    kernels::MatMul(layer.attn_output, s.attn.data(), num_tokens, s.proj.data(), pool);
    kernels::Add(s.proj.data(), num_tokens * hidden, s.x.data());
    // Feed-forward block (SwiGLU).
    norm_rows(layer.ffn_norm);
    const kernels::MatMulOutput gate_up[] = {{layer.ffn_gate, s.gate.data()},
                                             {layer.ffn_up, s.up.data()}};  // [T, ffn] each
    kernels::MatMulShared(gate_up, s.xn.data(), num_tokens, pool);
    pool.ParallelFor(num_tokens, 1, [&](int64_t begin, int64_t end) {
      kernels::SiluMul(&s.gate[begin * ffn], &s.up[begin * ffn], (end - begin) * ffn,
                       &s.gate[begin * ffn]);
    });
    kernels::MatMul(layer.ffn_down, s.gate.data(), num_tokens, s.proj.data(), pool);
    kernels::Add(s.proj.data(), num_tokens * hidden, s.x.data());
  }

  // Final norm and output projection, only for the rows that need logits.
  int64_t row = 0, t = 0;
  for (const ForwardItem& item : batch) {
    const int64_t n = static_cast<int64_t>(item.tokens.size());
    for (int64_t j = 0; j < n; ++j, ++t) {
      const bool wanted =
          item.logits == LogitsMode::kAll || (item.logits == LogitsMode::kLast && j == n - 1);
      if (!wanted) continue;
      kernels::RmsNorm(&s.x[t * hidden], output_norm_.data(), c.rms_norm_eps, hidden,
                       &s.xn[row * hidden]);
      ++row;
    }
  }
  logits->resize(static_cast<size_t>(num_logit_rows * c.vocab_size));
  if (num_logit_rows > 0)
    kernels::MatMul(output_, s.xn.data(), num_logit_rows, logits->data(), pool);
  return Status::Ok();
}

void Model::Attention(std::span<const ForwardItem> batch, int64_t layer, const KvCache& cache,
                      int64_t num_tokens, const float* q, float* out, ThreadPool& pool) {
  const ModelConfig& c = config_;
  const Scratch& s = *scratch_;
  const int64_t q_dim = c.q_dim(), hd = c.head_dim;
  const int64_t group = c.num_heads / c.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const kernels::PagedKv k = cache.KView(layer), v = cache.VView(layer);
  // A task is one token's query heads that share a KV head (each K/V row read once for all of
  // them), or a single head when that gives too few tasks to keep every thread busy (decode
  // of one sequence). Both give the same bits (kernels/attention.h).
  const bool whole_groups = num_tokens * c.num_kv_heads >= 2 * pool.num_threads();
  const int64_t heads_per_task = whole_groups ? group : 1;
  const int64_t tasks_per_token = c.num_heads / heads_per_task;
  pool.ParallelFor(num_tokens * tasks_per_token, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / tasks_per_token;
      const int64_t h = task % tasks_per_token * heads_per_task;  // first query head
      Grow(scores, static_cast<size_t>(heads_per_task * (s.positions[t] + 1)));
      kernels::AttentionHead a;
      a.q = q + t * q_dim + h * hd;
      a.block_table = batch[s.item_of[t]].block_table.data();
      a.num_positions = s.positions[t] + 1;
      a.kv_head = h / group;
      a.head_dim = hd;
      a.scale = scale;
      a.scores = scores.data();
      a.out = out + t * q_dim + h * hd;
      a.num_heads = heads_per_task;
      kernels::PagedAttention(k, v, a);
    }
  });
}

}  // namespace cleave
