#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace cleave::server {

namespace {

std::vector<double> TtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}
std::vector<double> TokenLatencyBuckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}
std::vector<double> RequestLatencyBuckets() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}
std::vector<double> LengthBuckets() {
  std::vector<double> b;
  for (double x = 1; x <= 1e6; x *= 10) {
    b.push_back(x);
    b.push_back(2 * x);
    b.push_back(5 * x);
  }
  return b;
}

std::string Num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

std::string EscapeLabel(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void Family(std::string* out, const std::string& name, const char* type, const std::string& help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void Sample(std::string* out, const std::string& name, const std::string& labels, double v) {
  *out += fmt::format("{}{{{}}} {}\n", name, labels, Num(v));
}

}  // namespace

Histogram::Histogram(std::vector<double> buckets)
    : bounds_(std::move(buckets)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (!std::isfinite(value)) return;
  value = std::max(0.0, value);
  std::lock_guard lock(mu_);
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[i];
  sum_ += value;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard lock(mu_);
  return count_;
}

void Histogram::Render(const std::string& name, const std::string& help, const std::string& labels,
                       std::string* out) const {
  std::lock_guard lock(mu_);
  Family(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? Num(bounds_[i]) : "+Inf";
    *out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, le, cumulative);
  }
  *out += fmt::format("{}_sum{{{}}} {}\n", name, labels, Num(sum_));
  *out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

void Metrics::RenderCluster(const cluster::ClusterStatus& c, std::string* out) const {
  const std::string& l = labels_;
  Family(out, "cleave:kv_transfer_bytes", "counter",
         "KV bytes moved from prefill to decode workers (as the decode workers report them).");
  Sample(out, "cleave:kv_transfer_bytes_total", l, double(c.kv_transfer_bytes));
  Family(out, "cleave:kv_transfer_failures", "counter",
         "KV transfers that did not complete, by reason.");
  for (const char* reason : {"timeout", "connection", "transfer_error", "prefill_worker_died"}) {
    auto it = c.kv_transfer_failures.find(reason);
    Sample(out, "cleave:kv_transfer_failures_total", fmt::format("{},reason=\"{}\"", l, reason),
           it == c.kv_transfer_failures.end() ? 0.0 : double(it->second));
  }
  for (const auto& [reason, n] : c.kv_transfer_failures) {
    if (reason == "timeout" || reason == "connection" || reason == "transfer_error" ||
        reason == "prefill_worker_died")
      continue;
    Sample(out, "cleave:kv_transfer_failures_total",
           fmt::format("{},reason=\"{}\"", l, EscapeLabel(reason)), double(n));
  }
  // Histogram from the router's bucket counts.
  Family(out, "cleave:kv_transfer_seconds", "histogram",
         "KV transfer duration on the decode worker: KvPull sent to the last block in (layer-wise: "
         "first KV data to KvDone, overlapping the prefill).");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < c.kv_transfer_bucket_counts.size(); ++i) {
    cumulative += c.kv_transfer_bucket_counts[i];
    const std::string le =
        i < c.kv_transfer_bounds_s.size() ? Num(c.kv_transfer_bounds_s[i]) : "+Inf";
    *out +=
        fmt::format("cleave:kv_transfer_seconds_bucket{{{},le=\"{}\"}} {}\n", l, le, cumulative);
  }
  *out += fmt::format("cleave:kv_transfer_seconds_sum{{{}}} {}\n", l, Num(c.kv_transfer_sum_s));
  *out += fmt::format("cleave:kv_transfer_seconds_count{{{}}} {}\n", l, c.kv_transfer_count);
  Family(out, "cleave:kv_transfers", "counter",
         "Completed KV transfers: layerwise (streamed during the prefill, layer by layer) or "
         "after_prefill (pulled once the prefill finished).");
  Sample(out, "cleave:kv_transfers_total", l + ",mode=\"layerwise\"",
         double(c.kv_transfers_layerwise));
  Sample(out, "cleave:kv_transfers_total", l + ",mode=\"after_prefill\"",
         double(c.kv_transfer_count - c.kv_transfers_layerwise));
  Family(
      out, "cleave:migrations", "counter",
      "Requests sent to another worker after theirs died (continuing after the streamed tokens).");
  Sample(out, "cleave:migrations_total", l, double(c.migrations));
  Family(out, "cleave:worker_restarts", "counter", "Dead workers restarted by the supervisor.");
  Sample(out, "cleave:worker_restarts_total", l, double(c.worker_restarts));
  Family(out, "cleave:worker_alive", "gauge", "1 while the worker is connected, 0 once dead.");
  for (const cluster::WorkerStatus& w : c.workers) {
    Sample(out, "cleave:worker_alive", WorkerLabels(w), w.alive ? 1 : 0);
  }
  Family(out, "cleave:worker_queue_length", "gauge",
         "Requests running or waiting on the worker (last report).");
  for (const cluster::WorkerStatus& w : c.workers) {
    Sample(out, "cleave:worker_queue_length", WorkerLabels(w), w.queue_length);
  }
  Family(out, "cleave:worker_kv_usage_perc", "gauge",
         "Fraction of the worker's KV blocks in use or staged (0..1, last report).");
  for (const cluster::WorkerStatus& w : c.workers) {
    Sample(out, "cleave:worker_kv_usage_perc", WorkerLabels(w), w.kv_usage_perc);
  }
}

std::string Metrics::WorkerLabels(const cluster::WorkerStatus& w) const {
  return fmt::format("{},worker=\"{}\",role=\"{}\"", labels_, EscapeLabel(w.address),
                     EscapeLabel(w.role));
}

