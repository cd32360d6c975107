// LocalCluster: the supervisor of `cleave serve --prefill-workers P --decode-workers D`. Starts
// each worker as a child process (`/proc/self/exe worker --role R ...`), pinned to its own cores
// with sched_setaffinity, waits until it listens, and connects a Router to all of them.
//
// Children get the shared secret through their environment (never argv), die with the parent
// (PR_SET_PDEATHSIG), and report their port through a pipe once the model is loaded.
//
// Supervision: a monitor thread reaps children (waitpid, every 100 ms) and kills the ones the
// router took for dead (silent too long). A dead worker is started again with the same role,
// cores and arguments at once the first time, then after a backoff (0.5 s doubling per recent
// restart, at most 8 s), and the router adopts it (Router::ReplaceWorker). More than max_restarts
// restarts of one worker within restart_window_s (a start that fails counts as one) and the
// supervisor gives up on it (logged). While a worker is down, requests nothing else can serve wait
// for it in the router (RouterConfig::wait_for_worker_s).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
  int32_t max_restarts = 5;   // per worker within restart_window_s; 0: never restart
  double restart_window_s = 60;
  double wait_for_worker_s = 30;  // see RouterConfig; used only when restarts are on
  // Routing knobs (local_prefill_max_tokens, layerwise_kv_queue_limit); its workers, secret
  // and wait_for_worker_s are set by Start.
  RouterConfig routing;
  // Shared by the router and the workers; empty: a random one. Set it (CLEAVE_CLUSTER_SECRET)
  // to let workers on other hosts join the same router.
  std::string secret;
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
  // The current processes (a restarted worker replaces its predecessor). Thread-safe.
  std::vector<WorkerProcess> workers() const;
  int64_t num_restarts() const;
  // Draining: dead workers stay dead, and requests waiting for one end now.
  void StopRestarting();
  // Stops the monitor, shuts the router down, then SIGTERMs the workers and reaps them
  // (SIGKILL after 5 s).
  void Stop();

 private:
  struct Slot {
    WorkerProcess proc;             // pid -1 while down
    std::vector<std::string> args;  // as first started
    std::deque<double> restarts_s;  // times of recent restarts
    double restart_at_s = -1;       // down: when to start it again; -1: not scheduled
    bool given_up = false;
  };
  LocalCluster() = default;
  void Monitor();
  double Now() const;

  LocalClusterConfig config_;
  std::string secret_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  mutable std::mutex mu_;  // guards slots_, stop_, restarts_
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  bool stop_ = false;
  bool no_restarts_ = false;
  int64_t restarts_ = 0;
  std::thread monitor_;
  std::unique_ptr<Router> router_;
};

// Starts `exe args...` with `cores` as its CPU affinity and `env_secret` as
// CLEAVE_CLUSTER_SECRET, and waits for the port it writes to --ready-fd.
Result<WorkerProcess> SpawnWorker(const std::vector<std::string>& args,
                                  const std::vector<int>& cores, const std::string& secret,
                                  int timeout_s);

}  // namespace cleave::cluster
