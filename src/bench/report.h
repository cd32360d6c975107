// Reports: the summary table `vllm bench serve` prints, JSON with vLLM's key names, a
// per-request JSONL, and the sweep / goodput summary that scripts/plot_bench.py reads.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/metrics.h"
#include "bench/runner.h"

namespace cleave::bench {

// Context of a run that is not in its records.
struct RunMeta {
  std::string model;
  std::string endpoint;
  std::string base_url;
  std::string workload;
  std::string token_counter;
  double burstiness = 1.0;
  uint64_t seed = 0;
  Slo slo;
  std::vector<double> percentiles;  // e.g. {90, 99}
};

// "p99" for 99, "p99.9" for 99.9 (vLLM's spelling in key names).
std::string PercentileKey(double p);

// One run's result object: vLLM's keys (request_throughput, mean_ttft_ms, p99_tpot_ms, ...,
// input_lens, output_lens, ttfts, itls, latencies, errors) plus slo and slo_attainment.
nlohmann::json RunToJson(const RunResult& run, const BenchmarkMetrics& m, const RunMeta& meta);

// One JSON object per request (timings in ms; tpot_ms null when undefined).
std::string RecordsToJsonl(const std::vector<RequestRecord>& records, const Slo& slo);

// The table `vllm bench serve` prints, plus SLO attainment.
std::string FormatSummary(const RunResult& run, const BenchmarkMetrics& m, const RunMeta& meta);

// One line per run: rate, attainment, goodput, throughput, latency percentiles.
std::string FormatSweepTable(const std::vector<nlohmann::json>& runs, const RunMeta& meta);

// Attainment of each run's records at each SLO scale: [{scale, ttft_slo_ms, tpot_slo_ms,
// attainment: [per run]}].
nlohmann::json SloScaleTable(const std::vector<const RunResult*>& runs, const Slo& slo,
                             const std::vector<double>& scales);

}  // namespace cleave::bench
