// `cleave bench`: measure latency, SLO attainment and goodput of any OpenAI-compatible server.
//
//   cleave bench --base-url http://127.0.0.1:8000 --workload chatbot --rates 1,2,4
//       --ttft-slo-ms 250 --tpot-slo-ms 100 --find-goodput --result-dir out/
//
// Runs the workload at each rate (open loop), prints vLLM's summary table per run, writes
// JSON (vLLM's keys) and per-request JSONL per run, a summary.json with the sweep, the goodput
// search and the SLO-scale table, and PNG plots through scripts/plot_bench.py.
// docs/benchmarking.md defines every number.
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <thread>

#include "apps/commands.h"
#include "bench/client.h"
#include "bench/metrics.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "bench/workload.h"

namespace cleave::app {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace cleave::bench;

struct BenchOptions {
  std::string base_url = "http://127.0.0.1:8000";
  std::string model;
  std::string endpoint = "/v1/completions";
  std::string workload = "chatbot";
  std::string corpus;
  int64_t num_prompts = 100;
  std::string request_rate;  // number or "inf"; empty = not given
  std::string rates;         // "1,2,4"
  double burstiness = 1.0;
  bool fixed_interval = false;
  int64_t max_concurrency = 0;
  int64_t num_warmups = 1;
  uint64_t seed = 0;
  double ttft_slo_ms = 0, tpot_slo_ms = 0, e2el_slo_ms = 0;
  double attainment = 0.9;
  bool find_goodput = false;
  double goodput_min_rate = 0, goodput_max_rate = 0, goodput_resolution = 0;
  int64_t goodput_requests = 0;
  std::string slo_scales = "0.5,0.75,1,1.5,2";
  std::string percentiles = "90,99";
  std::string result_dir;
  bool no_plot = false;
  std::string api_key;
  double num_cores = 0;
  double timeout_s = 120;
  double max_duration_s = 0;
  double ready_timeout_s = 30;
  double length_scale = 1.0;
  int64_t output_len = 0;
  bool no_ignore_eos = false;
  bool no_tokenize = false;
  bool no_progress = false;
  std::string extra_body;
};

Result<std::vector<double>> ParseList(const std::string& text, const char* flag) {
  std::vector<double> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) {
      if (item == "inf") {
        out.push_back(std::numeric_limits<double>::infinity());
      } else {
        char* end = nullptr;
        double v = std::strtod(item.c_str(), &end);
        if (end == item.c_str() || *end != '\0' || !(v > 0)) {
          return InvalidArgument("{}: '{}' is not a positive number", flag, item);
        }
        out.push_back(v);
      }
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

fs::path ExecutableDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

// A file shipped in the checkout, found from the binary (build dirs live in the checkout) or
// from the working directory.
std::string FindShipped(const std::string& relative) {
  fs::path exe_dir = ExecutableDir();
  for (const fs::path& base :
       {exe_dir / "..", exe_dir / ".." / "..", exe_dir, fs::current_path()}) {
    std::error_code ec;
    fs::path p = base / relative;
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  return "";
}

std::string RateLabel(double rate) {
  return std::isinf(rate) ? "inf" : fmt::format("{:.4g}", rate);
}

Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) return Unavailable("cannot write {}", path.string());
  return Status::Ok();
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

void Plot(const fs::path& result_dir) {
  std::string script = FindShipped("scripts/plot_bench.py");
  if (script.empty()) {
    fmt::print(stderr, "warning: scripts/plot_bench.py not found; no plots\n");
    return;
  }
  fs::path checkout = fs::path(script).parent_path().parent_path();
  std::string python = "python3";
  std::error_code ec;
  if (fs::exists(checkout / ".venv" / "bin" / "python", ec)) {
    python = (checkout / ".venv" / "bin" / "python").string();
  }
  std::string cmd = fmt::format("{} {} {}", ShellQuote(python), ShellQuote(script),
                                ShellQuote(result_dir.string()));
  int rc = std::system(cmd.c_str());
  if (rc != 0) {
    fmt::print(stderr, "warning: plotting skipped or failed ({} exited with {})\n", script, rc);
  }
}

int RunBench(const BenchOptions& o) {
  auto fail = [](const Status& s) {
    fmt::print(stderr, "error: {}\n", s.message());
    return 1;
  };
  // --- Configuration.
  ClientConfig client;
  client.base_url = o.base_url;
  client.endpoint = o.endpoint;
  client.api_key = o.api_key;
  if (client.api_key.empty()) {
    if (const char* env = std::getenv("OPENAI_API_KEY")) client.api_key = env;
  }
  client.timeout_s = o.timeout_s;
  client.ignore_eos = !o.no_ignore_eos;
  client.extra_body = o.extra_body;
  if (Status s = ValidateClientConfig(client); !s.ok()) return fail(s);

  Slo slo;
  if (o.ttft_slo_ms > 0) slo.ttft_ms = o.ttft_slo_ms;
  if (o.tpot_slo_ms > 0) slo.tpot_ms = o.tpot_slo_ms;
  if (o.e2el_slo_ms > 0) slo.e2el_ms = o.e2el_slo_ms;
  auto percentiles = ParseList(o.percentiles, "--percentiles");
  if (!percentiles.ok()) return fail(percentiles.status());
  for (double p : *percentiles) {
    if (p > 100) return fail(InvalidArgument("--percentiles: {} is above 100", p));
  }
  auto scales = ParseList(o.slo_scales, "--slo-scales");
  if (!scales.ok()) return fail(scales.status());

  std::vector<double> rates;
  if (!o.rates.empty()) {
    auto r = ParseList(o.rates, "--rates");
    if (!r.ok()) return fail(r.status());
    rates = *r;
  } else if (!o.request_rate.empty()) {
    auto r = ParseList(o.request_rate, "--request-rate");
    if (!r.ok()) return fail(r.status());
    if (r->size() != 1)
      return fail(InvalidArgument("--request-rate takes one number; use --rates"));
    rates = *r;
  }
  double goodput_hi = o.goodput_max_rate;
  if (o.find_goodput) {
    if (slo.empty()) {
      return fail(
          InvalidArgument("--find-goodput needs an objective: --ttft-slo-ms and/or --tpot-slo-ms"));
    }
    for (double r : rates) {
      if (std::isfinite(r)) goodput_hi = std::max(goodput_hi, r);
    }
    if (!(goodput_hi > o.goodput_min_rate)) {
      return fail(
          InvalidArgument("--find-goodput needs an upper rate: --goodput-max-rate R (or --rates)"));
    }
  }
  const int64_t probe_requests = o.goodput_requests > 0 ? o.goodput_requests : o.num_prompts;

  // --- Server: ready, model name, tokenizer.
  Status ready = CheckReady(client);
  for (double waited = 0; !ready.ok() && waited < o.ready_timeout_s; waited += 0.5) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ready = CheckReady(client);
  }
  if (!ready.ok()) return fail(ready);
  client.model = o.model;
  if (client.model.empty()) {
    auto model = FetchFirstModel(client);
    if (!model.ok()) return fail(model.status().WithContext("no --model given"));
    client.model = *model;
  }
  std::unique_ptr<TokenCounter> counter;
  if (!o.no_tokenize) {
    auto http_counter = HttpTokenCounter::Probe(client);
    if (http_counter.ok()) {
      counter = std::move(*http_counter);
    } else {
      fmt::print(stderr, "note: {}; counting ~4 characters per token instead\n",
                 http_counter.status().message());
    }
  }
  if (!counter) counter = std::make_unique<CharEstimateCounter>();

  // --- Workload.
  WorkloadOptions wo;
  wo.num_prompts = std::max(o.num_prompts, o.find_goodput ? probe_requests : 0);
  wo.seed = o.seed;
  wo.length_scale = o.length_scale;
  wo.output_len_override = o.output_len;
  wo.corpus_path = !o.corpus.empty() ? o.corpus : FindShipped("benchmarks/workloads/corpus.txt");
  if (const char* env = std::getenv("CLEAVE_BENCH_CORPUS"); env && o.corpus.empty()) {
    wo.corpus_path = env;
  }
  auto workload = LoadWorkload(o.workload, wo, *counter);
  if (!workload.ok()) return fail(workload.status());
  const bool replay =
      rates.empty() && !o.find_goodput && !workload->empty() && workload->front().timestamp_s >= 0;
  if (rates.empty() && !o.find_goodput) rates.push_back(std::numeric_limits<double>::infinity());
  {
    double in = 0, out = 0;
    for (const auto& r : *workload) {
      in += static_cast<double>(r.prompt_tokens);
      out += static_cast<double>(r.output_tokens);
    }
    const double n = static_cast<double>(workload->size());
    fmt::print(
        "Workload {}: {} requests, mean input {:.1f} tokens ({}), mean output {:.1f} "
        "tokens\n",
        o.workload, workload->size(), in / n, counter->name(), out / n);
  }

  // --- Output directory.
  fs::path result_dir = o.result_dir;
  if (result_dir.empty()) {
    std::time_t now = std::time(nullptr);
    result_dir = fs::path("bench-results") / fmt::format("{:%Y%m%d-%H%M%S}", fmt::localtime(now));
  }
  std::error_code ec;
  fs::create_directories(result_dir, ec);
  if (ec) return fail(Unavailable("cannot create {}: {}", result_dir.string(), ec.message()));

  RunMeta meta;
  meta.model = client.model;
  meta.endpoint = client.endpoint;
  meta.base_url = client.base_url;
  meta.workload = o.workload;
  meta.token_counter = counter->name();
  meta.burstiness = o.burstiness;
  meta.seed = o.seed;
  meta.slo = slo;
  meta.percentiles = *percentiles;

  RunOptions ro;
  ro.client = client;
  ro.burstiness = o.burstiness;
  ro.fixed_interval = o.fixed_interval;
  ro.replay_timestamps = replay;
  ro.max_concurrency = o.max_concurrency;
  ro.num_warmups = o.num_warmups;
  ro.max_duration_s = o.max_duration_s;
  ro.seed = o.seed;
  ro.progress = !o.no_progress;
  ro.slo = slo;

  std::vector<std::unique_ptr<RunResult>> runs;
  std::vector<json> run_json;
  // Runs one rate on the first `count` requests, reports it, and returns its attainment.
  auto run_one = [&](double rate, int64_t count, const char* kind) -> Result<double> {
    std::vector<WorkloadRequest> part(
        workload->begin(), workload->begin() + std::min<int64_t>(count, workload->size()));
    if (ro.replay_timestamps) {
      fmt::print("\n{} at the trace's timestamps ({} requests)\n", kind, part.size());
    } else {
      fmt::print("\n{} at {} req/s ({} requests)\n", kind, RateLabel(rate), part.size());
    }
    CLEAVE_ASSIGN_OR_RETURN(RunResult run, RunBenchmark(ro, part, rate));
    BenchmarkMetrics m = ComputeMetrics(run.records, run.duration_s, slo, *percentiles);
    fmt::print("{}", FormatSummary(run, m, meta));
    json j = RunToJson(run, m, meta);
    j["kind"] = kind;
    std::string stem = fmt::format("run{:02d}-rate{}", runs.size() + 1, RateLabel(run.rate_rps));
    CLEAVE_RETURN_IF_ERROR(WriteText(result_dir / (stem + ".json"), j.dump(2) + "\n"));
    CLEAVE_RETURN_IF_ERROR(
        WriteText(result_dir / (stem + ".jsonl"), RecordsToJsonl(run.records, slo)));
    // The summary keeps the scalar fields only.
    json scalars = json::object();
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it->is_array()) scalars[it.key()] = it.value();
    }
    scalars["file"] = stem + ".json";
    scalars["requests_file"] = stem + ".jsonl";
    run_json.push_back(scalars);
    double attainment = m.slo_attainment;
    runs.push_back(std::make_unique<RunResult>(std::move(run)));
    return attainment;
  };

  for (double rate : rates) {
    auto r = run_one(rate, o.num_prompts, replay ? "trace replay" : "rate run");
    if (!r.ok()) return fail(r.status());
  }
  json summary;
  json goodput = nullptr;
  if (o.find_goodput) {
    const double resolution =
        o.goodput_resolution > 0 ? o.goodput_resolution : (goodput_hi - o.goodput_min_rate) / 20;
    fmt::print(
        "\nGoodput search: highest rate with >= {:.0f}% of requests meeting the SLO, "
        "bisection on [{:g}, {:g}] req/s to {:.3g} req/s, {} requests per probe\n",
        100 * o.attainment, o.goodput_min_rate, goodput_hi, resolution, probe_requests);
    auto probe = [&](double rate) { return run_one(rate, probe_requests, "goodput probe"); };
    auto found = FindGoodput(probe, o.attainment, o.goodput_min_rate, goodput_hi, resolution);
    if (!found.ok()) return fail(found.status());
    goodput = {{"goodput_rps", found->goodput_rps},
               {"saturated", found->saturated},
               {"target_attainment", o.attainment},
               {"min_rate", o.goodput_min_rate},
               {"max_rate", goodput_hi},
               {"resolution", resolution},
               {"requests_per_probe", probe_requests}};
    json probes = json::array();
    for (const GoodputProbe& p : found->probes) {
      probes.push_back({{"rate", p.rate}, {"attainment", p.attainment}});
    }
    goodput["probes"] = probes;
    if (o.num_cores > 0) goodput["goodput_per_core"] = found->goodput_rps / o.num_cores;
  }

  std::vector<const RunResult*> run_ptrs;
  for (const auto& r : runs) run_ptrs.push_back(r.get());
  summary["model_id"] = client.model;
  summary["base_url"] = client.base_url;
  summary["endpoint"] = client.endpoint;
  summary["workload"] = o.workload;
  summary["token_counter"] = counter->name();
  summary["seed"] = o.seed;
  summary["burstiness"] = o.burstiness;
  summary["num_cores"] = o.num_cores > 0 ? json(o.num_cores) : json(nullptr);
  json slo_json = json::object();
  if (slo.ttft_ms) slo_json["ttft"] = *slo.ttft_ms;
  if (slo.tpot_ms) slo_json["tpot"] = *slo.tpot_ms;
  if (slo.e2el_ms) slo_json["e2el"] = *slo.e2el_ms;
  summary["slo"] = slo_json;
  summary["target_attainment"] = o.attainment;
  summary["runs"] = run_json;
  summary["goodput"] = goodput;
  summary["slo_scales"] = slo.empty() ? json::array() : SloScaleTable(run_ptrs, slo, *scales);
  if (Status s = WriteText(result_dir / "summary.json", summary.dump(2) + "\n"); !s.ok()) {
    return fail(s);
  }

  // --- Console summary of the whole invocation.
  if (run_json.size() > 1) fmt::print("\n{}", FormatSweepTable(run_json, meta));
  if (!goodput.is_null()) {
    fmt::print("\nGoodput: {:.3f} req/s{} at >= {:.0f}% SLO attainment",
               goodput["goodput_rps"].get<double>(),
               goodput["saturated"].get<bool>() ? " (or more: the highest rate probed passed)" : "",
               100 * o.attainment);
    if (o.num_cores > 0) {
      fmt::print(", {:.4f} req/s per core", goodput["goodput_per_core"].get<double>());
    }
    fmt::print("\n");
  }
  if (!slo.empty() && !scales->empty()) {
    fmt::print("\nSLO scale sweep (attainment per run):\n");
    for (const json& row : summary["slo_scales"]) {
      std::string cells;
      for (const json& r : row["runs"]) {
        cells += fmt::format("  {:>6.1f}%", 100 * r["attainment"].get<double>());
      }
      fmt::print("  x{:<5g}{}\n", row["scale"].get<double>(), cells);
    }
  }
  fmt::print("\nResults in {}\n", result_dir.string());
  std::fflush(stdout);  // before the plot script writes to the same terminal
  if (!o.no_plot) Plot(result_dir);

  int64_t completed = 0;
  for (const json& r : run_json) completed += r["completed"].get<int64_t>();
  if (completed == 0) {
    fmt::print(stderr, "error: no request completed\n");
    return 3;
  }
  return 0;
}

}  // namespace

