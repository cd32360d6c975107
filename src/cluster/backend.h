// Backend: what the server's EngineService drives. Two implementations: LocalBackend (the engine
// in this process, colocated mode, the default) and Router (worker processes over the wire).
// The method names and contracts are Engine's, so a request reads the same either way.
//
// Thread-safety: as Engine: Step() from one thread at a time, everything else from any thread.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace cleave::cluster {

// One worker process as /health and /metrics show it.
struct WorkerStatus {
  std::string address;  // host:port
  std::string role;     // prefill, decode, mixed
  bool alive = true;
  int32_t queue_length = 0;  // running + waiting, as last reported
  double kv_usage_perc = 0;  // blocks in use (staged included) / blocks, 0..1
};

// The worker processes behind a backend; empty for the in-process engine.
struct ClusterStatus {
  bool is_cluster = false;
  bool can_serve = true;              // some live worker can run a request end to end
  std::vector<WorkerStatus> workers;  // forgotten (replaced) workers excluded
  int64_t migrations = 0;             // request attempts moved off a dead worker
  int64_t worker_restarts = 0;        // dead workers replaced
  uint64_t kv_transfer_bytes = 0;     // KV bytes received by decode workers
  std::map<std::string, int64_t> kv_transfer_failures;  // by reason
  // Durations of completed KV transfers (decode workers' reports), in seconds: counts per
  // bucket of kv_transfer_bounds_s (not cumulative; one more for +Inf), their sum and count.
  std::vector<double> kv_transfer_bounds_s;
  std::vector<uint64_t> kv_transfer_bucket_counts;
  double kv_transfer_sum_s = 0;
  uint64_t kv_transfer_count = 0;
  uint64_t kv_transfers_layerwise = 0;  // of kv_transfer_count: streamed during the prefill
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Validates and queues a request; its outputs come from PollOutputs under the returned id.
  virtual Result<RequestId> AddRequest(Request request) = 0;
  // Finishes the request with kCancelled (an output is queued) and frees its KV. Unknown ids
  // are ignored.
  virtual void Cancel(RequestId id) = 0;
  // One iteration: an engine step, or a short wait for worker messages.
  virtual Status Step() = 0;
  // Takes all queued outputs, in order.
  virtual std::vector<RequestOutput> PollOutputs() = 0;
  virtual bool HasUnfinished() const = 0;
  virtual int32_t max_model_len() const = 0;
  virtual int32_t num_running() const = 0;
  virtual int32_t num_waiting() const = 0;
  virtual BlockPoolStats block_stats() const = 0;
  virtual int64_t num_preemptions() const = 0;
  virtual int64_t num_steps() const = 0;
  // Seconds; the clock of RequestOutput's times.
  virtual double now() const = 0;
  // Worker processes, for /health and /metrics.
  virtual ClusterStatus cluster_status() const { return {}; }
};

// The engine in this process.
class LocalBackend : public Backend {
 public:
  // config.clock must be set. executor and tokenizer must outlive the backend.
  LocalBackend(EngineConfig config, Executor* executor, const Tokenizer* tokenizer)
      : clock_(config.clock), engine_(std::move(config), executor, tokenizer) {}

  Result<RequestId> AddRequest(Request request) override {
    return engine_.AddRequest(std::move(request));
  }
  void Cancel(RequestId id) override { engine_.Cancel(id); }
  Status Step() override { return engine_.Step(); }
  std::vector<RequestOutput> PollOutputs() override { return engine_.PollOutputs(); }
  bool HasUnfinished() const override { return engine_.HasUnfinished(); }
  int32_t max_model_len() const override { return engine_.max_model_len(); }
  int32_t num_running() const override { return engine_.num_running(); }
  int32_t num_waiting() const override { return engine_.num_waiting(); }
  BlockPoolStats block_stats() const override { return engine_.block_stats(); }
  int64_t num_preemptions() const override { return engine_.num_preemptions(); }
  int64_t num_steps() const override { return engine_.num_steps(); }
  double now() const override { return clock_(); }

  Engine& engine() { return engine_; }

 private:
  std::function<double()> clock_;
  Engine engine_;
};

}  // namespace cleave::cluster
