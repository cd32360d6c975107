// LocalCluster: the supervisor of `cleave serve --prefill-workers P --decode-workers D`. Starts
// each worker as a child process (`/proc/self/exe worker --role R ...`), pinned to its own cores
// with sched_setaffinity, waits until it listens, and connects a Router to all of them.
//
// Children get the shared secret through their environment (never argv), die with the parent
// (PR_SET_PDEATHSIG), and report their port through a pipe once the model is loaded.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "cluster/router.h"
#include "core/status.h"

namespace cleave::cluster {

struct LocalClusterConfig {
  int32_t num_prefill = 0;
  int32_t num_decode = 0;
  int32_t num_mixed = 0;
  int32_t prefill_threads = 0;  // per worker; 0: the cores split evenly
  int32_t decode_threads = 0;
  int32_t mixed_threads = 0;
  std::vector<std::string> worker_args;  // passed to every worker (model, KV size, ...)
  std::string host = "127.0.0.1";
  int start_timeout_s = 300;  // model load included
};

struct WorkerProcess {
  pid_t pid = -1;
  WorkerRole role = WorkerRole::kMixed;
  uint16_t port = 0;
  std::vector<int> cores;
};

class LocalCluster {
 public:
  static Result<std::unique_ptr<LocalCluster>> Start(LocalClusterConfig config);
  ~LocalCluster();  // Stop()

  Router& router() { return *router_; }
  const std::vector<WorkerProcess>& workers() const { return workers_; }
  // Shuts the router down, then SIGTERMs the workers and reaps them (SIGKILL after 5 s).
  void Stop();

 private:
  LocalCluster() = default;
  std::vector<WorkerProcess> workers_;
  std::unique_ptr<Router> router_;
};

// Starts `exe args...` with `cores` as its CPU affinity and `env_secret` as
// CLEAVE_CLUSTER_SECRET, and waits for the port it writes to --ready-fd.
Result<WorkerProcess> SpawnWorker(const std::vector<std::string>& args,
                                  const std::vector<int>& cores, const std::string& secret,
                                  int timeout_s);

}  // namespace cleave::cluster
