// `cleave serve`: the OpenAI-compatible HTTP server on one colocated engine.
//
// Start-up order: bind the port (fail fast if taken), start answering (/health says 503 while
// loading), load the model, size the KV cache, start the engine thread, serve. SIGTERM/SIGINT:
// stop accepting, let in-flight requests finish for --grace seconds, cancel what is left,
// exit 0. A second signal exits at once.
#include <signal.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "apps/commands.h"
#include "apps/load_model.h"
#include "cluster/join.h"
#include "cluster/local_cluster.h"
#include "engine/model_executor.h"
#include "kernels/cpu/dispatch.h"
#include "model/model.h"
#include "model/model_path.h"
#include "server/engine_service.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace cleave::app {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  std::string served_model_name;
  int threads = 0;
  int64_t kv_cache_tokens = 0;
  int64_t kv_cache_bytes = 0;
  std::string kv_cache_dtype = "f16";
  int32_t max_batch_tokens = 2048;
  int32_t max_seqs = 256;
  int32_t max_queued_requests = 1024;
  int64_t max_queued_tokens = 0;
  bool no_prefix_caching = false;
  int64_t max_model_len = 0;
  int http_threads = 256;
  int32_t max_n = 16;
  double grace_s = 30;
  int32_t prefill_workers = 0;  // > 0 with decode_workers: disaggregated worker processes
  int32_t decode_workers = 0;
  int32_t mixed_workers = 0;  // > 0: colocated, but in worker processes
  int32_t prefill_threads = 0;
  int32_t decode_threads = 0;
  int32_t worker_restarts = 5;  // per worker per minute; 0: a dead worker stays dead
  int32_t local_prefill_max_tokens = 0;
  int64_t layerwise_kv_queue_limit = 2048;
  WorkerTransportFlags transport;  // passed on to the workers
  std::string accept_workers;      // HOST:PORT for `cleave worker --join`
};

constexpr int32_t kBlockSize = 16;
constexpr int64_t kDefaultKvBytes = int64_t{1} << 30;

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.size() > 5 && name.substr(name.size() - 5) == ".gguf") name.resize(name.size() - 5);
  return name;
}

