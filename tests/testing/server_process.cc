#include "tests/testing/server_process.h"

#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/testing/paths.h"

namespace cleave::testing {

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int SignalPid(pid_t pid, int sig) {
  if (pid <= 1) {
    errno = EINVAL;
    return -1;
  }
  return ::kill(pid, sig);
}

namespace {

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos; (pos = s.find(from)) != std::string::npos;) s.replace(pos, from.size(), to);
  return s;
}

// HTTP status of GET path, or 0 without an answer.
int StatusOf(int port, const char* path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2, 0);
  c.set_read_timeout(2, 0);
  auto res = c.Get(path);
  return res ? res->status : 0;
}

// /health is 503 while a cleave server loads (when /v1/models may already answer), so
// /v1/models counts only for servers that have no /health at all.
bool IsReady(int port) {
  const int health = StatusOf(port, "/health");
  return health == 200 || (health == 404 && StatusOf(port, "/v1/models") == 200);
}

}  // namespace

ServerProcess::ServerProcess(const std::string& command, double ready_timeout_s,
                             const std::string& env) {
  port_ = FreePort();
  log_ = TempDir() + "/server-" + std::to_string(port_) + ".log";
  const std::string cmd = (env.empty() ? "" : "export " + env + "; ") + "exec " +
                          ReplaceAll(command, "{port}", std::to_string(port_)) + " >" + log_ +
                          " 2>&1";
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(ready_timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (IsReady(port_)) {
      ready_ = true;
      break;
    }
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

ServerProcess::~ServerProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

std::string ServerProcess::LogText() const {
  std::ifstream in(log_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string ServerProcess::LogTail(size_t max_bytes) const {
  const std::string text = LogText();
  return text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
}

bool ServerProcess::LogContains(const std::string& needle) const {
  return LogText().find(needle) != std::string::npos;
}

pid_t ServerProcess::WorkerPid(const std::string& role) const {
  std::istringstream in(LogText());
  pid_t pid = -1;
  for (std::string line; std::getline(in, line);) {
    for (const std::string verb : {"started ", "respawned "}) {
      const std::string needle = verb + role + " worker pid ";
      const size_t at = line.find(needle);
      if (at != std::string::npos) pid = std::stoi(line.substr(at + needle.size()));
    }
  }
  return pid;
}

std::string CleaveServeCommand(const std::string& extra_args) {
  return CleaveBinary() + " serve --port {port} -m " + DefaultModelPath() +
         " --kv-cache-tokens 4096 " + extra_args;
}

double MetricValue(int port, const std::string& name, const std::string& label) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/metrics");
  if (!res) return -1;
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);) {
    const bool named = line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0;
    if (named && line.find(label) != std::string::npos) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

}  // namespace cleave::testing
