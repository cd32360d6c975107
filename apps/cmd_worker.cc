// `cleave worker`: one engine behind the cluster wire protocol (src/cluster/worker.h), as a
// prefill, decode or mixed worker. `cleave serve --prefill-workers P --decode-workers D` starts
// these itself; started by hand (other hosts), give --listen and the same CLEAVE_CLUSTER_SECRET.
//
// Start-up: load the model, size the KV cache, listen, then write the port to --ready-fd (the
// supervisor waits for it) and to the log. SIGTERM/SIGINT stop it.
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "apps/commands.h"
#include "apps/load_model.h"
#include "cluster/join.h"
#include "cluster/transport.h"
#include "cluster/worker.h"
#include "engine/model_executor.h"
#include "model/model.h"
#include "model/model_path.h"

namespace cleave::app {
namespace {

struct WorkerOptions {
  std::string model;
  std::string role = "mixed";
  std::string listen = "127.0.0.1:0";
  int threads = 0;
  int64_t kv_cache_tokens = 0;
  std::string kv_cache_dtype = "f16";
  int32_t max_batch_tokens = 2048;
  int32_t max_seqs = 256;
  int64_t max_model_len = 0;
  bool no_prefix_caching = false;
  int32_t max_staged_blocks = 0;
  WorkerTransportFlags transport;
  std::string join;       // HOST:PORT of a frontend's --accept-workers
  std::string advertise;  // host the others reach this worker at (default: the listen host)
  int ready_fd = -1;
};

constexpr int32_t kBlockSize = 16;
constexpr int64_t kDefaultKvBytes = int64_t{1} << 30;

// Registers with the frontend, retrying while it cannot be reached (it may start later).
Status Join(const WorkerOptions& o, const cluster::WorkerConfig& config, cluster::Worker& worker) {
  CLEAVE_ASSIGN_OR_RETURN(auto frontend, cluster::ParseHostPort(o.join));
  cluster::WorkerEndpoint advertised{o.advertise.empty() ? config.host : o.advertise,
                                     worker.port()};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (true) {
    Status s = cluster::JoinCluster(frontend.first, frontend.second, config.secret, config.role,
                                    worker.layout(), advertised);
    if (s.ok()) {
      spdlog::info("joined the frontend at {}", o.join);
      return s;
    }
    if (s.code() != StatusCode::kUnavailable || std::chrono::steady_clock::now() > deadline) {
      return s;
    }
    spdlog::info("frontend at {} not reachable yet ({}); retrying", o.join, s.message());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int RunWorker(const WorkerOptions& o) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  cluster::WorkerConfig config;
  if (o.role == "prefill") {
    config.role = cluster::WorkerRole::kPrefill;
  } else if (o.role == "decode") {
    config.role = cluster::WorkerRole::kDecode;
  } else {
    config.role = cluster::WorkerRole::kMixed;
  }
  const char* secret = ClusterSecret();
  if (secret == nullptr) {
    fmt::print(stderr, "error: set CLEAVE_CLUSTER_SECRET (at least 16 characters) for the peers\n");
    return 1;
  }
  config.secret = secret;
  Result<std::pair<std::string, uint16_t>> listen = cluster::ParseHostPort(o.listen);
  if (!listen.ok()) {
    fmt::print(stderr, "error: --listen: {}\n", listen.status().message());
    return 1;
  }
  config.host = listen->first;
  config.port = listen->second;

  Result<std::string> path = ResolveModelPath(o.model);
  if (!path.ok()) {
    fmt::print(stderr, "error: {}\n", path.status().message());
    return 1;
  }
  Result<std::unique_ptr<Model>> loaded = LoadModelWeights(*path);
  if (!loaded.ok()) {
    fmt::print(stderr, "error: cannot load {}: {}\n", *path, loaded.status().message());
    return 1;
  }
  Model& model = **loaded;
  const ModelConfig& mc = model.config();
  const DType kv_dtype = *ParseKvCacheDType(o.kv_cache_dtype);  // validated by the flag's check
  if (Status s = KvCache::CheckSupported(kv_dtype, mc.head_dim); !s.ok()) {
    fmt::print(stderr, "error: --kv-cache-dtype: {}\n", s.message());
    return 1;
  }
  const int64_t kv_bytes_per_token =
      KvCache::BytesPerToken(kv_dtype, mc.num_layers, mc.num_kv_heads, mc.head_dim);
  const int64_t kv_tokens =
      o.kv_cache_tokens > 0 ? o.kv_cache_tokens : kDefaultKvBytes / kv_bytes_per_token;
  const int64_t num_blocks = std::max<int64_t>(1, kv_tokens / kBlockSize);
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ModelExecutor executor(model, int32_t(num_blocks), kBlockSize, threads, kv_dtype);
  config.engine.num_blocks = int32_t(num_blocks);
  config.engine.block_size = kBlockSize;
  config.engine.enable_prefix_caching = !o.no_prefix_caching;
  config.engine.max_model_len = int32_t(std::min<int64_t>(
      o.max_model_len > 0 ? o.max_model_len : mc.context_length, num_blocks * kBlockSize));
  config.engine.scheduler.max_batch_tokens = o.max_batch_tokens;
  config.engine.scheduler.max_seqs = o.max_seqs;
  config.engine.seed = std::random_device{}();
  config.max_staged_blocks = o.max_staged_blocks;
  config.kv_transfer_timeout_s = o.transport.kv_transfer_timeout_s;
  config.kv_transport = *cluster::ParseKvTransport(o.transport.kv_transport);  // flag-checked
  // Test only: CLEAVE_FAULT_KV=cut:N|stall:N breaks this worker's first KV-serving connection.
  if (const char* fault = std::getenv("CLEAVE_FAULT_KV"); fault != nullptr && *fault != 0) {
    Result<cluster::KvFault> parsed = cluster::ParseKvFault(fault);
    if (!parsed.ok()) {
      fmt::print(stderr, "error: CLEAVE_FAULT_KV: {}\n", parsed.status().message());
      return 1;
    }
    config.kv_fault = *parsed;
    spdlog::warn("CLEAVE_FAULT_KV={}: KV transfer fault injection is on (tests only)", fault);
  }

  cluster::Worker worker(config, &executor, &executor.mutable_kv_cache(), &model.tokenizer());
  if (Status s = worker.Start(); !s.ok()) {
    fmt::print(stderr, "error: {}\n", s.message());
    return 1;
  }
  spdlog::info("{} worker listening on {}:{} ({} KV blocks, {} threads)", o.role, config.host,
               worker.port(), num_blocks, threads);
  if (!o.join.empty()) {
    if (Status s = Join(o, config, worker); !s.ok()) {
      fmt::print(stderr, "error: --join {}: {}\n", o.join, s.message());
      worker.Stop();
      return 1;
    }
  }
  if (o.ready_fd >= 0) {
    const std::string line = fmt::format("{}\n", worker.port());
    if (::write(o.ready_fd, line.data(), line.size()) != ssize_t(line.size())) return 1;
    ::close(o.ready_fd);
  }
  int sig = 0;
  sigwait(&signals, &sig);
  worker.Stop();
  return 0;
}

}  // namespace

const char* ClusterSecret() {
  const char* secret = std::getenv("CLEAVE_CLUSTER_SECRET");
  if (secret == nullptr || std::string(secret).size() < 16) return nullptr;
  return secret;
}

Result<std::string> RequireClusterSecret() {
  const char* secret = ClusterSecret();
  if (secret == nullptr) {
    return InvalidArgument(
        "--accept-workers: set CLEAVE_CLUSTER_SECRET (at least 16 characters), the same on the "
        "workers");
  }
  return std::string(secret);
}

Result<std::unique_ptr<cluster::JoinListener>> AcceptWorkersInto(const std::string& address,
                                                                 cluster::Router& router) {
  CLEAVE_ASSIGN_OR_RETURN(std::string secret, RequireClusterSecret());
  CLEAVE_ASSIGN_OR_RETURN(auto listen, cluster::ParseHostPort(address));
  return cluster::JoinListener::Start(
      listen.first, listen.second, secret,
      [&router](const cluster::WorkerEndpoint& ep) { return router.AddWorker(ep); });
}

Result<std::unique_ptr<cluster::JoinedCluster>> StartJoinedCluster(const std::string& address,
                                                                   cluster::RouterConfig rc) {
  CLEAVE_ASSIGN_OR_RETURN(std::string secret, RequireClusterSecret());
  CLEAVE_ASSIGN_OR_RETURN(auto listen, cluster::ParseHostPort(address));
  rc.secret = secret;
  rc.wait_for_worker_s = 30;  // a request waits for a missing role to join
  return cluster::JoinedCluster::Start(listen.first, listen.second, std::move(rc),
                                       /*first_timeout_s=*/600);
}

void AddWorkerTransportFlags(CLI::App* cmd, WorkerTransportFlags& flags) {
  cmd->add_option("--kv-transfer-timeout-s", flags.kv_transfer_timeout_s,
                  "Decode: abort a KV pull that makes no progress for this long (default 10)")
      ->check(CLI::Range(0.05, 3600.0));
  cmd->add_option("--kv-transport", flags.kv_transport,
                  "KV between workers: auto (shared memory on one host, else TCP), tcp, shm")
      ->check(CLI::IsMember({"auto", "tcp", "shm"}));
}

std::vector<std::string> WorkerTransportArgs(const WorkerTransportFlags& flags) {
  return {"--kv-transfer-timeout-s", fmt::format("{}", flags.kv_transfer_timeout_s),
          "--kv-transport", flags.kv_transport};
}

void RegisterWorker(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<WorkerOptions>();
  auto* cmd = app.add_subcommand("worker", "Cluster worker (prefill, decode or mixed)");
  cmd->add_option("--role", o->role, "prefill, decode or mixed")
      ->check(CLI::IsMember({"prefill", "decode", "mixed"}));
  cmd->add_option("--listen", o->listen, "HOST:PORT to listen on (default 127.0.0.1:0)");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: the default model)");
  cmd->add_option("-t,--threads", o->threads, "Compute threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--kv-cache-tokens", o->kv_cache_tokens, "KV cache capacity in tokens")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 30));
  cmd->add_option("--kv-cache-dtype", o->kv_cache_dtype,
                  "KV cache element type: f16 (default), f32, q8_0")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}));
  cmd->add_option("--max-batch-tokens", o->max_batch_tokens, "Tokens computed per engine step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-seqs", o->max_seqs, "Sequences running at once")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--max-model-len", o->max_model_len, "Prompt + output limit")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  cmd->add_flag("--no-prefix-caching", o->no_prefix_caching, "Disable prefix caching");
  cmd->add_option("--max-staged-blocks", o->max_staged_blocks,
                  "Prefill: KV blocks held for decode workers before admission stops (default: "
                  "the KV cache size)")
      ->check(CLI::Range(0, 1 << 24));
  AddWorkerTransportFlags(cmd, o->transport);
  cmd->add_option("--join", o->join,
                  "HOST:PORT of a frontend started with --accept-workers: register with it");
  cmd->add_option("--advertise", o->advertise,
                  "With --join: the host others reach this worker at (default: the --listen "
                  "host, or this host's address towards the frontend if that is 0.0.0.0)");
  cmd->add_option("--ready-fd", o->ready_fd, "Write the port to this fd when ready (supervisor)");
  cmd->callback([o, &exit_code] { exit_code = RunWorker(*o); });
}

}  // namespace cleave::app
