// Router: the frontend's Backend over worker processes. Picks a worker per request, relays
// outputs, notices workers that die, and moves their requests elsewhere.
//
//   with prefill and decode workers:  prompt → the prefill worker of least cost (ChoosePrefill:
//     queued prompt tokens minus the prompt's cached prefix there, prefill-only); its first
//     token is streamed at once, and the request goes to the decode worker with the most room
//     (ChooseDecode), which pulls the KV from the prefill worker. When the prefill worker's
//     queue is short the decode worker is picked at dispatch instead, and the KV streams to it
//     layer by layer during the prefill (layerwise_kv_queue_limit). A prompt shorter than
//     local_prefill_max_tokens goes straight to a decode worker as a whole request.
//   with mixed workers only: the whole request → the mixed worker with the fewest in flight.
//   with decode workers but no live prefill worker: the whole request → a decode worker.
//
// Failures. A worker whose connection breaks (or that is silent too long) is marked dead. Each
// request it held — running on it, or waiting for KV that only it had — is migrated: sent again
// as a new attempt (a new wire id, so late messages of the old attempt are ignored) with the
// client's prompt and parameters, and the tokens already streamed to the client as output the
// worker continues after (AddRequestMsg::output_tokens, replayed by Engine::AddRequest). So the
// stream continues without duplicates, a greedy or seeded request ends with the text of an
// uninterrupted run (the seeded random stream continues at the right draw), and text a worker
// held back for a possible stop string is streamed or dropped as it would have been. If no worker
// can serve it, the request waits up to wait_for_worker_s for one (AddWorker, e.g. the supervisor's
// restart), then ends with kError and a message naming the dead worker. None is left hanging. Times
// in outputs are the router's clock at arrival of each message (workers' clocks are not
// comparable).
//
// Thread-safety: as Backend; AddWorker and ReplaceWorker from any thread.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cluster/backend.h"
#include "cluster/wire.h"

namespace cleave::cluster {

struct WorkerEndpoint {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  bool operator==(const WorkerEndpoint&) const = default;
};

struct RouterConfig {
  std::vector<WorkerEndpoint> workers;
  std::string secret;
  // A request that no live worker can serve waits this long for one to be added; 0: it fails
  // at once (new ones with Unavailable).
  double wait_for_worker_s = 0;
  // Prompts shorter than this skip the prefill workers (conditional disaggregation); 0: never.
  int32_t local_prefill_max_tokens = 0;
  // Layer-wise KV transfer: a prompt sent to a prefill worker with at most this many prompt
  // tokens queued ahead of it gets its decode worker at once, which reserves blocks (when it
  // has room) and receives each layer's KV while the prefill computes the next ones. Behind a
  // longer queue the decode worker is chosen after the first token and pulls the finished KV
  // (DistServe's flow control: no decode memory is held for prompts waiting to be prefilled).
  // -1: always after the first token.
  int64_t layerwise_kv_queue_limit = 2048;
  // A worker that sent nothing for this long (heartbeats go every 100 ms from their own thread)
  // is taken for dead: hung, stopped, or a host gone without closing the connection. A crash
  // is seen at once (the connection closes).
  double worker_silence_limit_s = 3.0;
};

// What the choice functions see of one worker. Pure data, so they are testable without
// processes.
struct WorkerLoad {
  bool alive = true;
  WorkerRole role = WorkerRole::kMixed;
  int64_t queued_prompt_tokens = 0;  // sent for prefill, no first token yet
  int64_t overlap_tokens = 0;        // the prompt's leading tokens it has recently prefilled
  int64_t free_blocks = 0;           // reported free minus promised since the report
  int32_t num_running = 0;           // its batch size (reported) plus in flight since
};

// Prefill cost = queued_prompt_tokens - overlap_tokens: the prompt tokens it must compute
// before this prompt is done, assuming its prefix cache still holds what the router last sent
// it (Dynamo's KV-aware cost with equal weights). Ties: lower index. -1 if none is alive.
int ChoosePrefill(std::span<const WorkerLoad> workers);
// The live decode worker with the most free KV blocks; ties: the smaller batch. -1 if none.
int ChooseDecode(std::span<const WorkerLoad> workers);

// The chained hashes of a prompt's full 16-token blocks (hash i covers tokens [0, 16(i+1))),
// as the engine's prefix cache chains them; the router remembers them per prefill worker.
constexpr int32_t kRouterBlockTokens = 16;
std::vector<uint64_t> PrefixBlockHashes(std::span<const TokenId> prompt);

class Router : public Backend {
 public:
  // Connects to every worker and authenticates; fails if any is unreachable.
  static Result<std::unique_ptr<Router>> Connect(RouterConfig config);
  ~Router() override;

  // Connects to one more worker, authenticates, checks that its KV layout matches, and starts
  // routing to it (waiting requests first). Thread-safe.
  Status AddWorker(const WorkerEndpoint& endpoint);
  // AddWorker(fresh), then forgets the dead worker `dead` (it leaves /health) and counts a
  // restart.
  Status ReplaceWorker(const WorkerEndpoint& dead, const WorkerEndpoint& fresh);
  // False once the worker at `endpoint` was marked dead (or is unknown).
  bool alive(const WorkerEndpoint& endpoint) const;
  // No worker is coming back (the supervisor gave up): requests waiting for one end now with
  // an error that adds `reason`, and later ones are not made to wait.
  void StopWaitingForWorkers(const std::string& reason);

  Result<RequestId> AddRequest(Request request) override;
  void Cancel(RequestId id) override;
  Status Step() override;
  std::vector<RequestOutput> PollOutputs() override;
  bool HasUnfinished() const override;
  int32_t max_model_len() const override;
  int32_t num_running() const override;
  int32_t num_waiting() const override;
  BlockPoolStats block_stats() const override;
  int64_t num_preemptions() const override { return 0; }
  int64_t num_steps() const override;
  double now() const override;
  ClusterStatus cluster_status() const override;

  // Workers alive / total (forgotten ones excluded), by role.
  int32_t num_alive(WorkerRole role) const;
  int32_t num_workers(WorkerRole role) const;
  // KV bytes moved between workers (as reported by the decode workers).
  uint64_t kv_bytes_transferred() const;
  int64_t num_migrations() const;
  // Closes every worker connection (in-flight requests fail).
  void Shutdown();

 private:
  struct Impl;
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cleave::cluster
