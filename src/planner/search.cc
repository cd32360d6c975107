#include "planner/search.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "bench/workload.h"

namespace cleave::planner {

namespace {

// (input_length, output_length) of each line of a Mooncake-style trace file, scaled.
Result<std::vector<std::pair<int64_t, int64_t>>> ReadTraceLengths(const std::string& path,
                                                                  double length_scale) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read trace file '{}'", path);
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("input_length") || !j.contains("output_length") ||
        !j["input_length"].is_number_integer() || !j["output_length"].is_number_integer()) {
      return InvalidArgument("{}:{}: expected {{\"input_length\": n, \"output_length\": n}}", path,
                             line_no);
    }
    out.emplace_back(bench::ScaleLength(j["input_length"].get<int64_t>(), length_scale),
                     bench::ScaleLength(j["output_length"].get<int64_t>(), length_scale));
  }
  if (out.empty()) return InvalidArgument("trace file '{}' has no requests", path);
  return out;
}

}  // namespace

Result<PlanWorkload> LoadPlanWorkload(const std::string& spec, int64_t count, uint64_t seed,
                                      int64_t max_context, double length_scale) {
  if (!(length_scale > 0)) return InvalidArgument("length scale must be > 0");
  if (count < 1) return InvalidArgument("workload needs at least one request");
  PlanWorkload w;
  w.name = spec;
  std::vector<std::pair<int64_t, int64_t>> raw;
  if (auto app = bench::ParseSyntheticApp(spec); app.ok()) {
    bench::Rng rng(seed);
    for (int64_t i = 0; i < count; ++i) {
      bench::LengthPair p = bench::SampleLengths(*app, rng);
      raw.emplace_back(bench::ScaleLength(p.input_tokens, length_scale),
                       bench::ScaleLength(p.output_tokens, length_scale));
    }
  } else if (spec.starts_with("trace:")) {
    // Only the lengths matter here, so no prompt text is cut from a corpus.
    CLEAVE_ASSIGN_OR_RETURN(raw, ReadTraceLengths(spec.substr(6), length_scale));
  } else {
    std::string source = spec;
    if (spec.find(':') == std::string::npos && spec.ends_with(".jsonl")) source = "jsonl:" + spec;
    bench::WorkloadOptions options;
    options.num_prompts = count;
    options.seed = seed;
    options.length_scale = length_scale;
    bench::CharEstimateCounter counter;
    CLEAVE_ASSIGN_OR_RETURN(auto requests, bench::LoadWorkload(source, options, counter));
    for (const auto& r : requests) raw.emplace_back(r.prompt_tokens, r.output_tokens);
  }
  for (auto [in, out] : raw) {
    in = std::clamp<int64_t>(in, 1, max_context - 1);
    out = std::clamp<int64_t>(out, 1, max_context - in);
    w.lengths.emplace_back(int32_t(in), int32_t(out));
  }
  return w;
}

std::vector<SimRequest> MakeRequests(const PlanWorkload& workload, double rate_rps, int64_t count,
                                     uint64_t seed) {
  bench::ArrivalSpec arrivals = workload.arrivals;
  arrivals.rate_rps = rate_rps;
  std::vector<double> times = bench::ArrivalTimes(arrivals, count, seed);
  std::vector<SimRequest> out;
  out.reserve(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    const auto& [in, len] = workload.lengths[size_t(i) % workload.lengths.size()];
    out.push_back({times[size_t(i)], in, len});
  }
  return out;
}

std::string_view ColocatedPolicyName(ColocatedPolicy policy) {
  return policy == ColocatedPolicy::kChunked ? "chunked" : "whole-prompt";
}

Result<ColocatedPolicy> ParseColocatedPolicy(std::string_view name) {
  if (name == "chunked") return ColocatedPolicy::kChunked;
  if (name == "whole-prompt") return ColocatedPolicy::kWholePrompt;
  return InvalidArgument("colocated policy '{}': expected chunked or whole-prompt", name);
}

int PlanCandidate::num_gpus() const {
  if (family == "local")
    return threads_prefill + (kind == PlanKind::kDisaggregated ? threads_decode : 0);
  if (kind == PlanKind::kColocated) return prefill.num_gpus();
  return num_prefill * prefill.num_gpus() + num_decode * decode.num_gpus();
}

