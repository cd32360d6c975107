// Analytic GPU cost model: a roofline per layer from the model shape and a hardware table,
// with tensor-parallel all-reduces and pipeline-parallel stage hand-offs.
//
// Per layer, for a step of t tokens (prefill and decode spans together) on one TP group of
// `tp` GPUs (weights, heads and FFN split tp ways):
//   FLOPs    = 2·t·P_layer/tp                         (QKV, output, FFN GEMMs)
//            + 2·h_q·(Σ n_i² + 2 n_i s_i)/tp           (causal QKᵀ and PV over prefill spans)
//            + 4·h_q·Σ context/tp                      (decode attention)
//   bytes    = P_layer·dtype/tp                        (weights, read once per step)
//            + kv_layer·(Σ context + Σ s_i)/tp         (cached K/V read by attention)
//            + kv_layer·t/tp                           (new K/V written)
//   time     = GEMMs:              roof(GEMM FLOPs, weight bytes)
//            + prefill attention:  roof(its FLOPs, its K/V bytes (Σ s_i read, Σ n_i written))
//            + decode attention:   roof(its FLOPs, its K/V bytes (Σ context read, B written))
//              (FLOPs at peak·compute_eff, bytes at hbm_bw·memory_eff; roof(c, m) = max(c, m)
//              + (1 − overlap)·min(c, m): real kernels near the ridge point do not fully hide
//              one under the other)
//            + 2 all-reduces of t·hidden·dtype bytes (ring: 2(tp-1)/tp of it at NCCL's bus
//              bandwidth, a fraction of the NVLink figure, plus a fixed latency each) when tp > 1.
// In a mixed step (decodes riding a prefill chunk) the decode tokens share the GEMMs, so the
// weights are read once, but the two attentions are separate kernels (varlen flash attention
// for the chunk, paged decode attention for the batch), so each pays its own roofline: the
// decodes' KV reads do not hide under the chunk's attention FLOPs.
// A step = layers·layer time + LM head over the rows that need logits + a fixed step overhead.
// Pipeline parallelism (pp stages): each stage owns layers/pp; the batch is cut into pp
// micro-batches (whole sequences, balanced by tokens); a step is one pipeline round, whose time
// is the largest micro-batch's time through all layers plus (pp-1) activation hand-offs over
// NVLink (same node) or the inter-node link. So PP buys KV capacity and prefill throughput, not
// decode latency, which is what DistServe observes.
//
// Efficiencies, overlap and all-reduce costs are calibrated to DistServe's measured A100 profile
// (OPT-13B TP1/2/4, OPT-66B TP2/3/4/8; rms error 7%, docs/planner.md): with the ideal roofline
// (full overlap, NCCL at 40% of NVLink, 15 us per all-reduce) TP8 steps came out 35-55% fast,
// which favoured large colocated instances.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "planner/cost_model.h"

