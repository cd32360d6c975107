// EngineService: owns the Engine and the one thread that steps it, and routes its outputs to the
// HTTP handlers that wait for them.
//
//   handler threads                       engine thread
//   ---------------                       -------------
//   Submit(requests) ─► Engine::AddRequest   loop: Step() while there is work, else sleep on cv
//   group->Wait()    ◄─ RequestGroup queue ◄─ Route(PollOutputs())   (+ metrics per output)
//   Cancel(group)    ─► Engine::Cancel (frees KV blocks at once)
//
// A RequestGroup holds the engine requests of one HTTP request (n choices, several prompts).
// Admission is bounded by queued requests and queued prompt tokens ("queued" = submitted, no
// token yet) and is decided before anything is sent to the client, so an overloaded server
// answers with a real 429 instead of a stream that fails.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cluster/backend.h"
#include "engine/engine.h"
#include "server/metrics.h"

namespace cleave::server {

struct ServiceConfig {
  EngineConfig engine;
  int32_t max_queued_requests = 1024;   // submitted, no token yet
  int64_t max_queued_tokens = 1 << 20;  // their prompt tokens
};

// The outputs of one HTTP request's engine requests, in the order the engine produced them.
class RequestGroup {
 public:
  // Waits up to `timeout` for outputs and takes them all (maybe none).
  std::vector<RequestOutput> Wait(std::chrono::milliseconds timeout);
  // The same into *out (cleared first), whose capacity a streaming loop reuses.
  void Wait(std::chrono::milliseconds timeout, std::vector<RequestOutput>* out);
  // From now on an output wakes Wait only if it finishes a request: a response sent whole
  // needs no wake-up per token. Wait still returns at its timeout with what has arrived.
  void WakeOnlyOnFinish();
  // True once every request's finished output has been taken by Wait (or the group was
  // cancelled).
  bool done() const;
  // The engine ids, in submission order (choice i of the HTTP request is ids()[i]).
  const std::vector<RequestId>& ids() const { return ids_; }

 private:
  friend class EngineService;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> outputs_;
  std::vector<RequestId> ids_;
  int32_t num_unfinished_ = 0;  // requests whose finished output has not been taken
  bool wake_only_on_finish_ = false;
};

class EngineService {
 public:
  // executor and tokenizer must outlive the service. Starts the engine thread.
  EngineService(ServiceConfig config, Executor* executor, const Tokenizer* tokenizer,
                Metrics* metrics);
  // Drives another backend (the cluster router), which must outlive the service; only the
  // queue limits of config are used.
  EngineService(ServiceConfig config, cluster::Backend* backend, Metrics* metrics);
  ~EngineService();  // Shutdown()

  // Queues all requests or none: ResourceExhausted when the queue bounds would be exceeded,
  // Unavailable while draining or after an engine failure, InvalidArgument from the engine's
  // validation.
  Result<std::shared_ptr<RequestGroup>> Submit(std::vector<Request> requests);
  // Cancels the group's unfinished requests (their KV blocks are freed before this returns) and
  // stops routing to it. Idempotent.
  void Cancel(const std::shared_ptr<RequestGroup>& group);
  // Cancels every request in flight (end of a drain's grace period).
  void CancelAll();
  // Refuse new requests from now on (draining).
  void StopAccepting() { accepting_ = false; }
  // Stops the engine thread (after cancelling what is left).
  void Shutdown();

  bool healthy() const { return !failed_; }
  bool accepting() const { return accepting_ && !failed_; }
  int32_t num_in_flight() const;
  EngineGauges gauges() const;
  // The worker processes behind the service (is_cluster false for the in-process engine).
  cluster::ClusterStatus cluster_status() const { return engine_->cluster_status(); }
  int32_t max_model_len() const { return engine_->max_model_len(); }
  // Seconds on the engine's clock.
  double now() const;

 private:
  struct Tracked {
    std::weak_ptr<RequestGroup> group;
    double arrival_s = 0;
    int32_t num_prompt_tokens = 0;
    bool queued = true;  // no token yet; counted in queued_requests_/queued_tokens_
    double first_scheduled_s = -1;
    double first_token_s = -1;
    double last_token_s = -1;
    int64_t num_tokens = 0;
  };

  void Loop();
  void Route(std::vector<RequestOutput> outputs);
  void Dequeue(Tracked& t);  // leaves the queued counters; mu_ held
  void Observe(Tracked& t, const RequestOutput& out);

  ServiceConfig config_;
  Metrics* metrics_;
  std::chrono::steady_clock::time_point start_;
  std::unique_ptr<cluster::Backend> owned_;  // the local engine, in colocated mode
  cluster::Backend* engine_;

  mutable std::mutex mu_;  // guards below; taken before the engine's own lock, never after
  std::condition_variable work_cv_;
  std::unordered_map<RequestId, Tracked> tracked_;
  int32_t queued_requests_ = 0;
  int64_t queued_tokens_ = 0;
  bool stop_ = false;
  bool poll_pending_ = false;  // outputs may be queued in the engine with nothing to step
  std::atomic<bool> accepting_{true};
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

}  // namespace cleave::server
