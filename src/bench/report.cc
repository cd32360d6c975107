#include "bench/report.h"

#include <fmt/format.h>

#include <cmath>

namespace cleave::bench {
namespace {

using nlohmann::json;

std::string SloText(const Slo& slo) {
  std::vector<std::string> parts;
  if (slo.ttft_ms) parts.push_back(fmt::format("TTFT<={:g}ms", *slo.ttft_ms));
  if (slo.tpot_ms) parts.push_back(fmt::format("TPOT<={:g}ms", *slo.tpot_ms));
  if (slo.e2el_ms) parts.push_back(fmt::format("E2EL<={:g}ms", *slo.e2el_ms));
  return fmt::format("{}", fmt::join(parts, " & "));
}

json SloJson(const Slo& slo) {
  json j = json::object();
  if (slo.ttft_ms) j["ttft"] = *slo.ttft_ms;
  if (slo.tpot_ms) j["tpot"] = *slo.tpot_ms;
  if (slo.e2el_ms) j["e2el"] = *slo.e2el_ms;
  return j;
}

void AddStats(json& j, const char* name, const LatencyStats& s) {
  j[fmt::format("mean_{}_ms", name)] = s.mean_ms;
  j[fmt::format("median_{}_ms", name)] = s.median_ms;
  j[fmt::format("std_{}_ms", name)] = s.std_ms;
  for (const auto& [p, v] : s.percentiles_ms) {
    j[fmt::format("{}_{}_ms", PercentileKey(p), name)] = v;
  }
}

}  // namespace

std::string PercentileKey(double p) {
  return p == std::floor(p) ? fmt::format("p{}", static_cast<int64_t>(p)) : fmt::format("p{:g}", p);
}

json RunToJson(const RunResult& run, const BenchmarkMetrics& m, const RunMeta& meta) {
  json j;
  j["backend"] = meta.endpoint.find("chat") != std::string::npos ? "openai-chat" : "openai";
  j["model_id"] = meta.model;
  j["base_url"] = meta.base_url;
  j["endpoint"] = meta.endpoint;
  j["workload"] = meta.workload;
  j["token_counter"] = meta.token_counter;
  j["num_prompts"] = run.records.size();
  j["request_rate"] = std::isinf(run.rate_rps) ? json("inf") : json(run.rate_rps);
  j["arrivals"] = run.arrivals;
  j["burstiness"] = meta.burstiness;
  j["max_concurrency"] = run.max_concurrency > 0 ? json(run.max_concurrency) : json(nullptr);
  j["seed"] = meta.seed;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["not_sent"] = run.not_sent;
  j["total_input_tokens"] = m.total_input_tokens;
  j["total_output_tokens"] = m.total_output_tokens;
  j["request_throughput"] = m.request_throughput;
  j["request_goodput"] = meta.slo.empty() ? json(nullptr) : json(m.request_goodput);
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  j["slo"] = SloJson(meta.slo);
  j["slo_attainment"] = meta.slo.empty() ? json(nullptr) : json(m.slo_attainment);
  AddStats(j, "ttft", m.ttft);
  AddStats(j, "tpot", m.tpot);
  AddStats(j, "itl", m.itl);
  AddStats(j, "e2el", m.e2el);
  // Per-request arrays, in seconds like vLLM's.
  json input_lens = json::array(), output_lens = json::array(), ttfts = json::array(),
       itls = json::array(), latencies = json::array(), start_times = json::array(),
       errors = json::array();
  for (const RequestRecord& r : run.records) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttfts.push_back(r.success ? r.ttft_s : 0.0);
    itls.push_back(InterTokenLatencies(r));
    latencies.push_back(r.latency_s);
    start_times.push_back(r.send_time_s);
    errors.push_back(r.error);
  }
  j["input_lens"] = input_lens;
  j["output_lens"] = output_lens;
  j["ttfts"] = ttfts;
  j["itls"] = itls;
  j["latencies"] = latencies;
  j["start_times"] = start_times;
  j["errors"] = errors;
  return j;
}

std::string RecordsToJsonl(const std::vector<RequestRecord>& records, const Slo& slo) {
  std::string out;
  for (const RequestRecord& r : records) {
    json j;
    j["index"] = r.index;
    j["success"] = r.success;
    j["error"] = r.error;
    j["http_status"] = r.http_status;
    j["send_time_s"] = r.send_time_s;
    j["ttft_ms"] = r.success ? json(r.ttft_s * 1e3) : json(nullptr);
    auto tpot = Tpot(r);
    j["tpot_ms"] = tpot ? json(*tpot * 1e3) : json(nullptr);
    j["e2el_ms"] = r.latency_s * 1e3;
    j["prompt_tokens"] = r.prompt_tokens;
    j["output_tokens"] = r.output_tokens;
    j["expected_output_tokens"] = r.expected_output_tokens;
    j["usage_reported"] = r.usage_reported;
    json itl = json::array();
    for (double g : InterTokenLatencies(r)) itl.push_back(g * 1e3);
    j["itl_ms"] = itl;
    j["meets_slo"] = slo.empty() ? json(nullptr) : json(MeetsSlo(r, slo));
    j["generated_text"] = r.generated_text;
    out += j.dump(-1, ' ', false, json::error_handler_t::replace);
    out += '\n';
  }
  return out;
}

