// Placement search: which instances, with which parallelism, in which prefill:decode ratio,
// give the most goodput per GPU (or per core) under a workload's TTFT/TPOT objectives.
//
// Goodput of one configuration = the highest request rate at which the simulated attainment
// (joint per request, bench/metrics.h) reaches the target, found by bench::FindGoodput's
// bisection; the upper end doubles until it fails, and the bracket is then narrowed to
// PlanSpec::rate_resolution (1%) of the goodput. Per-GPU goodput divides by the GPUs used.
//
// Families searched (DistServe §4; docs/planner.md):
//   colocated    one mixed instance per (TP, PP) and step budget, replicated, under one of two
//                scheduling policies (ColocatedPolicy): chunked prefill, or whole prompts
//                first (the vLLM 0.2 baseline DistServe compared against).
//   alg1         high node affinity: every (TP, PP) per phase is simulated alone (prefill-only
//                against TTFT, decode-only against TPOT); the best few shapes per phase are then
//                combined in the P:D instance ratios their per-phase goodputs suggest, and each
//                combination is simulated jointly (KV transfers, pull admission) for its real,
//                joint-SLO goodput. DistServe replicates 1:1 pairs or uses ⌈R/goodput⌉; this
//                search ranks the ratios themselves.
//   alg2         low node affinity: a prefill and a decode instance segment share each node (TP
//                and intra-node PP within a node, pp_cross stages across nodes), so KV moves
//                over NVLink only; the best pairs by per-phase goodput are simulated jointly.
// Candidates run on a pool of threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/arrivals.h"
#include "bench/metrics.h"
#include "core/status.h"
#include "planner/cost_model.h"
#include "planner/gpu_profile.h"
#include "planner/roofline.h"
#include "planner/simulator.h"

namespace cleave::planner {

// Request lengths to draw from (cycled in order) and how they arrive.
struct PlanWorkload {
  std::string name;
  std::vector<std::pair<int32_t, int32_t>> lengths;  // (prompt, output) tokens
  bench::ArrivalSpec arrivals;                       // rate_rps is set per probe
};

// `spec`: chatbot | code | summarization (bench's synthetic length distributions) or any
// bench workload spec / file (sharegpt:F, jsonl:F, a .jsonl path), token counts estimated.
// Lengths are scaled by length_scale (as `cleave bench --length-scale`) and capped so prompt +
// output <= max_context.
Result<PlanWorkload> LoadPlanWorkload(const std::string& spec, int64_t count, uint64_t seed,
                                      int64_t max_context, double length_scale = 1.0);

// `count` requests at `rate_rps`: arrival times from bench::ArrivalTimes, lengths cycled.
std::vector<SimRequest> MakeRequests(const PlanWorkload& workload, double rate_rps, int64_t count,
                                     uint64_t seed);

enum class PlanKind { kColocated, kDisaggregated };

// How a colocated instance mixes prefill and decode.
//   kChunked      cleave's scheduler as `cleave serve` runs it: decodes first, then prompt
//                 chunks fill the step budget (Sarathi-style); searched with budgets 512, 2048,
//                 16384 (256, 1024 locally).
//   kWholePrompt  vLLM 0.2 (DistServe's baseline): a step that can admit waiting prompts runs
//                 only those, whole, and the running decodes wait for it
//                 (SchedulerConfig::prefill_first); budget max(max_context, 2048) as vLLM's
//                 max_num_batched_tokens default.
enum class ColocatedPolicy { kChunked, kWholePrompt };
std::string_view ColocatedPolicyName(ColocatedPolicy policy);  // "chunked", "whole-prompt"
Result<ColocatedPolicy> ParseColocatedPolicy(std::string_view name);

struct PlanCandidate {
  PlanKind kind = PlanKind::kColocated;
  std::string family;   // "colocated", "alg1", "alg2", "local"
  Parallelism prefill;  // colocated: the instance's parallelism
  Parallelism decode;
  int num_prefill = 1;  // colocated: 1
  int num_decode = 0;
  int pp_cross = 1;  // alg2: stages across nodes (already folded into prefill/decode pp)
  int32_t max_batch_tokens = 2048;  // colocated and prefill instances' step budget
  ColocatedPolicy colocated_policy = ColocatedPolicy::kChunked;  // colocated only
  int threads_prefill = 0;                                       // local: threads per instance
  int threads_decode = 0;

