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
    // Its own process group: a terminal's Ctrl-C reaches only serve, which drains and then
    // stops the workers itself (they still die with it, by the death signal above).
    ::setpgid(0, 0);
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
  cluster->config_ = config;
  cluster->secret_ = config.secret.empty() ? HexSecret() : config.secret;
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
  RouterConfig rc = config.routing;
  rc.workers.clear();
  rc.secret = cluster->secret_;
  rc.wait_for_worker_s = config.max_restarts > 0 ? config.wait_for_worker_s : 0;
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
      Result<WorkerProcess> proc =
          SpawnWorker(args, mine, cluster->secret_, config.start_timeout_s);
      if (!proc.ok()) return proc.status();  // ~LocalCluster stops the ones started
      proc->role = g.role;
      spdlog::info("started {} worker pid {} on port {} (cores {})", WorkerRoleName(g.role),
                   proc->pid, proc->port, fmt::join(mine, ","));
      Slot slot;
      slot.proc = *proc;
      slot.args = std::move(args);
      cluster->slots_.push_back(std::move(slot));
      rc.workers.push_back({config.host, proc->port});
    }
  }
  CLEAVE_ASSIGN_OR_RETURN(cluster->router_, Router::Connect(std::move(rc)));
  LocalCluster* c = cluster.get();
  cluster->monitor_ = std::thread([c] { c->Monitor(); });
  return cluster;
}

double LocalCluster::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::vector<WorkerProcess> LocalCluster::workers() const {
  std::lock_guard lock(mu_);
  std::vector<WorkerProcess> out;
  for (const Slot& s : slots_) out.push_back(s.proc);
  return out;
}

void LocalCluster::StopRestarting() {
  {
    std::lock_guard lock(mu_);
    no_restarts_ = true;
  }
  if (router_) router_->StopWaitingForWorkers("the server is shutting down");
}

int64_t LocalCluster::num_restarts() const {
  std::lock_guard lock(mu_);
  return restarts_;
}

// The children are forked from this thread (their PR_SET_PDEATHSIG follows the forking
// thread), which lives until Stop.
void LocalCluster::Monitor() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_; })) {
    const double now = Now();
    int due = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      const WorkerEndpoint ep{config_.host, s.proc.port};
      if (s.proc.pid > 0) {
        int status = 0;
        if (::waitpid(s.proc.pid, &status, WNOHANG) == s.proc.pid) {
          spdlog::error("{} worker pid {} (port {}) {} {}", WorkerRoleName(s.proc.role), s.proc.pid,
                        s.proc.port,
                        WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
          s.proc.pid = -1;
        } else if (!router_->alive(ep)) {
          ::kill(s.proc.pid, SIGKILL);  // hung (the router gave up on it); reaped next round
          continue;
        }
      }
      if (s.proc.pid > 0 || s.given_up || no_restarts_) continue;
      if (s.restart_at_s < 0) {
        while (!s.restarts_s.empty() && now - s.restarts_s.front() > config_.restart_window_s) {
          s.restarts_s.pop_front();
        }
        if (int32_t(s.restarts_s.size()) >= config_.max_restarts) {
          s.given_up = true;
          const std::string why = fmt::format(
              "not restarting the {} worker that was on port {}: {} restarts within {:.0f} s "
              "(limit {})",
              WorkerRoleName(s.proc.role), s.proc.port, s.restarts_s.size(),
              config_.restart_window_s, config_.max_restarts);
          spdlog::error("{}", why);
          router_->StopWaitingForWorkers(why);
          continue;
        }
        // The first restart in the window at once (a request stream is waiting); a crash
        // loop backs off 0.5, 1, 2, ... 8 s.
        const double backoff_s =
            s.restarts_s.empty() ? 0.0 : std::min(8.0, 0.25 * double(1 << s.restarts_s.size()));
        s.restart_at_s = now + backoff_s;
        spdlog::info("restarting the {} worker in {:.2f} s", WorkerRoleName(s.proc.role),
                     backoff_s);
      }
      if (due < 0 && now >= s.restart_at_s) due = int(i);
    }
    if (due < 0) continue;
    Slot& s = slots_[due];
    s.restart_at_s = -1;
    s.restarts_s.push_back(now);
    const std::vector<std::string> args = s.args;
    const std::vector<int> cores = s.proc.cores;
    const WorkerRole role = s.proc.role;
    const WorkerEndpoint dead{config_.host, s.proc.port};
    lock.unlock();  // a start loads the model: seconds
    Result<WorkerProcess> proc = SpawnWorker(args, cores, secret_, config_.start_timeout_s);
    Status adopted =
        proc.ok() ? router_->ReplaceWorker(dead, {config_.host, proc->port}) : proc.status();
    if (proc.ok() && !adopted.ok()) {
      ::kill(proc->pid, SIGKILL);
      ::waitpid(proc->pid, nullptr, 0);
    }
    lock.lock();
    Slot& slot = slots_[due];
    if (!adopted.ok()) {
      spdlog::error("restarting the {} worker failed: {}", WorkerRoleName(role),
                    adopted.ToString());
      continue;  // down again: scheduled next round, counted against the limit
    }
    proc->role = role;
    slot.proc = *proc;
    ++restarts_;
    spdlog::info("respawned {} worker pid {} on port {} (cores {})", WorkerRoleName(role),
                 proc->pid, proc->port, fmt::join(cores, ","));
  }
}

LocalCluster::~LocalCluster() {
  Stop();
}

void LocalCluster::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
  if (router_) router_->Shutdown();
  std::vector<pid_t> pids;
  for (const Slot& s : slots_) {
    if (s.proc.pid > 0) pids.push_back(s.proc.pid);
  }
  for (pid_t pid : pids) ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (pid_t pid : pids) {
    while (::waitpid(pid, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  slots_.clear();
}

}  // namespace cleave::cluster
