#include "bench/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

namespace cleave::bench {

Slo Slo::Scaled(double factor) const {
  Slo out;
  if (ttft_ms) out.ttft_ms = *ttft_ms * factor;
  if (tpot_ms) out.tpot_ms = *tpot_ms * factor;
  if (e2el_ms) out.e2el_ms = *e2el_ms * factor;
  return out;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  CLEAVE_CHECK(p >= 0 && p <= 100, "percentile {}", p);
  std::sort(values.begin(), values.end());
  // numpy 'linear': virtual index (n - 1) * p / 100, interpolate between its neighbours.
  double rank = (static_cast<double>(values.size()) - 1.0) * p / 100.0;
  size_t below = static_cast<size_t>(std::floor(rank));
  size_t above = std::min(below + 1, values.size() - 1);
  double frac = rank - static_cast<double>(below);
  return values[below] + (values[above] - values[below]) * frac;
}

std::optional<double> Tpot(const RequestRecord& record) {
  if (!record.success || record.output_tokens < 2 || record.chunk_times_s.empty()) {
    return std::nullopt;
  }
  double span = record.chunk_times_s.back() - record.chunk_times_s.front();
  return span / static_cast<double>(record.output_tokens - 1);
}

std::vector<double> InterTokenLatencies(const RequestRecord& record) {
  std::vector<double> gaps;
  for (size_t i = 1; i < record.chunk_times_s.size(); ++i) {
    gaps.push_back(record.chunk_times_s[i] - record.chunk_times_s[i - 1]);
  }
  return gaps;
}

bool MeetsSlo(const RequestRecord& record, const Slo& slo) {
  if (!record.success) return false;
  if (slo.ttft_ms && record.ttft_s * 1e3 > *slo.ttft_ms) return false;
  if (slo.tpot_ms) {
    // A one-token answer has no TPOT; like vLLM we score it as 0, i.e. it meets the objective.
    std::optional<double> tpot = Tpot(record);
    if (tpot && *tpot * 1e3 > *slo.tpot_ms) return false;
  }
  if (slo.e2el_ms && record.latency_s * 1e3 > *slo.e2el_ms) return false;
  return true;
}

double Attainment(const std::vector<RequestRecord>& records, const Slo& slo) {
  if (records.empty()) return 0;
  int64_t good = 0;
  for (const RequestRecord& r : records) good += MeetsSlo(r, slo) ? 1 : 0;
  return static_cast<double>(good) / static_cast<double>(records.size());
}

LatencyStats Summarize(const std::vector<double>& values_s,
                       const std::vector<double>& percentiles) {
  LatencyStats stats;
  stats.count = static_cast<int64_t>(values_s.size());
  if (values_s.empty()) {
    for (double p : percentiles) stats.percentiles_ms.emplace_back(p, 0.0);
    return stats;
  }
  double sum = 0;
  for (double v : values_s) sum += v;
  double mean = sum / static_cast<double>(values_s.size());
  double sq = 0;
  for (double v : values_s) sq += (v - mean) * (v - mean);
  stats.mean_ms = mean * 1e3;
  stats.std_ms = std::sqrt(sq / static_cast<double>(values_s.size())) * 1e3;  // numpy ddof=0
  stats.median_ms = Percentile(values_s, 50) * 1e3;
  for (double p : percentiles) stats.percentiles_ms.emplace_back(p, Percentile(values_s, p) * 1e3);
  return stats;
}

BenchmarkMetrics ComputeMetrics(const std::vector<RequestRecord>& records, double duration_s,
                                const Slo& slo, const std::vector<double>& percentiles) {
  BenchmarkMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  int64_t good = 0;
  std::map<int64_t, double> tokens_per_second_bucket;
  double t0 = std::numeric_limits<double>::infinity();
  for (const RequestRecord& r : records) t0 = std::min(t0, r.send_time_s);
  for (const RequestRecord& r : records) {
    if (MeetsSlo(r, slo)) ++good;
    if (!r.success) {
      ++m.failed;
      continue;
    }
    ++m.completed;
    m.total_input_tokens += r.prompt_tokens;
    m.total_output_tokens += r.output_tokens;
    ttfts.push_back(r.ttft_s);
    e2els.push_back(r.latency_s);
    if (auto tpot = Tpot(r)) tpots.push_back(*tpot);
    for (double gap : InterTokenLatencies(r)) itls.push_back(gap);
    if (!r.chunk_times_s.empty()) {
      // A chunk may carry several tokens; spread the request's tokens evenly over its chunks.
      double per_chunk =
          static_cast<double>(r.output_tokens) / static_cast<double>(r.chunk_times_s.size());
      for (double t : r.chunk_times_s) {
        auto bucket = static_cast<int64_t>(std::floor(r.send_time_s + t - t0));
        tokens_per_second_bucket[bucket] += per_chunk;
      }
    }
  }
  for (const auto& [bucket, tokens] : tokens_per_second_bucket) {
    m.max_output_tokens_per_s = std::max(m.max_output_tokens_per_s, tokens);
  }
  // Peak concurrency: sweep over (start +1, end -1) events; an end sorts before a start at the
  // same instant.
  std::vector<std::pair<double, int>> events;
  for (const RequestRecord& r : records) {
    events.emplace_back(r.send_time_s, +1);
    events.emplace_back(r.send_time_s + r.latency_s, -1);
  }
  std::sort(events.begin(), events.end());
  int64_t running = 0;
  for (const auto& [t, delta] : events) {
    running += delta;
    m.max_concurrent_requests = std::max(m.max_concurrent_requests, running);
  }
  const int64_t total = m.completed + m.failed;
  m.slo_attainment = total > 0 ? static_cast<double>(good) / static_cast<double>(total) : 0;
  if (duration_s > 0) {
    m.request_throughput = static_cast<double>(m.completed) / duration_s;
    m.request_goodput = slo.empty() ? 0 : static_cast<double>(good) / duration_s;
    m.output_throughput = static_cast<double>(m.total_output_tokens) / duration_s;
    m.total_token_throughput =
        static_cast<double>(m.total_input_tokens + m.total_output_tokens) / duration_s;
  }
  m.ttft = Summarize(ttfts, percentiles);
  m.tpot = Summarize(tpots, percentiles);
  m.itl = Summarize(itls, percentiles);
  m.e2el = Summarize(e2els, percentiles);
  return m;
}

Result<GoodputResult> FindGoodput(const std::function<Result<double>(double rate)>& attainment_at,
                                  double target, double lo, double hi, double resolution) {
  if (!(hi > 0) || !(lo >= 0) || !(lo < hi)) {
    return InvalidArgument("goodput search needs 0 <= lo < hi, got [{}, {}]", lo, hi);
  }
  if (!(resolution > 0)) return InvalidArgument("goodput resolution must be > 0");
  if (!(target > 0 && target <= 1)) return InvalidArgument("attainment target must be in (0, 1]");
  GoodputResult result;
  auto passes = [&](double rate) -> Result<bool> {
    CLEAVE_ASSIGN_OR_RETURN(double attainment, attainment_at(rate));
    result.probes.push_back({rate, attainment});
    return attainment >= target;
  };
  CLEAVE_ASSIGN_OR_RETURN(bool hi_passes, passes(hi));
  if (hi_passes) {
    result.goodput_rps = hi;
    result.saturated = true;
    return result;
  }
  if (lo > 0) {
    CLEAVE_ASSIGN_OR_RETURN(bool lo_passes, passes(lo));
    if (!lo_passes) return result;  // below the searched range: goodput 0
    result.goodput_rps = lo;
  }
  while (hi - lo > resolution) {
    double mid = 0.5 * (lo + hi);
    CLEAVE_ASSIGN_OR_RETURN(bool mid_passes, passes(mid));
    if (mid_passes) {
      lo = mid;
      result.goodput_rps = mid;
    } else {
      hi = mid;
    }
  }
  return result;
}

}  // namespace cleave::bench