std::string FormatSummary(const RunResult& run, const BenchmarkMetrics& m, const RunMeta& meta) {
  std::string s;
  auto line = [&](std::string_view label, const std::string& value) {
    s += fmt::format("{:<40} {:<10}\n", label, value);
  };
  auto f2 = [](double v) { return fmt::format("{:.2f}", v); };
  auto header = [&](std::string_view title, char fill) {
    size_t pad = title.size() < 50 ? 50 - title.size() : 0;
    s += std::string(pad / 2, fill) + std::string(title) + std::string(pad - pad / 2, fill) + "\n";
  };
  header(" Serving Benchmark Result ", '=');
  line("Successful requests:", fmt::format("{}", m.completed));
  line("Failed requests:", fmt::format("{}", m.failed));
  if (run.not_sent > 0) line("Not sent (duration limit):", fmt::format("{}", run.not_sent));
  line("Maximum request concurrency:",
       run.max_concurrency > 0 ? fmt::format("{}", run.max_concurrency) : "None");
  line("Request rate configured (RPS):", std::isinf(run.rate_rps) ? "inf" : f2(run.rate_rps));
  line("Benchmark duration (s):", f2(m.duration_s));
  line("Total input tokens:", fmt::format("{}", m.total_input_tokens));
  line("Total generated tokens:", fmt::format("{}", m.total_output_tokens));
  line("Request throughput (req/s):", f2(m.request_throughput));
  if (!meta.slo.empty()) line("Request goodput (req/s):", f2(m.request_goodput));
  line("Output token throughput (tok/s):", f2(m.output_throughput));
  line("Peak output token throughput (tok/s):", f2(m.max_output_tokens_per_s));
  line("Peak concurrent requests:", fmt::format("{}", m.max_concurrent_requests));
  line("Total token throughput (tok/s):", f2(m.total_token_throughput));
  if (!meta.slo.empty()) {
    line(fmt::format("SLO attainment ({}):", SloText(meta.slo)),
         fmt::format("{:.1f}%", 100 * m.slo_attainment));
  }
  auto section = [&](std::string_view title, std::string_view abbrev, const LatencyStats& st) {
    header(title, '-');
    line(fmt::format("Mean {} (ms):", abbrev), f2(st.mean_ms));
    line(fmt::format("Median {} (ms):", abbrev), f2(st.median_ms));
    for (const auto& [p, v] : st.percentiles_ms) {
      line(fmt::format("P{:g} {} (ms):", p, abbrev), f2(v));
    }
  };
  section("Time to First Token", "TTFT", m.ttft);
  section("Time per Output Token (excl. 1st token)", "TPOT", m.tpot);
  section("Inter-token Latency", "ITL", m.itl);
  section("End-to-end Latency", "E2EL", m.e2el);
  s += std::string(50, '=') + "\n";
  return s;
}

std::string FormatSweepTable(const std::vector<json>& runs, const RunMeta& meta) {
  const std::string p = meta.percentiles.empty() ? "p99" : PercentileKey(meta.percentiles.front());
  std::string s =
      fmt::format("{:>10} {:>10} {:>12} {:>12} {:>7} {:>12} {:>12}\n", "rate", "attain%",
                  "goodput r/s", "thruput r/s", "failed", p + "_ttft ms", p + "_tpot ms");
  for (const json& r : runs) {
    std::string rate = r["request_rate"].is_string()
                           ? "inf"
                           : fmt::format("{:.3g}", r["request_rate"].get<double>());
    double attain = r["slo_attainment"].is_number() ? 100 * r["slo_attainment"].get<double>() : NAN;
    double goodput = r["request_goodput"].is_number() ? r["request_goodput"].get<double>() : NAN;
    s += fmt::format("{:>10} {:>10.1f} {:>12.3f} {:>12.3f} {:>7} {:>12.1f} {:>12.1f}  {}\n", rate,
                     attain, goodput, r["request_throughput"].get<double>(),
                     r["failed"].get<int64_t>(), r.value(p + "_ttft_ms", 0.0),
                     r.value(p + "_tpot_ms", 0.0), r.value("kind", ""));
  }
  return s;
}

json SloScaleTable(const std::vector<const RunResult*>& runs, const Slo& slo,
                   const std::vector<double>& scales) {
  json table = json::array();
  for (double scale : scales) {
    Slo scaled = slo.Scaled(scale);
    json row;
    row["scale"] = scale;
    row["slo"] = SloJson(scaled);
    json per_run = json::array();
    for (const RunResult* run : runs) {
      per_run.push_back(
          {{"request_rate", std::isinf(run->rate_rps) ? json("inf") : json(run->rate_rps)},
           {"attainment", Attainment(run->records, scaled)}});
    }
    row["runs"] = per_run;
    table.push_back(row);
  }
  return table;
}

}  // namespace cleave::bench
