// Latency metrics, SLO attainment and goodput: the definitions `cleave bench` reports.
//
// Definitions (docs/benchmarking.md states them for users):
//   TTFT  = request sent -> first streamed chunk with non-empty content.
//   TPOT  = (last content chunk - first content chunk) / (output_tokens - 1); undefined for
//           one output token: excluded from TPOT statistics, and treated as meeting the TPOT
//           objective (vLLM's rule: it scores such a request's TPOT as 0 for goodput).
//   ITL   = gaps between consecutive content chunks (pooled over all requests for statistics).
//   E2EL  = request sent -> stream finished.
//   Attainment = fraction of all requests (failed ones count as misses) that meet every given
//           objective jointly (per request, not per metric percentile).
//   request_goodput = requests meeting every objective / benchmark duration (vLLM's key).
//   Goodput (DistServe) = highest request rate whose attainment >= target, found by
//           FindGoodput over runs at different rates.
// Percentiles interpolate linearly between order statistics (numpy's default, as vLLM uses).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace cleave::bench {

// One request's observed timeline. Times are seconds; `send_time_s` is relative to the start
// of the run, the others relative to send_time_s.
struct RequestRecord {
  int64_t index = 0;  // position in the workload
  bool success = false;
  std::string error;  // empty on success
  int http_status = 0;
  double send_time_s = 0;
  double ttft_s = 0;                   // valid when success and at least one content chunk arrived
  double latency_s = 0;                // E2E
  std::vector<double> chunk_times_s;   // arrival of each non-empty content chunk
  int64_t prompt_tokens = 0;           // from usage when reported, else the workload's estimate
  int64_t output_tokens = 0;           // usage.completion_tokens, else the number of content chunks
  int64_t expected_output_tokens = 0;  // what was asked for (max_tokens)
  bool usage_reported = false;
  std::string generated_text;
};

// Objectives in milliseconds; an unset one is not checked.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;

  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
  Slo Scaled(double factor) const;
};

// numpy.percentile(values, p) with the default 'linear' method; p in [0, 100]. NaN if empty.
double Percentile(std::vector<double> values, double p);

// TPOT in seconds, or nullopt when fewer than 2 output tokens (or no chunk timestamps).
std::optional<double> Tpot(const RequestRecord& record);
// Gaps between consecutive content chunks, seconds.
std::vector<double> InterTokenLatencies(const RequestRecord& record);
// Whether a request met every set objective jointly. A failed request never does.
bool MeetsSlo(const RequestRecord& record, const Slo& slo);
// Fraction of records meeting `slo` (0 if there are none).
double Attainment(const std::vector<RequestRecord>& records, const Slo& slo);

struct LatencyStats {
  double mean_ms = 0, median_ms = 0, std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (p, value)
  int64_t count = 0;
};
LatencyStats Summarize(const std::vector<double>& values_s, const std::vector<double>& percentiles);

// What one run at one rate produced, in vLLM's vocabulary.
struct BenchmarkMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  double duration_s = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;       // completed / duration
  double request_goodput = 0;          // good / duration (0 when no SLO was given)
  double output_throughput = 0;        // output tokens / duration
  double total_token_throughput = 0;   // (input + output tokens) / duration
  double slo_attainment = 0;           // good / (completed + failed)
  double max_output_tokens_per_s = 0;  // busiest 1-second bucket of content chunks
  int64_t max_concurrent_requests = 0;
  LatencyStats ttft, tpot, itl, e2el;
};

// Computes every metric for one run. `duration_s` is the benchmark's wall time (first send to
// last completion), `percentiles` e.g. {90, 99}.
BenchmarkMetrics ComputeMetrics(const std::vector<RequestRecord>& records, double duration_s,
                                const Slo& slo, const std::vector<double>& percentiles);

// Goodput search by bisection on rate, as DistServe does: probe `hi` first; if it passes, the
// goodput is hi. Otherwise keep lo passing / hi failing (lo = 0 passes by convention) and halve
// until hi - lo <= resolution. `attainment_at(rate)` runs (or simulates) the probe; it may
// return an error, which stops the search. Assumes attainment falls as the rate rises.
struct GoodputProbe {
  double rate = 0;
  double attainment = 0;
};
struct GoodputResult {
  double goodput_rps = 0;  // highest passing rate found (0 if none passed)
  bool saturated = false;  // hi itself passed: the true goodput may be higher
  std::vector<GoodputProbe> probes;
};
Result<GoodputResult> FindGoodput(const std::function<Result<double>(double rate)>& attainment_at,
                                  double target, double lo, double hi, double resolution);

}  // namespace cleave::bench
