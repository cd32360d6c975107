#include "planner/roofline.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/gguf.h"
#include "model/model_config.h"

namespace cleave::planner {

using json = nlohmann::json;

double ModelShape::params_per_layer() const {
  const double h = double(hidden);
  const double attn = h * double(q_dim()) * 2 + h * double(kv_dim()) * 2;  // Q, O, K, V
  const double ffn = (gated_ffn ? 3.0 : 2.0) * h * double(ffn_hidden);
  return attn + ffn;
}

double ModelShape::num_params() const {
  // Embeddings once; OPT ties the LM head to them, Llama-family GGUFs mostly do not, but the
  // difference is < 3% of the weights of the models planned here, so one copy is counted.
  return double(num_layers) * params_per_layer() + double(vocab_size) * double(hidden);
}

int64_t ModelShape::kv_bytes_per_token() const {
  return static_cast<int64_t>(std::llround(double(num_layers) * kv_bytes_per_token_layer()));
}

Status ModelShape::Validate() const {
  if (num_layers <= 0 || hidden <= 0 || num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 ||
      ffn_hidden <= 0 || vocab_size <= 0 || max_context <= 0 || !(dtype_bytes > 0)) {
    return InvalidArgument("model shape '{}': every dimension must be positive", name);
  }
  if (num_heads % num_kv_heads != 0) {
    return InvalidArgument("model shape '{}': heads {} not a multiple of kv heads {}", name,
                           num_heads, num_kv_heads);
  }
  return Status::Ok();
}

namespace {

ModelShape Opt(std::string name, int64_t layers, int64_t hidden, int64_t heads, int64_t ffn) {
  ModelShape s;
  s.name = std::move(name);
  s.num_layers = layers;
  s.hidden = hidden;
  s.num_heads = heads;
  s.num_kv_heads = heads;  // multi-head attention
  s.head_dim = hidden / heads;
  s.ffn_hidden = ffn;
  s.vocab_size = 50272;
  s.max_context = 2048;
  s.gated_ffn = false;
  s.dtype_bytes = 2;
  return s;
}

}  // namespace

std::vector<std::string> BuiltinModelNames() {
  return {"opt-13b", "opt-66b", "opt-175b"};
}

Result<ModelShape> BuiltinModelShape(std::string_view name) {
  // facebook/opt-13b and opt-66b config.json; OPT-175B from the OPT paper (Zhang et al. 2022,
  // Table 1): hidden_size, num_attention_heads, num_hidden_layers, ffn_dim (= 4 hidden).
  if (name == "opt-13b") return Opt("opt-13b", 40, 5120, 40, 20480);
  if (name == "opt-66b") return Opt("opt-66b", 64, 9216, 72, 36864);
  if (name == "opt-175b") return Opt("opt-175b", 96, 12288, 96, 49152);
  return NotFound("no built-in model shape '{}'", name);
}

Result<ModelShape> ModelShapeFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("shape JSON: not an object");
  ModelShape s;
  auto get_int = [&](const char* key, int64_t* dst, bool required) -> Status {
    auto it = j.find(key);
    if (it == j.end()) {
      return required ? InvalidArgument("shape JSON: missing '{}'", key) : Status::Ok();
    }
    if (!it->is_number_integer())
      return InvalidArgument("shape JSON: '{}' must be an integer", key);
    *dst = it->get<int64_t>();
    return Status::Ok();
  };
  s.name = j.value("name", "model");
  CLEAVE_RETURN_IF_ERROR(get_int("num_layers", &s.num_layers, true));
  CLEAVE_RETURN_IF_ERROR(get_int("hidden", &s.hidden, true));
  CLEAVE_RETURN_IF_ERROR(get_int("num_heads", &s.num_heads, true));
  CLEAVE_RETURN_IF_ERROR(get_int("ffn_hidden", &s.ffn_hidden, true));
  CLEAVE_RETURN_IF_ERROR(get_int("vocab_size", &s.vocab_size, true));
  s.num_kv_heads = s.num_heads;
  CLEAVE_RETURN_IF_ERROR(get_int("num_kv_heads", &s.num_kv_heads, false));
  s.head_dim = s.num_heads > 0 ? s.hidden / s.num_heads : 0;
  CLEAVE_RETURN_IF_ERROR(get_int("head_dim", &s.head_dim, false));
  CLEAVE_RETURN_IF_ERROR(get_int("max_context", &s.max_context, false));
  if (auto it = j.find("gated_ffn"); it != j.end()) {
    if (!it->is_boolean()) return InvalidArgument("shape JSON: 'gated_ffn' must be a boolean");
    s.gated_ffn = it->get<bool>();
  }
  if (auto it = j.find("dtype_bytes"); it != j.end()) {
    if (!it->is_number()) return InvalidArgument("shape JSON: 'dtype_bytes' must be a number");
    s.dtype_bytes = it->get<double>();
  }
  CLEAVE_RETURN_IF_ERROR(s.Validate());
  return s;
}

