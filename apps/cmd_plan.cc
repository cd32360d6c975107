// `cleave plan`: predicts goodput per GPU (or per core) for placements of a model on a cluster,
// by simulation (src/planner/), and prints them ranked.
//   cleave plan --model opt-13b --hardware a100 --nodes 1 --gpus-per-node 4
//               --workload chatbot --ttft 0.25 --tpot 0.1
//   cleave plan --hardware local --profile fit.json --workload chatbot --ttft 2 --tpot 0.2
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "apps/commands.h"
#include "model/model_path.h"
#include "planner/search.h"

namespace cleave::app {
namespace {

using namespace cleave::planner;

struct PlanOptions {
  std::string model;
  std::string hardware = "a100";
  int nodes = 1;
  int gpus_per_node = 8;
  double inter_node_gbps = 0;  // GB/s; 0: the hardware table's
  std::string workload = "chatbot";
  double ttft_s = 0.25;
  double tpot_s = 0.1;
  double attainment = 0.9;
  std::string profile;
  std::string gpu_profile;
  int cores = 0;
  int64_t kv_cache_tokens = 0;
  int64_t num_requests = 300;
  double burstiness = 1.0;
  uint64_t seed = 0;
  int threads = 0;
  int top = 10;
  int top_per_phase = 6;
  std::string only;  // colocated | alg1 | alg2
  bool json = false;
  double length_scale = 1.0;
  std::vector<double> predict_rates;  // non-empty: predict one placement at these rates
  std::string placement = "colocated";
  int32_t max_batch_tokens = 2048;
  std::string colocated_policy = "chunked";
};

// --placement for --predict-rates on this machine: "colocated" (one mixed instance on every
// core) or "PpDd" (P prefill + D decode instances, the cores split evenly, as cleave serve
// --prefill-workers P --decode-workers D does).
Result<PlanCandidate> LocalPlacement(const PlanOptions& o, int cores) {
  PlanCandidate c;
  c.family = "local";
  c.max_batch_tokens = o.max_batch_tokens;
  CLEAVE_ASSIGN_OR_RETURN(c.colocated_policy, ParseColocatedPolicy(o.colocated_policy));
  if (o.placement == "colocated") {
    c.threads_prefill = cores;
    return c;
  }
  int p = 0, d = 0;
  char pc = 0, dc = 0;
  if (std::sscanf(o.placement.c_str(), "%d%c%d%c", &p, &pc, &d, &dc) != 4 || pc != 'p' ||
      dc != 'd' || p < 1 || d < 1 || p + d > cores) {
    return InvalidArgument("--placement takes colocated or PpDd (e.g. 1p1d) with P + D <= {} cores",
                           cores);
  }
  c.kind = PlanKind::kDisaggregated;
  c.num_prefill = p;
  c.num_decode = d;
  c.threads_prefill = c.threads_decode = cores / (p + d);
  return c;
}

int RunPredict(const PlanOptions& o, const PlanSpec& spec) {
  auto candidate = LocalPlacement(o, spec.cores);
  if (!candidate.ok()) {
    fmt::print(stderr, "error: {}\n", candidate.status().message());
    return 2;
  }
  for (int threads : {candidate->threads_prefill, candidate->threads_decode}) {
    if (threads > 0 && spec.profile.ForThreads(threads) == nullptr) {
      fmt::print(stderr, "error: {} has no fit for {} threads (cleave profile -t {} --fit FILE)\n",
                 o.profile, threads, threads);
      return 1;
    }
  }
  auto predictions = PredictAtRates(spec, *candidate, o.predict_rates, o.num_requests);
  if (!predictions.ok()) {
    fmt::print(stderr, "error: {}\n", predictions.status().message());
    return 1;
  }
  if (o.json) {
    nlohmann::json out = {{"placement", candidate->Describe()},
                          {"workload", o.workload},
                          {"length_scale", o.length_scale},
                          {"ttft_s", o.ttft_s},
                          {"tpot_s", o.tpot_s},
                          {"rates", nlohmann::json::array()}};
    for (const RatePrediction& p : *predictions) {
      out["rates"].push_back({{"rate_rps", p.rate_rps},
                              {"attainment", p.attainment},
                              {"p50_ttft_s", p.p50_ttft_s},
                              {"p90_ttft_s", p.p90_ttft_s},
                              {"p50_tpot_s", p.p50_tpot_s},
                              {"p90_tpot_s", p.p90_tpot_s},
                              {"num_requests", p.num_requests}});
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("predicted: {}; workload {} (x{}); SLO TTFT {} s, TPOT {} s; {} requests per rate\n",
             candidate->Describe(), o.workload, o.length_scale, o.ttft_s, o.tpot_s, o.num_requests);
  fmt::print("| {:>8} | {:>10} | {:>9} | {:>9} | {:>9} | {:>9} |\n", "req/s", "attainment",
             "p50 TTFT", "p90 TTFT", "p50 TPOT", "p90 TPOT");
  fmt::print("|-{:->8}-|-{:->10}-|-{:->9}-|-{:->9}-|-{:->9}-|-{:->9}-|\n", "", "", "", "", "", "");
  for (const RatePrediction& p : *predictions) {
    fmt::print("| {:>8.3f} | {:>9.1f}% | {:>8.3f}s | {:>8.3f}s | {:>7.1f}ms | {:>7.1f}ms |\n",
               p.rate_rps, 100 * p.attainment, p.p50_ttft_s, p.p90_ttft_s, 1e3 * p.p50_tpot_s,
               1e3 * p.p90_tpot_s);
  }
  return 0;
}

std::string ServeCommand(const PlanOptions& o, const PlanCandidate& c, int64_t kv_tokens) {
  std::string model = o.model.empty() ? "" : fmt::format(" -m {}", o.model);
  return fmt::format("cleave serve{} --threads {} --max-batch-tokens {} --kv-cache-tokens {}",
                     model, c.threads_prefill, c.max_batch_tokens, kv_tokens);
}

int RunPlan(const PlanOptions& o) {
  PlanSpec spec;
  spec.local = o.hardware == "local";
  spec.attainment = o.attainment;
  spec.slo.ttft_ms = o.ttft_s * 1e3;
  spec.slo.tpot_ms = o.tpot_s * 1e3;
  spec.num_requests = o.num_requests;
  spec.seed = o.seed;
  spec.threads = o.threads;
  spec.top_per_phase = o.top_per_phase;
  if (auto policy = ParseColocatedPolicy(o.colocated_policy); policy.ok()) {
    spec.colocated_policy = *policy;
  } else {
    fmt::print(stderr, "error: --colocated-policy: {}\n", policy.status().message());
    return 2;
  }
  if (!o.only.empty()) {
    spec.colocated = o.only == "colocated";
    spec.alg1 = o.only == "alg1";
    spec.alg2 = o.only == "alg2";
    if (!spec.colocated && !spec.alg1 && !spec.alg2) {
      fmt::print(stderr, "error: --only takes colocated, alg1 or alg2\n");
      return 2;
    }
  }
  int64_t max_context = 2048;
  if (spec.local) {
    if (!o.gpu_profile.empty()) {
      fmt::print(stderr,
                 "error: --gpu-profile is for GPU hardware; this machine uses --profile FILE\n");
      return 2;
    }
    if (o.profile.empty()) {
      fmt::print(stderr, "error: --hardware local needs --profile FILE (cleave profile --fit)\n");
      return 2;
    }
    auto fit = ProfileFit::Load(o.profile);
    if (!fit.ok()) {
      fmt::print(stderr, "error: {}\n", fit.status().message());
      return 1;
    }
    spec.profile = *fit;
    spec.cores = o.cores > 0 ? o.cores : int(std::max(1u, std::thread::hardware_concurrency()));
    // cleave serve's default KV cache is 1 GiB.
    spec.kv_capacity_tokens =
        o.kv_cache_tokens > 0
            ? o.kv_cache_tokens
            : (int64_t{1} << 30) / std::max<int64_t>(1, spec.profile.kv_bytes_per_token);
    spec.shape.name = spec.profile.model;
  } else {
    std::string model_spec = o.model;
    if (model_spec.empty()) {
      auto path = ResolveModelPath("");
      if (!path.ok()) {
        fmt::print(stderr, "error: --model MODEL.gguf|opt-13b|shape.json is required\n");
        return 2;
      }
      model_spec = *path;
    }
    auto shape = LoadModelShape(model_spec);
    auto gpu = BuiltinGpu(o.hardware);
    if (!shape.ok() || !gpu.ok()) {
      fmt::print(stderr, "error: {}\n", (!shape.ok() ? shape.status() : gpu.status()).message());
      return 1;
    }
    spec.shape = *shape;
    spec.gpu = *gpu;
    if (!o.gpu_profile.empty()) {
      auto profile = LoadGpuProfile(o.gpu_profile, spec.shape.name);
      if (!profile.ok()) {
        fmt::print(stderr, "error: --gpu-profile: {}\n", profile.status().message());
        return 1;
      }
      spec.gpu_profile = *profile;
    }
    if (o.inter_node_gbps > 0) spec.gpu.inter_node_bw = o.inter_node_gbps * 1e9;
    spec.nodes = o.nodes;
    spec.gpus_per_node = o.gpus_per_node;
    max_context = spec.shape.max_context;
  }
  auto workload = LoadPlanWorkload(o.workload, 1000, o.seed, max_context, o.length_scale);
  if (!workload.ok()) {
    fmt::print(stderr, "error: {}\n", workload.status().message());
    return 1;
  }
  spec.workload = *workload;
  spec.workload.arrivals = bench::MakeArrivalSpec(1.0, o.burstiness, false);
  if (!o.predict_rates.empty()) {
    if (!spec.local) {
      fmt::print(stderr, "error: --predict-rates needs --hardware local --profile FILE\n");
      return 2;
    }
    return RunPredict(o, spec);
  }

  auto result = SearchPlacements(spec);
  if (!result.ok()) {
    fmt::print(stderr, "error: {}\n", result.status().message());
    return 1;
  }
  const char* unit = spec.local ? "core" : "GPU";
  const PlanCandidate* serve = nullptr;
  // cleave serve schedules chunked prefill only, so only that policy has a command line.
  if (spec.local && spec.colocated_policy == ColocatedPolicy::kChunked) {
    for (const PlanCandidate& c : result->ranked) {
      if (c.kind == PlanKind::kColocated && c.goodput_rps > 0) {
        serve = &c;
        break;
      }
    }
  }
  if (o.json) {
    nlohmann::json out = {{"model", spec.shape.name},
                          {"hardware", spec.local ? "local" : spec.gpu.name},
                          {"nodes", spec.nodes},
                          {"gpus_per_node", spec.gpus_per_node},
                          {"workload", o.workload},
                          {"ttft_s", o.ttft_s},
                          {"tpot_s", o.tpot_s},
                          {"attainment", o.attainment},
                          {"colocated_policy", ColocatedPolicyName(spec.colocated_policy)},
                          {"search_seconds", result->search_seconds},
                          {"num_simulations", result->num_simulations},
                          {"candidates", nlohmann::json::array()}};
    for (const PlanCandidate& c : result->ranked) {
      out["candidates"].push_back(
          {{"kind", c.kind == PlanKind::kColocated ? "colocated" : "disaggregated"},
           {"family", c.family},
           {"description", c.Describe()},
           {"num_prefill", c.kind == PlanKind::kColocated ? 0 : c.num_prefill},
           {"num_decode", c.num_decode},
           {"prefill_tp", c.prefill.tp},
           {"prefill_pp", c.prefill.pp},
           {"decode_tp", c.decode.tp},
           {"decode_pp", c.decode.pp},
           {"threads_prefill", c.threads_prefill},
           {"threads_decode", c.threads_decode},
           {"max_batch_tokens", c.max_batch_tokens},
           {"colocated_policy", c.kind == PlanKind::kColocated
                                    ? nlohmann::json(ColocatedPolicyName(c.colocated_policy))
                                    : nlohmann::json(nullptr)},
           {spec.local ? "cores" : "gpus", c.num_gpus()},
           {"goodput_rps", c.goodput_rps},
           {spec.local ? "goodput_per_core" : "goodput_per_gpu", c.per_gpu},
           {"saturated", c.saturated},
           {"mean_kv_transfer_s", c.mean_transfer_s}});
    }
    if (serve) out["serve_command"] = ServeCommand(o, *serve, spec.kv_capacity_tokens);
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print(
      "plan: {} on {}; workload {}; SLO TTFT {} s, TPOT {} s at {:.0f}% attainment; colocated "
      "policy {}\n",
      spec.shape.name,
      spec.local ? fmt::format("this machine ({} cores)", spec.cores)
                 : fmt::format("{} x {} {}", spec.nodes, spec.gpus_per_node, spec.gpu.name),
      o.workload, o.ttft_s, o.tpot_s, o.attainment * 100,
      ColocatedPolicyName(spec.colocated_policy));
  fmt::print("| {:>4} | {:>14} | {:>10} | {:>5} | {:<44} |\n", "rank",
             fmt::format("req/s/{}", unit), "req/s", unit == std::string("GPU") ? "GPUs" : "cores",
             "placement");
  fmt::print("|-{:->4}-|-{:->14}-|-{:->10}-|-{:->5}-|-{:-<44}-|\n", "", "", "", "", "");
  int rank = 0;
  for (const PlanCandidate& c : result->ranked) {
    if (++rank > o.top) break;
    fmt::print("| {:>4} | {:>14} | {:>10.3f} | {:>5} | {:<44} |\n", rank,
               fmt::format("{:.3f}{}", c.per_gpu, c.saturated ? "+" : ""), c.goodput_rps,
               c.num_gpus(), fmt::format("[{}] {}", c.family, c.Describe()));
  }
  fmt::print("searched {} simulations in {:.1f} s\n", result->num_simulations,
             result->search_seconds);
  if (serve) {
    fmt::print("best colocated configuration for this machine:\n  {}\n",
               ServeCommand(o, *serve, spec.kv_capacity_tokens));
  } else if (spec.local && spec.colocated_policy != ColocatedPolicy::kChunked) {
    fmt::print("cleave serve runs chunked prefill only: no command line for {} colocation\n",
               ColocatedPolicyName(spec.colocated_policy));
  } else if (!spec.local) {
    fmt::print(
        "no configuration fits this machine: cleave serve runs on CPUs (plan with "
        "--hardware local --profile FILE)\n");
  }
  return 0;
}

}  // namespace

void RegisterPlan(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PlanOptions>();
  auto* cmd = app.add_subcommand(
      "plan", "Predict goodput of colocated and disaggregated placements by simulation");
  cmd->add_option("--model", o->model, "MODEL.gguf, shape.json or opt-13b|opt-66b|opt-175b");
  cmd->add_option("--hardware", o->hardware, "a100 | h100 | h200 | local")->capture_default_str();
  cmd->add_option("--nodes", o->nodes, "Nodes")->check(CLI::Range(1, 1024));
  cmd->add_option("--gpus-per-node", o->gpus_per_node, "GPUs per node")->check(CLI::Range(1, 64));
  cmd->add_option("--inter-node-bw", o->inter_node_gbps,
                  "Inter-node bandwidth per GPU, GB/s (default 25)")
      ->check(CLI::Range(0.001, 1e4));
  cmd->add_option("--workload", o->workload,
                  "chatbot | code | summarization | sharegpt:F | jsonl:F")
      ->capture_default_str();
  cmd->add_option("--ttft", o->ttft_s, "TTFT objective, seconds")->check(CLI::Range(1e-6, 1e6));
  cmd->add_option("--tpot", o->tpot_s, "TPOT objective, seconds")->check(CLI::Range(1e-6, 1e6));
  cmd->add_option("--attainment", o->attainment, "Fraction of requests meeting both")
      ->check(CLI::Range(0.01, 1.0));
  cmd->add_option("--profile", o->profile, "Fitted profile JSON (cleave profile --fit)");
  cmd->add_option("--gpu-profile", o->gpu_profile,
                  "Measured GPU step times per TP degree (DistServe's profile JSON format) instead "
                  "of the roofline's; only those TP degrees are searched");
  cmd->add_option("--cores", o->cores, "Cores to plan for (local; default all)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--kv-cache-tokens", o->kv_cache_tokens, "KV capacity per instance (local)")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 32));
  cmd->add_option("--num-requests", o->num_requests, "Requests per simulated probe")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  cmd->add_option("--burstiness", o->burstiness, "Gamma shape of arrival gaps (1: Poisson)")
      ->check(CLI::Range(0.01, 100.0));
  cmd->add_option("--seed", o->seed, "Workload and arrival seed");
  cmd->add_option("--search-threads", o->threads, "Threads for the search (default all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--top", o->top, "Rows to print")->check(CLI::Range(1, 100000));
  cmd->add_option("--top-per-phase", o->top_per_phase,
                  "alg1/alg2: 2x this many P:D combinations, best by per-phase goodput, are "
                  "simulated jointly")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--only", o->only, "Search one family: colocated | alg1 | alg2");
  cmd->add_option("--colocated-policy", o->colocated_policy,
                  "Colocated scheduling: chunked (cleave serve, Sarathi-style) | whole-prompt "
                  "(vLLM 0.2: whole prompts first, decodes wait; DistServe's baseline)")
      ->check(CLI::IsMember({"chunked", "whole-prompt"}))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON instead of the table");
  cmd->add_option("--length-scale", o->length_scale,
                  "Multiply the workload's lengths (as cleave bench --length-scale)")
      ->check(CLI::Range(1e-3, 1e3));
  cmd->add_option("--predict-rates", o->predict_rates,
                  "Instead of searching: predict --placement at these request rates (local)")
      ->delimiter(',');
  cmd->add_option("--placement", o->placement, "With --predict-rates: colocated | PpDd (e.g. 1p1d)")
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", o->max_batch_tokens,
                  "With --predict-rates: the engines' step budget (cleave serve's default)")
      ->check(CLI::Range(16, 1 << 20))
      ->capture_default_str();
  cmd->callback([o, &exit_code] { exit_code = RunPlan(*o); });
}

}  // namespace cleave::app
