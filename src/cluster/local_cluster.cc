#include "cluster/local_cluster.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

extern char** environ;

namespace cleave::cluster {

namespace {

std::vector<int> AllowedCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cores;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) cores.push_back(c);
    }
  }
  if (cores.empty()) cores.push_back(0);
  return cores;
}

std::string HexSecret() {
  const std::array<uint8_t, 32> bytes = RandomNonce();
  std::string hex;
  for (uint8_t b : bytes) hex += fmt::format("{:02x}", b);
  return hex;
}

}  // namespace

Result<WorkerProcess> SpawnWorker(const std::vector<std::string>& args,
                                  const std::vector<int>& cores, const std::string& secret,
                                  int timeout_s) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Internal("pipe: {}", std::strerror(errno));
  // Everything the child needs is built before fork (only async-signal-safe calls after it).
  std::vector<std::string> argv_s = {"/proc/self/exe"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  argv_s.push_back("--ready-fd");
  argv_s.push_back(std::to_string(fds[1]));
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "CLEAVE_CLUSTER_SECRET=", 22) != 0) env_s.emplace_back(*e);
  }
  env_s.push_back("CLEAVE_CLUSTER_SECRET=" + secret);
  std::vector<char*> envp;
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) CPU_SET(c, &set);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) return Internal("fork: {}", std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);  // serve blocks SIGTERM for sigwait
    ::signal(SIGPIPE, SIG_DFL);
    ::sched_setaffinity(0, sizeof(set), &set);
    ::fcntl(fds[1], F_SETFD, 0);  // the ready pipe survives exec
    ::close(fds[0]);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  WorkerProcess proc;
  proc.pid = pid;
  proc.cores = cores;
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (line.find('\n') == std::string::npos) {
    const int left_ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(
                                deadline - std::chrono::steady_clock::now())
                                .count());
    pollfd p{fds[0], POLLIN, 0};
    if (left_ms <= 0 || ::poll(&p, 1, left_ms) <= 0) break;
    char buf[64];
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, size_t(n));
  }
  ::close(fds[0]);
  unsigned port = 0;
  if (std::sscanf(line.c_str(), "%u", &port) != 1 || port == 0 || port > 65535) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Unavailable("worker `{}` did not start (see its log above)", fmt::join(args, " "));
  }
  proc.port = uint16_t(port);
  return proc;
}

Result<std::unique_ptr<LocalCluster>> LocalCluster::Start(LocalClusterConfig config) {
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  const std::string secret = HexSecret();
  const std::vector<int> cores = AllowedCores();
  struct Group {
    WorkerRole role;
    int32_t count;
    int32_t threads;
  };
  std::vector<Group> groups = {{WorkerRole::kPrefill, config.num_prefill, config.prefill_threads},
                               {WorkerRole::kDecode, config.num_decode, config.decode_threads},
                               {WorkerRole::kMixed, config.num_mixed, config.mixed_threads}};
  const int32_t num_workers = config.num_prefill + config.num_decode + config.num_mixed;
  if (num_workers <= 0) return InvalidArgument("no workers to start");
  if ((config.num_prefill > 0) != (config.num_decode > 0)) {
    return InvalidArgument("prefill and decode workers come together (got {} and {})",
                           config.num_prefill, config.num_decode);
  }
  const int32_t even = std::max<int32_t>(1, int32_t(cores.size()) / num_workers);
  size_t next_core = 0;
  RouterConfig rc;
  rc.secret = secret;
  for (const Group& g : groups) {
    for (int32_t i = 0; i < g.count; ++i) {
      const int32_t threads = g.threads > 0 ? g.threads : even;
      std::vector<int> mine;
      for (int32_t t = 0; t < threads; ++t) mine.push_back(cores[next_core++ % cores.size()]);
      if (next_core > cores.size()) {
        spdlog::warn("more worker threads than cores ({}): workers share cores", cores.size());
      }
      std::vector<std::string> args = {"worker",
                                       "--role",
                                       std::string(WorkerRoleName(g.role)),
                                       "--listen",
                                       config.host + ":0",
                                       "--threads",
                                       std::to_string(threads)};
      args.insert(args.end(), config.worker_args.begin(), config.worker_args.end());
      Result<WorkerProcess> proc = SpawnWorker(args, mine, secret, config.start_timeout_s);
      if (!proc.ok()) return proc.status();  // ~LocalCluster stops the ones started
      proc->role = g.role;
      spdlog::info("started {} worker pid {} on port {} (cores {})", WorkerRoleName(g.role),
                   proc->pid, proc->port, fmt::join(mine, ","));
      cluster->workers_.push_back(*proc);
      rc.workers.push_back({config.host, proc->port});
    }
  }
  CLEAVE_ASSIGN_OR_RETURN(cluster->router_, Router::Connect(std::move(rc)));
  return cluster;
}

LocalCluster::~LocalCluster() {
  Stop();
}

void LocalCluster::Stop() {
  if (router_) router_->Shutdown();
  for (const WorkerProcess& w : workers_) ::kill(w.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (const WorkerProcess& w : workers_) {
    while (::waitpid(w.pid, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(w.pid, SIGKILL);
        ::waitpid(w.pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  workers_.clear();
}

}  // namespace cleave::cluster