  int num_gpus() const;  // or cores, for local plans
  double goodput_rps = 0;
  double per_gpu = 0;
  bool saturated = false;
  double mean_transfer_s = 0;
  int64_t num_simulations = 0;
  std::string Describe() const;  // "P: 2x TP2 PP1 | D: 1x TP1 PP1"
};

struct PlanSpec {
  // Hardware: a GPU cluster (analytic model) or this machine (fitted profile).
  bool local = false;
  ModelShape shape;
  GpuSpec gpu;
  int nodes = 1;
  int gpus_per_node = 8;
  RooflineAssumptions assumptions;
  // Measured step times per TP degree (cleave plan --gpu-profile); empty: the roofline's. When
  // set, only its TP degrees are searched.
  GpuProfile gpu_profile;
  ProfileFit profile;              // local
  int cores = 2;                   // local
  int64_t kv_capacity_tokens = 0;  // local, per instance
  double local_transfer_bw = 5e9;  // local: shared-memory copy, bytes/s

  PlanWorkload workload;
  bench::Slo slo;  // ttft_ms and tpot_ms
  double attainment = 0.9;
  // Requests per simulated probe: at least num_requests, and three times what the instances'
  // KV caches hold at once (so a probe reaches steady state), at most max_requests.
  int64_t num_requests = 300;
  int64_t max_requests = 4000;
  // Goodput bisection stops when the best passing and lowest failing rates are this close,
  // relative to the passing one.
  double rate_resolution = 0.01;
  uint64_t seed = 0;
  int threads = 0;  // search threads; 0: hardware concurrency
  // alg1/alg2: 2x this many P:D combinations, best by per-phase goodput, are simulated jointly.
  // 2 missed OPT-175B's best pairs on two of three seeds (docs/planner.md); 6 costs ~20% more.
  int top_per_phase = 6;
  // Largest instance considered, as a multiple of the fewest GPUs that hold the model (the
  // per-GPU goodput of a small model only falls with more GPUs per instance).
  int max_instance_scale = 4;
  bool colocated = true, alg1 = true, alg2 = true;
  ColocatedPolicy colocated_policy = ColocatedPolicy::kChunked;
};

struct PlanResult {
  std::vector<PlanCandidate> ranked;  // best per-GPU goodput first
  int64_t num_simulations = 0;
  double search_seconds = 0;
};

Result<PlanResult> SearchPlacements(const PlanSpec& spec);

// Goodput (total requests/s) of one candidate; exposed for tests and `cleave plan --explain`.
Result<PlanCandidate> EvaluateCandidate(const PlanSpec& spec, PlanCandidate candidate);

// What one candidate does at one offered rate: the simulated counterpart of one `cleave bench
// --request-rate` run, for checking the planner against measurements.
struct RatePrediction {
  double rate_rps = 0;
  double attainment = 0;  // joint, per request (bench::Attainment)
  double p50_ttft_s = 0, p90_ttft_s = 0;
  double p50_tpot_s = 0, p90_tpot_s = 0;
  int64_t num_requests = 0;
};

// Simulates `num_requests` requests of spec.workload at each rate (arrivals seeded by spec.seed)
// on the candidate and scores them against spec.slo.
Result<std::vector<RatePrediction>> PredictAtRates(const PlanSpec& spec,
                                                   const PlanCandidate& candidate,
                                                   const std::vector<double>& rates,
                                                   int64_t num_requests);

}  // namespace cleave::planner