namespace cleave::planner {

// A decoder-only transformer's shape, enough for FLOPs, bytes and KV size.
struct ModelShape {
  std::string name;
  int64_t num_layers = 0;
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_hidden = 0;
  int64_t vocab_size = 0;
  int64_t max_context = 2048;
  bool gated_ffn = false;    // 3 FFN matrices (SwiGLU, Llama) or 2 (OPT's fc1/fc2)
  double dtype_bytes = 2.0;  // weights and KV as served (fp16/bf16)

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  double params_per_layer() const;
  double num_params() const;  // layers + embeddings (+ untied LM head)
  double weight_bytes() const { return num_params() * dtype_bytes; }
  // K and V of one token in one layer / in all layers.
  double kv_bytes_per_token_layer() const { return 2.0 * double(kv_dim()) * dtype_bytes; }
  int64_t kv_bytes_per_token() const;
  Status Validate() const;
};

// Published configs: opt-13b, opt-66b, opt-175b (facebook/opt-* config.json), and the names
// the CLI accepts for them. NotFound for anything else.
Result<ModelShape> BuiltinModelShape(std::string_view name);
std::vector<std::string> BuiltinModelNames();
// {"name", "num_layers", "hidden", "num_heads", "num_kv_heads"?, "head_dim"?, "ffn_hidden",
//  "vocab_size", "max_context"?, "gated_ffn"?, "dtype_bytes"?}
Result<ModelShape> ModelShapeFromJson(const std::string& text);
// From a GGUF's hyper-parameters (Llama family: gated FFN), served in 16-bit.
Result<ModelShape> ModelShapeFromGguf(const std::string& path);
// Dispatches: a built-in name, a *.json file or a *.gguf file.
Result<ModelShape> LoadModelShape(const std::string& spec);

struct GpuSpec {
  std::string name;
  double peak_flops = 0;     // dense fp16/bf16 tensor-core FLOP/s
  double hbm_bw = 0;         // bytes/s
  double mem_bytes = 0;      // per GPU
  double nvlink_bw = 0;      // bytes/s per GPU, within a node
  double inter_node_bw = 0;  // bytes/s per GPU between nodes
};

// a100 (A100-SXM4-80GB), h100 (H100-SXM5-80GB), h200 (H200-SXM-141GB); see docs/planner.md for
// the datasheet sources. inter_node_bw defaults to 25 GB/s (one 200 Gb/s NIC per GPU).
Result<GpuSpec> BuiltinGpu(std::string_view name);

// Assumptions shared by every roofline estimate; docs/planner.md states them.
struct RooflineAssumptions {
  double compute_eff = 0.70;  // achieved / peak FLOP/s on large GEMMs
  double memory_eff = 0.80;   // achieved / peak HBM bandwidth
  // Fraction of the shorter of a kernel's compute and memory times hidden under the longer:
  // 1 is the ideal roofline max(c, m), 0 is c + m (no overlap, what kernels near the ridge
  // point reach).
  double compute_memory_overlap = 0.25;
  double step_overhead_s = 3e-3;       // launch, scheduling, sampling per step
  double allreduce_latency_s = 60e-6;  // per all-reduce within a node (NCCL + launch + sync)
  double allreduce_bw_eff = 0.2;       // all-reduce bus bandwidth / NVLink's bidirectional figure
  double memory_util = 0.90;           // fraction of GPU memory the engine may use
  double activation_reserve = 0.05;    // of GPU memory, kept for activations and workspace
};

struct Parallelism {
  int tp = 1;
  int pp = 1;
  bool pp_cross_node = false;  // stage hand-offs go over the inter-node link
  int num_gpus() const { return tp * pp; }
};

class RooflineCostModel final : public CostModel {
 public:
  RooflineCostModel(ModelShape shape, GpuSpec gpu, Parallelism par,
                    RooflineAssumptions assumptions = {});

  // Whether the weights fit with room for at least max_context tokens of KV.
  bool fits() const { return kv_capacity_tokens_ >= shape_.max_context; }
  double StepTime(const StepShape& shape) const override;
  int64_t kv_capacity_tokens() const override { return kv_capacity_tokens_; }
  int64_t kv_bytes_per_token() const override { return shape_.kv_bytes_per_token(); }
  const Parallelism& parallelism() const { return par_; }
  // With pp > 1: the (pp − 1) activation hand-offs of one micro-batch between stages.
  double HandoffTime(const StepShape& micro_batch) const;

 private:
  double LayersTime(const StepShape& s) const;           // all layers, one TP group, no PP
  double Roof(double compute_s, double memory_s) const;  // one kernel's time

  ModelShape shape_;
  GpuSpec gpu_;
  Parallelism par_;
  RooflineAssumptions a_;
  int64_t kv_capacity_tokens_ = 0;
};

// The largest of the pp micro-batches a pipeline cuts a step into (whole sequences, balanced by
// tokens): what one pipeline round waits for.
StepShape PipelineMicroBatch(const StepShape& s, int pp);

// Seconds to move `bytes` over a link of `bandwidth` bytes/s shared by `lanes` GPU pairs in
// parallel (KV is sharded across the sender's and receiver's GPUs), plus a fixed setup latency.
double TransferTime(double bytes, double bandwidth, int lanes);

}  // namespace cleave::planner