Metrics::Metrics(std::string model_name)
    : model_name_(std::move(model_name)),
      labels_(fmt::format("model_name=\"{}\"", EscapeLabel(model_name_))),
      ttft_(TtftBuckets()),
      itl_(TokenLatencyBuckets()),
      tpot_(TokenLatencyBuckets()),
      e2e_(RequestLatencyBuckets()),
      queue_(RequestLatencyBuckets()),
      prefill_(RequestLatencyBuckets()),
      decode_(RequestLatencyBuckets()),
      prompt_len_(LengthBuckets()),
      gen_len_(LengthBuckets()) {
  for (const char* reason : {"stop", "length", "abort", "error"}) success_by_reason_[reason] = 0;
}

void Metrics::Add(int64_t* counter, int64_t n) {
  std::lock_guard lock(mu_);
  *counter += n;
}

void Metrics::AddPromptTokens(int64_t n) {
  Add(&prompt_tokens_, n);
}
void Metrics::AddGenerationTokens(int64_t n) {
  Add(&generation_tokens_, n);
}

void Metrics::AddHttpRequest(int status) {
  std::lock_guard lock(mu_);
  ++http_by_status_[status];
}

void Metrics::ObserveFinished(const std::string& reason, double e2e_s, double queue_s,
                              double prefill_s, double decode_s, double tpot_s,
                              int64_t prompt_tokens, int64_t generation_tokens) {
  {
    std::lock_guard lock(mu_);
    ++success_by_reason_[reason];
  }
  e2e_.Observe(e2e_s);
  if (queue_s >= 0) queue_.Observe(queue_s);
  if (prefill_s >= 0) prefill_.Observe(prefill_s);
  if (decode_s >= 0) decode_.Observe(decode_s);
  if (tpot_s >= 0) tpot_.Observe(tpot_s);
  prompt_len_.Observe(double(prompt_tokens));
  gen_len_.Observe(double(generation_tokens));
}

std::string Metrics::Render(const EngineGauges& g) const {
  std::string out;
  const std::string& l = labels_;
  auto gauge = [&](const std::string& name, const std::string& help, double v) {
    Family(&out, name, "gauge", help);
    Sample(&out, name, l, v);
  };
  auto counter = [&](const std::string& name, const std::string& help, double v) {
    Family(&out, name, "counter", help);
    Sample(&out, name + "_total", l, v);
  };
  const double usage =
      g.blocks.num_blocks > 0
          ? double(g.blocks.num_blocks - g.blocks.num_free_blocks) / g.blocks.num_blocks
          : 0.0;
  gauge("vllm:num_requests_running", "Requests in the running batch.", g.num_running);
  gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", g.num_waiting);
  gauge("vllm:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", usage);
  gauge("vllm:gpu_cache_usage_perc", "Alias of vllm:kv_cache_usage_perc (older name).", usage);
  gauge("cleave:kv_total_blocks", "KV-cache blocks in the pool.", g.blocks.num_blocks);
  gauge("cleave:kv_free_blocks", "KV-cache blocks not referenced by any request.",
        g.blocks.num_free_blocks);
  gauge("cleave:kv_cached_blocks", "KV-cache blocks registered in the prefix cache.",
        g.blocks.num_cached_blocks);
  gauge("vllm:engine_healthy", "1 while the engine is serving, 0 after a fatal error.",
        g.healthy ? 1 : 0);
  counter("vllm:num_preemptions", "Preemptions (KV recomputed later).", double(g.num_preemptions));
  counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
          double(g.blocks.num_queried_tokens));
  counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
          double(g.blocks.num_hit_tokens));
  {
    std::lock_guard lock(mu_);
    counter("vllm:prompt_tokens", "Prefill tokens processed.", double(prompt_tokens_));
    counter("vllm:generation_tokens", "Generated tokens.", double(generation_tokens_));
    counter("cleave:requests_rejected", "Requests turned away (queue full, draining).",
            double(num_rejected_));
    counter("cleave:client_disconnects", "Streams cancelled because the client went away.",
            double(num_disconnects_));
    Family(&out, "vllm:request_success", "counter", "Finished requests by finish reason.");
    for (const auto& [reason, n] : success_by_reason_) {
      out += fmt::format("vllm:request_success_total{{{},finished_reason=\"{}\"}} {}\n", l,
                         EscapeLabel(reason), n);
    }
    Family(&out, "cleave:http_requests", "counter", "HTTP responses by status code.");
    for (const auto& [status, n] : http_by_status_) {
      out += fmt::format("cleave:http_requests_total{{{},status=\"{}\"}} {}\n", l, status, n);
    }
  }
  if (g.cluster.is_cluster) RenderCluster(g.cluster, &out);
  ttft_.Render("vllm:time_to_first_token_seconds", "Time to first token.", l, &out);
  itl_.Render("vllm:inter_token_latency_seconds", "Time between consecutive output tokens.", l,
              &out);
  tpot_.Render("vllm:request_time_per_output_token_seconds",
               "Per request: decode time / (output tokens - 1).", l, &out);
  e2e_.Render("vllm:e2e_request_latency_seconds", "Arrival to finish.", l, &out);
  queue_.Render("vllm:request_queue_time_seconds", "Arrival to first scheduled.", l, &out);
  prefill_.Render("vllm:request_prefill_time_seconds", "First scheduled to first token.", l, &out);
  decode_.Render("vllm:request_decode_time_seconds", "First token to last token.", l, &out);
  prompt_len_.Render("vllm:request_prompt_tokens", "Prompt length per request.", l, &out);
  gen_len_.Render("vllm:request_generation_tokens", "Output length per request.", l, &out);
  return out;
}

}  // namespace cleave::server