Result<ModelShape> ModelShapeFromGguf(const std::string& path) {
  CLEAVE_ASSIGN_OR_RETURN(auto file, gguf::GgufFile::Open(path));
  CLEAVE_ASSIGN_OR_RETURN(ModelConfig c, ReadModelConfig(*file));
  ModelShape s;
  s.name = c.name;
  s.num_layers = c.num_layers;
  s.hidden = c.hidden;
  s.num_heads = c.num_heads;
  s.num_kv_heads = c.num_kv_heads;
  s.head_dim = c.head_dim;
  s.ffn_hidden = c.ffn_hidden;
  s.vocab_size = c.vocab_size;
  s.max_context = c.context_length > 0 ? c.context_length : 2048;
  s.gated_ffn = true;
  s.dtype_bytes = 2;
  CLEAVE_RETURN_IF_ERROR(s.Validate());
  return s;
}

Result<ModelShape> LoadModelShape(const std::string& spec) {
  auto ends_with = [&](std::string_view suffix) {
    return spec.size() >= suffix.size() &&
           spec.compare(spec.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".gguf")) return ModelShapeFromGguf(spec);
  if (ends_with(".json")) {
    std::ifstream in(spec);
    if (!in) return NotFound("cannot read {}", spec);
    std::stringstream ss;
    ss << in.rdbuf();
    auto shape = ModelShapeFromJson(ss.str());
    if (!shape.ok()) return shape.status().WithContext(spec);
    return shape;
  }
  std::string lower(spec);
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  return BuiltinModelShape(lower);
}

Result<GpuSpec> BuiltinGpu(std::string_view name) {
  constexpr double kTera = 1e12, kGiga = 1e9;
  // NVIDIA datasheets: A100 (SXM4 80GB): 312 TFLOP/s dense BF16, 2,039 GB/s HBM2e, NVLink 600
  // GB/s. H100 SXM5: 989 TFLOP/s dense BF16, 3.35 TB/s HBM3, NVLink 900 GB/s. H200 SXM:
  // 989 TFLOP/s, 4.8 TB/s HBM3e, 141 GB, NVLink 900 GB/s. Inter-node: one 200 Gb/s
  // InfiniBand/RoCE NIC per GPU = 25 GB/s (override with --inter-node-bw).
  if (name == "a100")
    return GpuSpec{"A100-SXM4-80GB", 312 * kTera, 2039 * kGiga,
                   80 * kGiga,       600 * kGiga, 25 * kGiga};
  if (name == "h100")
    return GpuSpec{"H100-SXM5-80GB", 989 * kTera, 3350 * kGiga,
                   80 * kGiga,       900 * kGiga, 25 * kGiga};
  if (name == "h200")
    return GpuSpec{"H200-SXM-141GB", 989 * kTera, 4800 * kGiga,
                   141 * kGiga,      900 * kGiga, 25 * kGiga};
  return NotFound("unknown hardware '{}' (a100, h100, h200, local)", name);
}

RooflineCostModel::RooflineCostModel(ModelShape shape, GpuSpec gpu, Parallelism par,
                                     RooflineAssumptions assumptions)
    : shape_(std::move(shape)), gpu_(std::move(gpu)), par_(par), a_(assumptions) {
  CLEAVE_CHECK(par_.tp >= 1 && par_.pp >= 1);
  // Per GPU: its share of the weights, and K/V for its layers and its heads (KV heads are
  // replicated when there are fewer than TP ranks).
  const double usable = gpu_.mem_bytes * (a_.memory_util - a_.activation_reserve);
  const double weights = shape_.weight_bytes() / double(par_.num_gpus());
  const double layers_per_gpu = std::ceil(double(shape_.num_layers) / par_.pp);
  const double kv_heads_per_gpu = std::ceil(double(shape_.num_kv_heads) / par_.tp);
  const double kv_per_token =
      layers_per_gpu * 2.0 * kv_heads_per_gpu * double(shape_.head_dim) * shape_.dtype_bytes;
  kv_capacity_tokens_ =
      usable > weights ? static_cast<int64_t>((usable - weights) / kv_per_token) : 0;
}

