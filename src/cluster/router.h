// Router: the frontend's Backend over worker processes. Picks a worker per request, relays
// outputs, and notices workers that die.
//
//   with prefill and decode workers:  prompt → prefill worker with the fewest queued prompt
//     tokens (prefill-only); its first token is streamed at once, and the request goes to the
//     decode worker with the most free KV blocks, which pulls the KV from the prefill worker.
//   with mixed workers only: the whole request → the mixed worker with the fewest in flight.
//
// A worker whose connection breaks is marked dead; its requests (and those pulling KV from it)
// are finished with kError and a message that says so; none is left hanging. Times in outputs
// are the router's clock at arrival of each message (workers' clocks are not comparable).
//
// Thread-safety: as Backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cluster/backend.h"
#include "cluster/wire.h"

namespace cleave::cluster {

struct WorkerEndpoint {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
};

struct RouterConfig {
  std::vector<WorkerEndpoint> workers;
  std::string secret;
};

class Router : public Backend {
 public:
  // Connects to every worker and authenticates; fails if any is unreachable.
  static Result<std::unique_ptr<Router>> Connect(RouterConfig config);
  ~Router() override;

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

  // Workers alive / total, by role.
  int32_t num_alive(WorkerRole role) const;
  int32_t num_workers(WorkerRole role) const;
  // KV bytes moved between workers (as reported by the decode workers).
  uint64_t kv_bytes_transferred() const;
  // Closes every worker connection (in-flight requests fail).
  void Shutdown();

 private:
  struct Impl;
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cleave::cluster
