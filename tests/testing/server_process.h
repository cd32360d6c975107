// A server (`cleave serve`, or any command) as a child process for end-to-end tests: started on a
// free loopback port in its own process group (so its workers go with it), ready once /health
// answers 200 (or, for a server without /health, /v1/models does), stopped with SIGTERM (then
// SIGKILL after 5 s) when it goes out of scope. Its stdout and stderr go to a log file under
// TempDir(), which tests read for worker pids and print on failure.
#pragma once

#include <sys/types.h>

#include <string>

namespace cleave::testing {

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// kill(pid, sig) for one process only: -1 (EINVAL) for pid <= 1, which kill() would take as
// "every process" (-1) or "my process group" (0). Use it for pids parsed from logs.
int SignalPid(pid_t pid, int sig);

class ServerProcess {
 public:
  // `command` is run by /bin/sh with "{port}" replaced by a free port; `env` ("A=1 B=2") is
  // exported to it and its children.
  ServerProcess(const std::string& command, double ready_timeout_s, const std::string& env = "");
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool ready() const { return ready_; }
  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  std::string LogText() const;
  // The last `max_bytes` of the log, for failure messages.
  std::string LogTail(size_t max_bytes = 3000) const;
  bool LogContains(const std::string& needle) const;
  // The pid of the newest `role` worker the server started or respawned (from its log), or -1.
  pid_t WorkerPid(const std::string& role) const;

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
  std::string log_;
};

// `cleave serve` on the default model with a 4096-token KV cache, plus extra_args.
std::string CleaveServeCommand(const std::string& extra_args);

// ServerProcess running CleaveServeCommand(extra_args), allowed 120 s to load.
class CleaveServer : public ServerProcess {
 public:
  explicit CleaveServer(const std::string& extra_args, const std::string& env = "")
      : ServerProcess(CleaveServeCommand(extra_args), 120, env) {}
};

// The value of an unlabelled /metrics sample `name` (e.g. "cleave:kv_free_blocks"), or -1.
// The first sample of metric `name` whose labels contain `label` (e.g. mode="layerwise"); -1 if
// there is none.
double MetricValue(int port, const std::string& name, const std::string& label = "");

}  // namespace cleave::testing