std::string PlanCandidate::Describe() const {
  const std::string policy =
      fmt::format("{} {}", ColocatedPolicyName(colocated_policy), max_batch_tokens);
  if (family == "local") {
    if (kind == PlanKind::kColocated) {
      return fmt::format("colocated {} threads, {}", threads_prefill, policy);
    }
    return fmt::format("P: {} threads | D: {} threads", threads_prefill, threads_decode);
  }
  auto par = [](const Parallelism& p) { return fmt::format("TP{} PP{}", p.tp, p.pp); };
  if (kind == PlanKind::kColocated) return fmt::format("colocated {}, {}", par(prefill), policy);
  return fmt::format("P: {}x {} | D: {}x {}", num_prefill, par(prefill), num_decode, par(decode));
}

namespace {

constexpr int32_t kBlockSize = 16;

// A cluster with the cost models it points to.
struct Built {
  std::vector<std::unique_ptr<CostModel>> costs;
  SimCluster cluster;
  int num_instances = 0;
};

enum class Phase { kJoint, kPrefillOnly, kDecodeOnly };

std::unique_ptr<CostModel> MakeCost(const PlanSpec& spec, const Parallelism& par, int threads) {
  if (spec.local) {
    const ThreadFit* fit = spec.profile.ForThreads(threads);
    CLEAVE_CHECK(fit != nullptr);
    return std::make_unique<FittedCostModel>(*fit, spec.kv_capacity_tokens,
                                             spec.profile.kv_bytes_per_token);
  }
  RooflineCostModel roofline(spec.shape, spec.gpu, par, spec.assumptions);
  if (!spec.gpu_profile.empty()) {
    return std::make_unique<ProfiledGpuCostModel>(spec.gpu_profile.at(par.tp), roofline);
  }
  return std::make_unique<RooflineCostModel>(roofline);
}

Built Build(const PlanSpec& spec, const PlanCandidate& c, Phase phase) {
  Built b;
  auto instance = [&](const Parallelism& par, int threads, SchedulerConfig sched, int node) {
    b.costs.push_back(MakeCost(spec, par, threads));
    ++b.num_instances;
    return SimInstance{b.costs.back().get(), sched, kBlockSize, node, par.num_gpus()};
  };
  const SchedulerConfig front{c.max_batch_tokens, 512, 0};
  const SchedulerConfig back{16384, 1024, 0};
  if (c.kind == PlanKind::kColocated) {
    SchedulerConfig mixed = front;
    mixed.prefill_first = c.colocated_policy == ColocatedPolicy::kWholePrompt;
    b.cluster.colocated.push_back(instance(c.prefill, c.threads_prefill, mixed, 0));
    return b;
  }
  const int gpn = std::max(1, spec.gpus_per_node);
  int gpus_so_far = 0;
  auto node_of = [&](int gpus) {
    const int node = gpus_so_far / gpn;
    gpus_so_far += gpus;
    return node;
  };
  const bool paired = c.family == "alg2";  // each P/D pair shares its nodes
  if (phase != Phase::kDecodeOnly) {
    for (int i = 0; i < c.num_prefill; ++i) {
      const int node = paired ? i : node_of(c.prefill.num_gpus());
      b.cluster.prefill.push_back(instance(c.prefill, c.threads_prefill, front, node));
    }
  }
  if (phase != Phase::kPrefillOnly) {
    for (int i = 0; i < c.num_decode; ++i) {
      const int node = paired ? i : node_of(c.decode.num_gpus());
      b.cluster.decode.push_back(instance(c.decode, c.threads_decode, back, node));
    }
  }
  b.cluster.same_node_bw = spec.local ? spec.local_transfer_bw : spec.gpu.nvlink_bw;
  b.cluster.cross_node_bw = spec.local ? spec.local_transfer_bw : spec.gpu.inter_node_bw;
  return b;
}

struct GoodputOutcome {
  double goodput_rps = 0;
  bool saturated = false;
  int64_t num_simulations = 0;
  double mean_transfer_s = 0;
};

// Bisection on the total request rate; hi doubles while it still passes.
Result<GoodputOutcome> FindClusterGoodput(const PlanSpec& spec, const PlanCandidate& c,
                                          Phase phase) {
  Built built = Build(spec, c, phase);
  bench::Slo slo;
  if (phase != Phase::kDecodeOnly) slo.ttft_ms = spec.slo.ttft_ms;
  if (phase != Phase::kPrefillOnly) slo.tpot_ms = spec.slo.tpot_ms;
  double mean_in = 0, mean_out = 0;
  for (auto [in, out] : spec.workload.lengths) {
    mean_in += in;
    mean_out += out;
  }
  mean_in /= double(spec.workload.lengths.size());
  mean_out /= double(spec.workload.lengths.size());
  // Enough requests to fill every instance's KV cache a few times over: a run shorter than
  // that is one transient burst, and would pass at any rate.
  double seqs_held = 0;
  for (const auto* v : {&built.cluster.colocated, &built.cluster.decode}) {
    for (const SimInstance& s : *v) {
      seqs_held += double(s.cost->kv_capacity_tokens()) / (mean_in + mean_out / 2);
    }
  }
  const int64_t count = std::clamp<int64_t>(
      std::max<int64_t>(spec.num_requests + 60 * (built.num_instances - 1), int64_t(3 * seqs_held)),
      1, spec.max_requests);
  const double slo_s = (slo.ttft_ms.value_or(0) + slo.tpot_ms.value_or(0) * mean_out) / 1e3;

  GoodputOutcome outcome;
  auto attainment_at = [&](double rate) -> Result<double> {
    std::vector<SimRequest> requests = MakeRequests(spec.workload, rate, count, spec.seed);
    SimOptions options;
    options.horizon_s = requests.back().arrival_s + std::max(30.0, 20 * slo_s);
    CLEAVE_ASSIGN_OR_RETURN(SimResult r, Simulate(built.cluster, requests, options));
    ++outcome.num_simulations;
    outcome.mean_transfer_s = r.mean_transfer_s;
    return bench::Attainment(r.records, slo);
  };
  // First guess: what the front instances can prefill, or the decode side's batch throughput.
  double hi;
  if (phase == Phase::kDecodeOnly) {
    const CostModel& d = *built.cluster.decode.front().cost;
    hi = c.num_decode * 64 / (d.DecodeTime(64, int64_t(64 * (mean_in + mean_out / 2))) * mean_out);
  } else {
    const CostModel& p = !built.cluster.colocated.empty() ? *built.cluster.colocated.front().cost
                                                          : *built.cluster.prefill.front().cost;
    const int n = std::max<int>(1, int(built.cluster.prefill.size()));
    hi = n / p.PrefillTime(int64_t(mean_in), mean_in * mean_in);
  }
  double lo = 0;
  double lowest_failing = 0;
  for (int round = 0; round < 8; ++round) {
    CLEAVE_ASSIGN_OR_RETURN(
        auto r, bench::FindGoodput(attainment_at, spec.attainment, lo, hi, (hi - lo) / 16));
    outcome.goodput_rps = r.goodput_rps;
    outcome.saturated = r.saturated;
    for (const bench::GoodputProbe& p : r.probes) {
      if (p.attainment < spec.attainment && (lowest_failing == 0 || p.rate < lowest_failing)) {
        lowest_failing = p.rate;
      }
    }
    if (!r.saturated) break;
    lo = hi;
    hi *= 2;
  }
  // 1/16 of the bracket is coarse when the first guess was far above the goodput: narrow the
  // gap between the best passing and the lowest failing rate to spec.rate_resolution of it.
  double pass = outcome.goodput_rps;
  double fail = lowest_failing;
  while (!outcome.saturated && pass > 0 && fail > pass &&
         fail - pass > spec.rate_resolution * pass) {
    const double mid = 0.5 * (pass + fail);
    CLEAVE_ASSIGN_OR_RETURN(double attainment, attainment_at(mid));
    (attainment >= spec.attainment ? pass : fail) = mid;
  }
  outcome.goodput_rps = pass;
  return outcome;
}

// Runs fn(i) for i in [0, n) on `threads` threads; returns the first error.
Status RunParallel(int64_t n, int threads, const std::function<Status(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  Status first = Status::Ok();
  auto worker = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = s;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  return first;
}

struct PhaseKey {
  int tp, pp;
  bool cross;
  int threads;
  auto operator<=>(const PhaseKey&) const = default;
};

struct PhaseScore {
  double prefill_rps = 0, decode_rps = 0;  // per instance
};

}  // namespace

Result<PlanCandidate> EvaluateCandidate(const PlanSpec& spec, PlanCandidate c) {
  CLEAVE_ASSIGN_OR_RETURN(GoodputOutcome g, FindClusterGoodput(spec, c, Phase::kJoint));
  c.goodput_rps = g.goodput_rps;
  c.saturated = g.saturated;
  c.per_gpu = g.goodput_rps / std::max(1, c.num_gpus());
  c.mean_transfer_s = g.mean_transfer_s;
  c.num_simulations = g.num_simulations;
  return c;
}

Result<std::vector<RatePrediction>> PredictAtRates(const PlanSpec& spec,
                                                   const PlanCandidate& candidate,
                                                   const std::vector<double>& rates,
                                                   int64_t num_requests) {
  if (num_requests < 1) return InvalidArgument("need at least one request per rate");
  Built built = Build(spec, candidate, Phase::kJoint);
  std::vector<RatePrediction> out;
  for (double rate : rates) {
    if (!(rate > 0)) return InvalidArgument("rates must be > 0, got {}", rate);
    std::vector<SimRequest> requests = MakeRequests(spec.workload, rate, num_requests, spec.seed);
    SimOptions options;
    options.horizon_s = requests.back().arrival_s + 3600;
    CLEAVE_ASSIGN_OR_RETURN(SimResult r, Simulate(built.cluster, requests, options));
    RatePrediction p;
    p.rate_rps = rate;
    p.num_requests = num_requests;
    p.attainment = bench::Attainment(r.records, spec.slo);
    std::vector<double> ttft, tpot;
    for (const bench::RequestRecord& rec : r.records) {
      if (!rec.success) continue;
      ttft.push_back(rec.ttft_s);
      if (auto t = bench::Tpot(rec)) tpot.push_back(*t);
    }
    if (!ttft.empty()) {
      p.p50_ttft_s = bench::Percentile(ttft, 50);
      p.p90_ttft_s = bench::Percentile(ttft, 90);
    }
    if (!tpot.empty()) {
      p.p50_tpot_s = bench::Percentile(tpot, 50);
      p.p90_tpot_s = bench::Percentile(tpot, 90);
    }
    out.push_back(p);
  }
  return out;
}

Result<PlanResult> SearchPlacements(const PlanSpec& spec) {
  const auto start = std::chrono::steady_clock::now();
  if (spec.workload.lengths.empty()) return InvalidArgument("empty workload");
  if (!spec.slo.ttft_ms || !spec.slo.tpot_ms) return InvalidArgument("plan needs TTFT and TPOT");
  const int threads =
      spec.threads > 0 ? spec.threads : std::max(1, int(std::thread::hardware_concurrency()));
  std::atomic<int64_t> sims{0};

  // Shapes an instance may take.
  struct Shape {
    Parallelism par;
    int threads = 0;
  };
  std::vector<Shape> shapes;
  std::vector<PlanCandidate> colocated, joint;
  if (spec.local) {
    for (const ThreadFit& f : spec.profile.fits) {
      if (f.threads <= spec.cores) shapes.push_back({{}, f.threads});
    }
    if (shapes.empty()) return InvalidArgument("the profile has no thread count <= --cores");
  } else {
    const int total = spec.nodes * spec.gpus_per_node;
    int min_fit = 0;
    for (int tp = 1; tp <= spec.gpus_per_node; ++tp) {
      if (spec.shape.num_heads % tp != 0) continue;
      if (!spec.gpu_profile.empty() && !spec.gpu_profile.contains(tp)) continue;
      for (int pp = 1; pp * tp <= total; ++pp) {
        if (spec.shape.num_layers % pp != 0) continue;
        Parallelism par{tp, pp, tp * pp > spec.gpus_per_node};
        RooflineCostModel m(spec.shape, spec.gpu, par, spec.assumptions);
        if (!m.fits()) continue;
        if (min_fit == 0 || tp * pp < min_fit) min_fit = tp * pp;
        shapes.push_back({par, 0});
      }
    }
    if (shapes.empty()) {
      std::string tps;
      for (const auto& [tp, unused] : spec.gpu_profile) tps += fmt::format(" {}", tp);
      return InvalidArgument("{} does not fit on {} x {} {} GPUs{}", spec.shape.name, spec.nodes,
                             spec.gpus_per_node, spec.gpu.name,
                             tps.empty() ? "" : " at the GPU profile's TP degrees (" + tps + " )");
    }
    const int cap = std::max(spec.max_instance_scale * min_fit, 1);
    std::erase_if(shapes, [&](const Shape& s) { return s.par.num_gpus() > cap; });
  }

  // Colocated: every shape with each step budget of the policy.
  if (spec.colocated) {
    std::vector<int32_t> budgets;
    if (spec.colocated_policy == ColocatedPolicy::kWholePrompt) {
      const int64_t max_prompt =
          std::max_element(spec.workload.lengths.begin(), spec.workload.lengths.end())->first;
      budgets = {int32_t(std::max<int64_t>({2048, spec.shape.max_context, max_prompt}))};
    } else if (spec.local) {
      budgets = {256, 1024};
    } else {
      budgets = {512, 2048, 16384};
    }
    for (const Shape& s : shapes) {
      for (int32_t budget : budgets) {
        PlanCandidate c;
        c.family = spec.local ? "local" : "colocated";
        c.prefill = s.par;
        c.threads_prefill = s.threads;
        c.max_batch_tokens = budget;
        c.colocated_policy = spec.colocated_policy;
        colocated.push_back(c);
      }
    }
  }

  // Per-phase goodput of single instances (Algorithm 1's inner loop; also ranks alg2 pairs).
  std::map<PhaseKey, PhaseScore> phase;
  std::vector<Shape> alg2_segments;  // alg2 instance shapes (pp includes pp_cross)
  if (!spec.local) {
    if (spec.alg1) {
      for (const Shape& s : shapes) phase[{s.par.tp, s.par.pp, s.par.pp_cross_node, 0}] = {};
    }
    if (spec.alg2) {
      for (int cross = 1; cross <= spec.nodes; ++cross) {
        for (const Shape& s : shapes) {
          if (s.par.pp % cross != 0 || s.par.tp * (s.par.pp / cross) > spec.gpus_per_node) continue;
          if (cross == 1 && s.par.pp_cross_node) continue;
          Parallelism par{s.par.tp, s.par.pp, cross > 1};
          RooflineCostModel m(spec.shape, spec.gpu, par, spec.assumptions);
          if (!m.fits()) continue;
          alg2_segments.push_back({par, cross});  // threads field carries pp_cross here
          phase[{par.tp, par.pp, par.pp_cross_node, 0}] = {};
        }
      }
    }
  }
  std::vector<PhaseKey> phase_keys;
  for (auto& [k, v] : phase) phase_keys.push_back(k);
  const int64_t num_first = int64_t(colocated.size()) + 2 * int64_t(phase_keys.size());
  CLEAVE_RETURN_IF_ERROR(RunParallel(num_first, threads, [&](int64_t i) -> Status {
    if (i < int64_t(colocated.size())) {
      CLEAVE_ASSIGN_OR_RETURN(colocated[i], EvaluateCandidate(spec, colocated[i]));
      sims += colocated[i].num_simulations;
      return Status::Ok();
    }
    i -= int64_t(colocated.size());
    const PhaseKey& k = phase_keys[size_t(i / 2)];
    const bool is_prefill = i % 2 == 0;
    PlanCandidate c;
    c.kind = PlanKind::kDisaggregated;
    c.family = "alg1";
    c.prefill = c.decode = Parallelism{k.tp, k.pp, k.cross};
    c.num_prefill = c.num_decode = 1;
    CLEAVE_ASSIGN_OR_RETURN(
        GoodputOutcome g,
        FindClusterGoodput(spec, c, is_prefill ? Phase::kPrefillOnly : Phase::kDecodeOnly));
    sims += g.num_simulations;
    (is_prefill ? phase[k].prefill_rps : phase[k].decode_rps) = g.goodput_rps;
    return Status::Ok();
  }));

  for (auto& [k, v] : phase) {
    spdlog::debug("phase TP{} PP{}{}: prefill {:.2f} req/s, decode {:.2f} req/s", k.tp, k.pp,
                  k.cross ? " (cross-node)" : "", v.prefill_rps, v.decode_rps);
  }
  const int total_gpus = spec.local ? spec.cores : spec.nodes * spec.gpus_per_node;
  if (spec.local) {
    // 1P + 1D with every split of the cores the profile covers.
    for (const Shape& p : shapes) {
      for (const Shape& d : shapes) {
        if (p.threads + d.threads > spec.cores) continue;
        PlanCandidate c;
        c.kind = PlanKind::kDisaggregated;
        c.family = "local";
        c.threads_prefill = p.threads;
        c.threads_decode = d.threads;
        c.max_batch_tokens = 1024;
        joint.push_back(c);
      }
    }
  } else {
    // Algorithm 1: per-phase goodputs suggest, for every pair of shapes, the P:D ratios
    // (coprime n:m, n, m <= 4) that balance them; the best estimates are simulated jointly.
    if (spec.alg1) {
      std::vector<std::pair<double, PlanCandidate>> combos;
      for (const Shape& ps : shapes) {
        for (const Shape& ds : shapes) {
          const PhaseKey p{ps.par.tp, ps.par.pp, ps.par.pp_cross_node, 0};
          const PhaseKey d{ds.par.tp, ds.par.pp, ds.par.pp_cross_node, 0};
          const double gp = phase[p].prefill_rps, gd = phase[d].decode_rps;
          if (gp <= 0 || gd <= 0) continue;
          for (int n = 1; n <= 4; ++n) {
            for (int m = 1; m <= 4; ++m) {
              if (std::gcd(n, m) != 1) continue;
              const int gpus = n * ps.par.num_gpus() + m * ds.par.num_gpus();
              if (gpus > total_gpus) continue;
              PlanCandidate c;
              c.kind = PlanKind::kDisaggregated;
              c.family = "alg1";
              c.prefill = ps.par;
              c.decode = ds.par;
              c.num_prefill = n;
              c.num_decode = m;
              combos.push_back({std::min(n * gp, m * gd) / gpus, c});
            }
          }
        }
      }
      std::stable_sort(combos.begin(), combos.end(),
                       [](auto& a, auto& b) { return a.first > b.first; });
      for (size_t i = 0; i < std::min<size_t>(2 * spec.top_per_phase, combos.size()); ++i) {
        joint.push_back(combos[i].second);
      }
    }
    // Algorithm 2: P and D segments side by side on each node, KV over NVLink.
    if (spec.alg2) {
      std::vector<std::pair<double, PlanCandidate>> pairs;
      for (const Shape& p : alg2_segments) {
        for (const Shape& d : alg2_segments) {
          const int cross = p.threads;
          if (d.threads != cross) continue;
          const int seg = p.par.num_gpus() / cross + d.par.num_gpus() / cross;
          if (seg > spec.gpus_per_node) continue;
          const double gp = phase[{p.par.tp, p.par.pp, p.par.pp_cross_node, 0}].prefill_rps;
          const double gd = phase[{d.par.tp, d.par.pp, d.par.pp_cross_node, 0}].decode_rps;
          if (gp <= 0 || gd <= 0) continue;
          PlanCandidate c;
          c.kind = PlanKind::kDisaggregated;
          c.family = "alg2";
          c.prefill = p.par;
          c.decode = d.par;
          c.pp_cross = cross;
          // As many pairs as the nodes hold.
          c.num_prefill = c.num_decode =
              std::max(1, spec.nodes / cross) * std::max(1, spec.gpus_per_node / seg);
          c.num_prefill = c.num_decode = std::min(c.num_prefill, 2);
          pairs.push_back({std::min(gp, gd) / (p.par.num_gpus() + d.par.num_gpus()), c});
        }
      }
      std::sort(pairs.begin(), pairs.end(), [](auto& a, auto& b) { return a.first > b.first; });
      for (size_t i = 0; i < std::min<size_t>(2 * spec.top_per_phase, pairs.size()); ++i) {
        joint.push_back(pairs[i].second);
      }
    }
  }
  CLEAVE_RETURN_IF_ERROR(RunParallel(int64_t(joint.size()), threads, [&](int64_t i) -> Status {
    CLEAVE_ASSIGN_OR_RETURN(joint[i], EvaluateCandidate(spec, joint[i]));
    sims += joint[i].num_simulations;
    return Status::Ok();
  }));

  PlanResult result;
  for (auto* v : {&colocated, &joint}) {
    result.ranked.insert(result.ranked.end(), v->begin(), v->end());
  }
  std::stable_sort(result.ranked.begin(), result.ranked.end(), [](const auto& a, const auto& b) {
    if (a.per_gpu != b.per_gpu) return a.per_gpu > b.per_gpu;
    return a.num_gpus() < b.num_gpus();
  });
  result.num_simulations = sims;
  result.search_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace cleave::planner