int RunServe(const ServeOptions& o) {
  // Signals are taken by one thread with sigwait; block them everywhere else (threads inherit).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the server

  Result<std::string> path = ResolveModelPath(o.model);
  if (!path.ok()) {
    fmt::print(stderr, "error: {}\n", path.status().message());
    return 1;
  }
  std::string api_key = o.api_key;
  if (api_key.empty()) {
    if (const char* env = std::getenv("CLEAVE_API_KEY")) api_key = env;
  }

  server::HttpServerConfig http;
  http.host = o.host;
  http.port = o.port;
  http.api_key = api_key;
  http.served_model_name = o.served_model_name.empty() ? BaseName(*path) : o.served_model_name;
  http.model_root = *path;
  http.num_threads = o.http_threads;
  http.limits.max_n = o.max_n;
  server::HttpServer http_server(http);
  Result<int> port = http_server.Bind();
  if (!port.ok()) {
    fmt::print(stderr, "error: {}\n", port.status().message());
    return 1;
  }
  const std::string url = fmt::format("http://{}:{}", o.host, *port);

  std::mutex mu;
  std::condition_variable cv;
  bool signaled = false, serve_done = false;
  std::thread serve_thread([&] {
    Status s = http_server.Serve();
    if (!s.ok()) spdlog::error("{}", s.ToString());
    std::lock_guard lock(mu);
    serve_done = true;
    cv.notify_all();
  });
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("received {}; draining (up to {:.0f} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 o.grace_s);
    {
      std::lock_guard lock(mu);
      signaled = true;
    }
    cv.notify_all();
    sigwait(&signals, &sig);
    spdlog::warn("second signal: exiting now");
    std::_Exit(1);
  });
  signal_thread.detach();
  spdlog::info("listening on {} (loading {})", url, *path);

  // Start-up failed: logs why, stops listening, exit status 1.
  auto fail = [&](const std::string& why) {
    spdlog::error("{}", why);
    http_server.Stop();
    serve_thread.join();
    return 1;
  };
  const auto load_start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<Model>> loaded = LoadModelWeights(*path);
  if (!loaded.ok()) {
    return fail(fmt::format("cannot load {}: {}", *path, loaded.status().message()));
  }
  Model& model = **loaded;
  const ModelConfig& mc = model.config();

  // KV sizing: K and V of every layer per token, in the chosen element type.
  const DType kv_dtype = *ParseKvCacheDType(o.kv_cache_dtype);  // validated by the flag's check
  if (Status s = KvCache::CheckSupported(kv_dtype, mc.head_dim); !s.ok()) {
    return fail(fmt::format("--kv-cache-dtype: {}", s.message()));
  }
  const int64_t kv_bytes_per_token =
      KvCache::BytesPerToken(kv_dtype, mc.num_layers, mc.num_kv_heads, mc.head_dim);
  int64_t kv_tokens = o.kv_cache_tokens;
  if (kv_tokens <= 0)
    kv_tokens = (o.kv_cache_bytes > 0 ? o.kv_cache_bytes : kDefaultKvBytes) / kv_bytes_per_token;
  const int64_t num_blocks = std::max<int64_t>(1, kv_tokens / kBlockSize);
  kv_tokens = num_blocks * kBlockSize;
  int64_t max_model_len = std::min<int64_t>(mc.context_length, kv_tokens);
  if (o.max_model_len > 0) {
    if (o.max_model_len > kv_tokens) {
      return fail(fmt::format("--max-model-len {} exceeds the KV cache of {} tokens",
                              o.max_model_len, kv_tokens));
    }
    max_model_len = o.max_model_len;
  }
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  server::ServiceConfig sc;
  sc.engine.num_blocks = static_cast<int32_t>(num_blocks);
  sc.engine.block_size = kBlockSize;
  sc.engine.enable_prefix_caching = !o.no_prefix_caching;
  sc.engine.max_model_len = static_cast<int32_t>(max_model_len);
  sc.engine.scheduler.max_batch_tokens = o.max_batch_tokens;
  sc.engine.scheduler.max_seqs = o.max_seqs;
  sc.engine.seed = std::random_device{}();
  sc.max_queued_requests = o.max_queued_requests;
  sc.max_queued_tokens = o.max_queued_tokens > 0 ? o.max_queued_tokens : 8 * kv_tokens;
  server::Metrics metrics(http.served_model_name);
  // Colocated in this process (the default), or a router in front of worker processes.
  std::unique_ptr<ModelExecutor> executor;
  std::unique_ptr<cluster::LocalCluster> cluster;
  std::unique_ptr<cluster::JoinedCluster> joined;
  std::unique_ptr<cluster::JoinListener> joiner;  // local workers plus joined ones
  std::unique_ptr<server::EngineService> service_ptr;
  cluster::RouterConfig routing;
  routing.local_prefill_max_tokens = o.local_prefill_max_tokens;
  routing.layerwise_kv_queue_limit = o.layerwise_kv_queue_limit;
  if (o.prefill_workers + o.decode_workers + o.mixed_workers > 0) {
    cluster::LocalClusterConfig cc;
    cc.num_prefill = o.prefill_workers;
    cc.num_decode = o.decode_workers;
    cc.num_mixed = o.mixed_workers;
    cc.prefill_threads = o.prefill_threads;
    cc.decode_threads = o.decode_threads;
    cc.mixed_threads = o.threads;
    cc.max_restarts = o.worker_restarts;
    cc.routing = routing;
    if (!o.accept_workers.empty()) {
      // Local workers, and more that join from other hosts: one secret for all of them.
      Result<std::string> secret = RequireClusterSecret();
      if (!secret.ok()) return fail(std::string(secret.status().message()));
      cc.secret = *secret;
    }
    cc.worker_args = {"-m",
                      *path,
                      "--kv-cache-tokens",
                      std::to_string(kv_tokens),
                      "--max-model-len",
                      std::to_string(max_model_len),
                      "--max-batch-tokens",
                      std::to_string(o.max_batch_tokens),
                      "--max-seqs",
                      std::to_string(o.max_seqs),
                      "--kv-cache-dtype",
                      o.kv_cache_dtype};
    if (o.no_prefix_caching) cc.worker_args.push_back("--no-prefix-caching");
    for (std::string& a : WorkerTransportArgs(o.transport)) cc.worker_args.push_back(std::move(a));
    Result<std::unique_ptr<cluster::LocalCluster>> started = cluster::LocalCluster::Start(cc);
    if (!started.ok()) {
      return fail(fmt::format("cannot start the workers: {}", started.status().message()));
    }
    cluster = std::move(*started);
    if (!o.accept_workers.empty()) {
      Result<std::unique_ptr<cluster::JoinListener>> listening =
          AcceptWorkersInto(o.accept_workers, cluster->router());
      if (!listening.ok()) {
        return fail(listening.status().message());
      }
      joiner = std::move(*listening);
      spdlog::info("workers on other hosts join at {}", o.accept_workers);
    }
    service_ptr = std::make_unique<server::EngineService>(sc, &cluster->router(), &metrics);
  } else if (!o.accept_workers.empty()) {
    Result<std::unique_ptr<cluster::JoinedCluster>> started =
        StartJoinedCluster(o.accept_workers, routing);
    if (!started.ok()) {
      return fail(started.status().message());
    }
    joined = std::move(*started);
    service_ptr = std::make_unique<server::EngineService>(sc, &joined->router(), &metrics);
  } else {
    executor = std::make_unique<ModelExecutor>(model, static_cast<int32_t>(num_blocks), kBlockSize,
                                               threads, kv_dtype);
    service_ptr =
        std::make_unique<server::EngineService>(sc, executor.get(), &model.tokenizer(), &metrics);
  }
  server::EngineService& service = *service_ptr;
  http_server.SetBackend({&service, &model.tokenizer(), &model.chat_template(), &metrics});

  kernels::cpu::LogIsaChoice();
  spdlog::info(
      "serving {} as '{}' at {} ({}{:.2f} s to load); KV cache {} tokens ({} blocks, {}, {:.0f} "
      "MiB), "
      "max model len {}, kernels {}, {} threads",
      mc.name, http.served_model_name, url, api_key.empty() ? "" : "API key required; ",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
      kv_tokens, num_blocks, o.kv_cache_dtype, double(kv_tokens * kv_bytes_per_token) / (1 << 20),
      max_model_len, kernels::cpu::IsaName(kernels::cpu::ActiveIsa()), threads);

  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return signaled || serve_done; });
  lock.unlock();
  service.StopAccepting();
  // Ctrl-C reaches the workers too (same process group): their deaths are not failures now.
  if (cluster) cluster->StopRestarting();
  http_server.Stop();
  lock.lock();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.grace_s);
  while (!serve_done) {
    if (cv.wait_until(lock, deadline, [&] { return serve_done; })) break;
    if (service.num_in_flight() > 0)
      spdlog::warn("grace period over: cancelling {} requests", service.num_in_flight());
    service.CancelAll();
    cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return serve_done; });
    http_server.Stop();  // in case the signal came before the listener started
  }
  lock.unlock();
  serve_thread.join();
  service.Shutdown();
  if (cluster) cluster->Stop();
  if (joined) joined->Stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void RegisterServe(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd =
      app.add_subcommand("serve", "OpenAI-compatible HTTP server (default model, 127.0.0.1:8000)");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: the default model)");
  cmd->add_option("--host", o->host, "Address to bind (default loopback; 0.0.0.0 for all)");
  cmd->add_option("--port", o->port, "Port (0: pick a free one)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' (or set CLEAVE_API_KEY)");
  cmd->add_option("--served-model-name", o->served_model_name,
                  "Model id in the API (default: file name)");
  cmd->add_option("-t,--threads", o->threads, "Compute threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  auto* kv_tokens =
      cmd->add_option("--kv-cache-tokens", o->kv_cache_tokens, "KV cache capacity in tokens")
          ->check(CLI::Range(int64_t{16}, int64_t{1} << 30));
  cmd->add_option("--kv-cache-bytes", o->kv_cache_bytes, "KV cache size in bytes (default 1 GiB)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 46))
      ->excludes(kv_tokens);
  cmd->add_option("--kv-cache-dtype", o->kv_cache_dtype,
                  "KV cache element type: f16 (default), f32, q8_0")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}));
  cmd->add_option("--max-batch-tokens", o->max_batch_tokens, "Tokens computed per engine step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-seqs", o->max_seqs, "Sequences running at once")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--max-queued-requests", o->max_queued_requests,
                  "Requests waiting for their first token before new ones get 429")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-queued-tokens", o->max_queued_tokens,
                  "Prompt tokens waiting before new requests get 429 (default 8x the KV cache)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_flag("--no-prefix-caching", o->no_prefix_caching, "Disable prefix caching");
  cmd->add_option("--max-model-len", o->max_model_len,
                  "Prompt + output limit (default: the model's context, at most the KV cache)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  cmd->add_option("--http-threads", o->http_threads,
                  "HTTP worker threads (each open stream holds one)")
      ->check(CLI::Range(4, 4096));
  cmd->add_option("--max-n", o->max_n, "Largest n (choices per request)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--grace", o->grace_s, "Seconds in-flight requests get to finish on SIGTERM")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_option("--prefill-workers", o->prefill_workers,
                  "Disaggregated: prefill worker processes (with --decode-workers)")
      ->check(CLI::Range(0, 64));
  cmd->add_option("--decode-workers", o->decode_workers, "Disaggregated: decode worker processes")
      ->check(CLI::Range(0, 64));
  cmd->add_option("--mixed-workers", o->mixed_workers,
                  "Colocated worker processes behind the router (default: engine in-process)")
      ->check(CLI::Range(0, 64));
  cmd->add_option("--prefill-threads", o->prefill_threads,
                  "Threads (and pinned cores) per prefill worker (default: cores split evenly)")
      ->check(CLI::Range(0, 1024));
  AddWorkerTransportFlags(cmd, o->transport);
  cmd->add_option("--decode-threads", o->decode_threads, "Threads (and cores) per decode worker")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--worker-restarts", o->worker_restarts,
                  "Restarts of a dead worker within a minute before giving up (0: none; "
                  "default 5)")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--accept-workers", o->accept_workers,
                  "HOST:PORT where workers on other hosts register (cleave worker --join), "
                  "next to any local ones; without local workers, serve waits for the first "
                  "(CLEAVE_CLUSTER_SECRET)");
  cmd->add_option("--local-prefill-max-tokens", o->local_prefill_max_tokens,
                  "Disaggregated: prompts shorter than this are prefilled on the decode worker "
                  "(default 0: never)")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--layerwise-kv-queue-limit", o->layerwise_kv_queue_limit,
                  "Disaggregated: stream a prompt's KV to its decode worker layer by layer during "
                  "the prefill when at most this many prompt tokens are queued ahead of it on the "
                  "prefill worker; otherwise the decode worker pulls it after the first token "
                  "(default 2048; -1: never layer-wise)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
  cmd->callback([o, &exit_code] { exit_code = RunServe(*o); });
}

}  // namespace cleave::app
