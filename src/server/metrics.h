// Prometheus metrics in the text exposition format, written by hand. Names follow vLLM's where
// one exists (vllm:num_requests_running, vllm:time_to_first_token_seconds, ...), so existing
// dashboards and `vllm bench` tooling read them unchanged; cleave-only ones use `cleave:`.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/backend.h"
#include "engine/block_pool.h"

namespace cleave::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> buckets);  // upper bounds, ascending; +Inf is implied
  void Observe(double value);
  // "# HELP", "# TYPE" and the _bucket/_sum/_count lines.
  void Render(const std::string& name, const std::string& help, const std::string& labels,
              std::string* out) const;
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// What the engine looks like at scrape time.
struct EngineGauges {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  BlockPoolStats blocks;
  int64_t num_preemptions = 0;
  bool healthy = true;
  cluster::ClusterStatus cluster;  // worker processes; rendered only when is_cluster
};

class Metrics {
 public:
  explicit Metrics(std::string model_name);

  // Per token / per request observations, in seconds.
  void AddPromptTokens(int64_t n);
  void AddGenerationTokens(int64_t n);
  void ObserveTtft(double s) { ttft_.Observe(s); }
  void ObserveInterToken(double s) { itl_.Observe(s); }
  // A finished request: reason is the API's finish_reason ("stop", "length", "abort", "error").
  void ObserveFinished(const std::string& reason, double e2e_s, double queue_s, double prefill_s,
                       double decode_s, double tpot_s, int64_t prompt_tokens,
                       int64_t generation_tokens);
  // A request turned away before it reached the engine (queue full, draining).
  void AddRejected() { Add(&num_rejected_, 1); }
  void AddClientDisconnect() { Add(&num_disconnects_, 1); }
  void AddHttpRequest(int status);

  std::string Render(const EngineGauges& gauges) const;

 private:
  void Add(int64_t* counter, int64_t n);
  // cleave:kv_transfer_*, migrations, restarts and per-worker gauges.
  void RenderCluster(const cluster::ClusterStatus& c, std::string* out) const;
  std::string WorkerLabels(const cluster::WorkerStatus& w) const;

  std::string model_name_;
  std::string labels_;     // model_name="..."
  mutable std::mutex mu_;  // guards the counters below
  int64_t prompt_tokens_ = 0;
  int64_t generation_tokens_ = 0;
  int64_t num_rejected_ = 0;
  int64_t num_disconnects_ = 0;
  std::map<std::string, int64_t> success_by_reason_;
  std::map<int, int64_t> http_by_status_;
  Histogram ttft_, itl_, tpot_, e2e_, queue_, prefill_, decode_, prompt_len_, gen_len_;
};

}  // namespace cleave::server
