// The HTTP front door: an OpenAI-compatible API on cpp-httplib.
//
//   POST /v1/chat/completions, POST /v1/completions   (JSON or SSE; Bearer key if configured)
//   GET  /v1/models                                   (with "root", "max_model_len")
//   POST /tokenize, POST /detokenize                  (vLLM's shapes)
//   GET  /health                                      (503 while loading or after engine failure;
//                                                      with workers: ok / degraded / 503)
//   GET  /metrics                                     (Prometheus text)
//
// The server listens before the model is loaded (so /health can say 503 "loading"); SetBackend
// makes it serve. Every stream holds one HTTP worker thread. A client that goes away mid-stream
// is noticed by the next failed write (tokens or a keep-alive comment every second of
// silence), and its requests are cancelled, which frees their KV blocks at once.
//
// Per-token cost of a stream (measured on 2 shared cores, `serve -t 2`): its handler wakes once
// per engine output and writes that output's SSE events in one chunk; ~80 us of CPU per token,
// half of it the kernel's loopback TCP send (which also wakes the client), most of the rest the
// wake-up itself and cpp-httplib's poll() before each write. That CPU comes out of the cores the
// engine's threads use, so it, and the client's own parsing, are what a streamed token costs
// beyond Engine::Step. A non-streamed request's handler sleeps until a choice finishes.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"
#include "server/engine_service.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace cleave::server {

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;                // 0: pick a free port (see Bind)
  std::string api_key;            // empty: no authentication
  std::string served_model_name;  // "id" in /v1/models; requests may name it or the root
  std::string model_root;         // the model file
  int num_threads = 256;          // HTTP workers; each open stream holds one
  size_t max_body_bytes = 8 << 20;
  size_t max_header_count = 64;
  size_t max_header_bytes = 32 << 10;  // all header names and values together
  ProtocolLimits limits;               // vocab_size and max_tokens are filled in by SetBackend
};

// What the server needs once the model is loaded; all must outlive the server.
struct Backend {
  EngineService* service = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;
  Metrics* metrics = nullptr;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerConfig config);
  ~HttpServer();

  // Binds the listening socket; returns the port (useful with port 0).
  Result<int> Bind();
  // Serves until Stop(); returns after the in-flight handlers have finished.
  Status Serve();
  // Starts serving requests (until then they get 503).
  void SetBackend(const Backend& backend);
  // Stops accepting connections and new requests; in-flight ones continue (cancel them
  // through EngineService::CancelAll to end them sooner). Safe from any thread.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cleave::server