void RegisterBench(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "bench", "Measure latency, SLO attainment and goodput of an OpenAI-compatible server");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("--base-url", o->base_url, "Server URL")->capture_default_str();
  cmd->add_option("--model", o->model, "Model name (default: first of GET /v1/models)");
  cmd->add_option("--endpoint", o->endpoint, "/v1/completions or /v1/chat/completions")
      ->capture_default_str();
  cmd->add_option("--workload", o->workload,
                  "chatbot | code | summarization | sharegpt:FILE | jsonl:FILE | trace:FILE")
      ->capture_default_str();
  cmd->add_option("--corpus", o->corpus,
                  "Text for synthetic prompts (default: benchmarks/workloads/corpus.txt)");
  cmd->add_option("-n,--num-prompts", o->num_prompts, "Requests per run")
      ->check(CLI::Range(int64_t{1}, int64_t{10'000'000}))
      ->capture_default_str();
  cmd->add_option("--request-rate", o->request_rate, "Requests per second, or inf (default inf)");
  cmd->add_option("--rates", o->rates, "Comma-separated rates to sweep, e.g. 1,2,4");
  cmd->add_option("--burstiness", o->burstiness, "Gamma shape of inter-arrival gaps; 1 = Poisson")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--fixed-interval", o->fixed_interval, "Constant gaps of 1/rate");
  cmd->add_option("--max-concurrency", o->max_concurrency, "Cap on requests in flight; 0 = none")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--num-warmups", o->num_warmups, "Unmeasured requests sent first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for arrivals and workload sampling")
      ->capture_default_str();
  cmd->add_option("--ttft-slo-ms", o->ttft_slo_ms, "TTFT objective (ms)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--tpot-slo-ms", o->tpot_slo_ms, "TPOT objective (ms)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--e2el-slo-ms", o->e2el_slo_ms, "End-to-end latency objective (ms)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--attainment", o->attainment, "Target fraction of requests meeting the SLO")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  cmd->add_flag("--find-goodput", o->find_goodput, "Bisect on rate for the highest passing rate");
  cmd->add_option("--goodput-min-rate", o->goodput_min_rate, "Lower end of the search")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--goodput-max-rate", o->goodput_max_rate,
                  "Upper end of the search (default: highest of --rates)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--goodput-resolution", o->goodput_resolution,
                  "Stop when the bracket is this narrow, req/s (default: range / 20)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--goodput-requests", o->goodput_requests,
                  "Requests per probe (default: --num-prompts)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--slo-scales", o->slo_scales, "SLO multipliers for the scale sweep")
      ->capture_default_str();
  cmd->add_option("--percentiles", o->percentiles, "Percentiles to report")->capture_default_str();
  cmd->add_option("--result-dir", o->result_dir, "Output directory (default: bench-results/DATE)");
  cmd->add_flag("--no-plot", o->no_plot, "Do not draw PNG plots");
  cmd->add_option("--api-key", o->api_key, "Bearer token (default: $OPENAI_API_KEY)");
  cmd->add_option("--num-cores", o->num_cores,
                  "Cores (or GPUs) the server uses: adds goodput per core")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--timeout", o->timeout_s, "Per-request timeout, seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-duration", o->max_duration_s,
                  "Stop sending after this many seconds per run and cancel what is in flight")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--ready-timeout", o->ready_timeout_s, "Wait this long for the server to answer")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--length-scale", o->length_scale,
                  "Multiply synthetic/trace prompt and output lengths (for small setups)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--output-len", o->output_len, "Ask every request for exactly this many tokens")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-ignore-eos", o->no_ignore_eos, "Let the model stop early");
  cmd->add_flag("--no-tokenize", o->no_tokenize, "Estimate token counts instead of /tokenize");
  cmd->add_flag("--no-progress", o->no_progress, "No live progress line");
  cmd->add_option("--extra-body", o->extra_body, "JSON object merged into every request");
  cmd->callback([o, &exit_code] { exit_code = RunBench(*o); });
}

}  // namespace cleave::app