double RooflineCostModel::Roof(double compute_s, double memory_s) const {
  return std::max(compute_s, memory_s) +
         (1.0 - a_.compute_memory_overlap) * std::min(compute_s, memory_s);
}

double RooflineCostModel::LayersTime(const StepShape& s) const {
  const double tp = par_.tp;
  const double tokens = double(s.prefill_tokens + s.decode_seqs);
  const double compute = gpu_.peak_flops * a_.compute_eff;
  const double memory = gpu_.hbm_bw * a_.memory_eff;
  // GEMMs: weights read once, 2 FLOPs per weight per token.
  const double w = shape_.params_per_layer() / tp;
  const double gemm = Roof(2.0 * tokens * w / compute, w * shape_.dtype_bytes / memory);
  // Attention, prefill spans and decodes as separate kernels: causal pairs over the spans
  // (reading the K/V cached before them), full context for decodes; the new tokens' K/V written.
  const double q = double(shape_.q_dim()) / tp;
  const double kv_token = shape_.kv_bytes_per_token_layer() / tp;
  const double prefill_attn =
      Roof(2.0 * q * s.prefill_sq / compute,
           kv_token * double(s.prefill_context + s.prefill_tokens) / memory);
  const double decode_attn = Roof(4.0 * q * double(s.decode_context) / compute,
                                  kv_token * double(s.decode_context + s.decode_seqs) / memory);
  double layer = gemm + prefill_attn + decode_attn;
  if (par_.tp > 1) {
    const double bytes = tokens * double(shape_.hidden) * shape_.dtype_bytes;
    layer += 2 * (2.0 * (tp - 1) / tp * bytes / (gpu_.nvlink_bw * a_.allreduce_bw_eff) +
                  a_.allreduce_latency_s);
  }
  // LM head over the rows that need logits (one per span).
  const double rows = double(s.prefill_seqs + s.decode_seqs);
  const double head_w = double(shape_.vocab_size) * double(shape_.hidden) / tp;
  const double head = Roof(2.0 * rows * head_w / compute, head_w * shape_.dtype_bytes / memory);
  return double(shape_.num_layers) * layer + head;
}

StepShape PipelineMicroBatch(const StepShape& s, int pp_stages) {
  const double pp = pp_stages;
  StepShape mb;
  mb.prefill_tokens =
      std::max<int64_t>(std::llround(double(s.prefill_tokens) / pp), s.largest_prefill_tokens);
  mb.prefill_sq = std::max(s.prefill_sq / pp, s.largest_prefill_sq);
  mb.prefill_seqs = s.prefill_seqs > 0 ? std::max(1, int(std::ceil(s.prefill_seqs / pp))) : 0;
  // Cached context in proportion to the micro-batch's share of the prefill tokens.
  mb.prefill_context =
      s.prefill_tokens > 0
          ? std::llround(double(s.prefill_context) *
                         std::min(1.0, double(mb.prefill_tokens) / double(s.prefill_tokens)))
          : 0;
  mb.decode_seqs = int32_t(std::ceil(s.decode_seqs / pp));
  mb.decode_context = std::llround(double(s.decode_context) / pp);
  mb.largest_prefill_tokens = s.largest_prefill_tokens;
  mb.largest_prefill_sq = s.largest_prefill_sq;
  return mb;
}

double RooflineCostModel::HandoffTime(const StepShape& mb) const {
  if (par_.pp == 1) return 0;
  const double act_bytes = double(mb.prefill_tokens + mb.decode_seqs) * double(shape_.hidden) *
                           shape_.dtype_bytes / par_.tp;
  const double link = par_.pp_cross_node ? gpu_.inter_node_bw : gpu_.nvlink_bw;
  return (par_.pp - 1) * (act_bytes / link + 2 * a_.allreduce_latency_s);
}

double RooflineCostModel::StepTime(const StepShape& s) const {
  if (s.empty()) return 0;
  if (par_.pp == 1) return LayersTime(s) + a_.step_overhead_s;
  // One pipeline round: the largest of pp micro-batches through every layer, plus hand-offs.
  const StepShape mb = PipelineMicroBatch(s, par_.pp);
  return LayersTime(mb) + HandoffTime(mb) + a_.step_overhead_s;
}

double TransferTime(double bytes, double bandwidth, int lanes) {
  constexpr double kSetupS = 1e-4;
  if (bytes <= 0) return 0;
  return kSetupS + bytes / (bandwidth * std::max(1, lanes));
}

}  // namespace cleave::planner
