#include "server/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <random>
#include <unordered_map>

namespace cleave::server {

using nlohmann::json;

namespace {

// cpp-httplib listens with a backlog of 5, which drops SYNs when many clients connect at once
// (each retry costs the client a second); re-listen with a deep backlog after binding.
class Listener : public httplib::Server {
 public:
  void DeepenBacklog() {
    const auto sock = svr_sock_.load();
    if (sock != INVALID_SOCKET) ::listen(sock, 1024);
  }
};

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomId(std::string_view prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), uint32_t(rng()));
}

// Constant-time in the key's content (length leaks, as with any such compare).
bool SecretEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(DumpJson(body), "application/json");
}

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  if (e.http_status == 429) res.set_header("Retry-After", "1");
  res.set_content(e.ToJsonString(), "application/json");
}

bool NeedsAuth(const std::string& path) {
  return path.rfind("/v1/", 0) == 0 || path == "/tokenize" || path == "/detokenize";
}

// One prompt's engine input and what the response needs to know about it.
struct PreparedPrompt {
  std::vector<TokenId> tokens;
  std::string echo_text;  // completions with echo
};

// Per choice, while a request runs.
struct ChoiceState {
  ChoiceResult result;
  bool started = false;  // a chunk was sent (chat: the role went with it)
  int64_t text_bytes = 0;
};

}  // namespace

struct HttpServer::Impl {
  explicit Impl(HttpServerConfig c) : config(std::move(c)) {}

  HttpServerConfig config;
  Listener server;
  std::atomic<bool> stopping{false};
  std::mutex backend_mu;
  std::shared_ptr<const Backend> backend;  // null while loading
  int64_t created = UnixNow();

  std::shared_ptr<const Backend> GetBackend() {
    std::lock_guard lock(backend_mu);
    return backend;
  }

  void Routes();
  httplib::Server::HandlerResponse PreRoute(const httplib::Request& req, httplib::Response& res);
  void HandleGeneration(ApiKind kind, const httplib::Request& req, httplib::Response& res);
  ApiError Prepare(const Backend& b, const ApiRequest& r, std::vector<PreparedPrompt>* prompts,
                   std::vector<int32_t>* max_tokens);
  void HandleTokenize(const httplib::Request& req, httplib::Response& res);
  void HandleDetokenize(const httplib::Request& req, httplib::Response& res);
  bool ModelMatches(const std::string& model) const {
    return model.empty() || model == config.served_model_name || model == config.model_root;
  }
  ApiError ModelNotFound(const std::string& model) const {
    return NotFoundError(fmt::format("The model `{}` does not exist.", model), "model_not_found");
  }
};

HttpServer::HttpServer(HttpServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {
  impl_->Routes();
}

HttpServer::~HttpServer() = default;

Result<int> HttpServer::Bind() {
  Impl& m = *impl_;
  int port = m.config.port;
  if (port == 0) {
    port = m.server.bind_to_any_port(m.config.host);
    if (port < 0) return Unavailable("cannot bind {}", m.config.host);
  } else if (!m.server.bind_to_port(m.config.host, port)) {
    return Unavailable("cannot bind {}:{} (in use or not allowed)", m.config.host, port);
  }
  m.server.DeepenBacklog();
  return port;
}

Status HttpServer::Serve() {
  if (!impl_->server.listen_after_bind() && !impl_->stopping) {
    return Unavailable("the HTTP server stopped unexpectedly");
  }
  return Status::Ok();
}

void HttpServer::SetBackend(const Backend& backend) {
  std::lock_guard lock(impl_->backend_mu);
  impl_->backend = std::make_shared<const Backend>(backend);
}

void HttpServer::Stop() {
  impl_->stopping = true;
  impl_->server.stop();
}

void HttpServer::Impl::Routes() {
  const int threads = std::max(4, config.num_threads);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_tcp_nodelay(true);
  server.set_payload_max_length(config.max_body_bytes);
  server.set_keep_alive_max_count(100);

  server.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return PreRoute(req, res); });
  server.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      ApiError e = res.status == 413 ? PayloadTooLarge(config.max_body_bytes)
                                     : ErrorForHttpStatus(res.status);
      res.set_content(e.ToJsonString(), "application/json");
    }
  });
  server.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("{} {}: unhandled exception: {}", req.method, req.path, what);
        SendError(res, InternalError("Internal server error."));
      });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (auto b = GetBackend(); b && b->metrics) b->metrics->AddHttpRequest(res.status);
    spdlog::debug("{} {} {}", req.method, req.path, res.status);
  });

  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGeneration(ApiKind::kChat, req, res);
  });
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGeneration(ApiKind::kCompletion, req, res);
  });
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"}) {
    server.Get(path, [](const httplib::Request&, httplib::Response& res) {
      SendError(res, ErrorForHttpStatus(405));
    });
  }
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    auto b = GetBackend();
    json model = {
        {"id", config.served_model_name}, {"object", "model"},         {"created", created},
        {"owned_by", "cleave"},           {"root", config.model_root}, {"parent", nullptr}};
    if (b) model["max_model_len"] = b->service->max_model_len();
    SendJson(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    auto b = GetBackend();
    if (!b) return SendError(res, ServiceUnavailable("Loading model"));
    if (!b->service->healthy()) return SendError(res, ServiceUnavailable("The engine failed."));
    if (stopping) return SendError(res, ServiceUnavailable("Shutting down."));
    const cluster::ClusterStatus cs = b->service->cluster_status();
    if (!cs.is_cluster) return SendJson(res, 200, json{{"status", "ok"}});
    // Worker processes: ok when all are alive, degraded while some are dead but requests can
    // still be served, 503 when no live worker can run a request.
    json workers = json::array();
    bool all_alive = true;
    for (const cluster::WorkerStatus& w : cs.workers) {
      workers.push_back({{"address", w.address}, {"role", w.role}, {"alive", w.alive}});
      all_alive = all_alive && w.alive;
    }
    const char* status = !cs.can_serve ? "unavailable" : all_alive ? "ok" : "degraded";
    SendJson(res, cs.can_serve ? 200 : 503, json{{"status", status}, {"workers", workers}});
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto b = GetBackend();
    if (!b) return SendError(res, ServiceUnavailable("Loading model"));
    res.status = 200;
    res.set_content(b->metrics->Render(b->service->gauges()), "text/plain; version=0.0.4");
  });
  server.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    HandleTokenize(req, res);
  });
  server.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    HandleDetokenize(req, res);
  });
}

httplib::Server::HandlerResponse HttpServer::Impl::PreRoute(const httplib::Request& req,
                                                            httplib::Response& res) {
  using HR = httplib::Server::HandlerResponse;
  size_t header_bytes = 0;
  for (const auto& [k, v] : req.headers) header_bytes += k.size() + v.size();
  if (req.headers.size() > config.max_header_count || header_bytes > config.max_header_bytes) {
    SendError(res, ErrorForHttpStatus(431));
    return HR::Handled;
  }
  // Refuse an oversize body from its declared length, before reading (and buffering) it.
  if (req.has_header("Content-Length")) {
    const std::string len = req.get_header_value("Content-Length");
    uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), n);
    if (ec != std::errc() || ptr != len.data() + len.size() || n > config.max_body_bytes) {
      SendError(res, ec == std::errc() && ptr == len.data() + len.size()
                         ? PayloadTooLarge(config.max_body_bytes)
                         : BadRequest("Invalid Content-Length header."));
      res.set_header("Connection", "close");
      return HR::Handled;
    }
  }
  if (!config.api_key.empty() && NeedsAuth(req.path)) {
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    const bool ok = auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
                    SecretEquals(std::string_view(auth).substr(kBearer.size()), config.api_key);
    if (!ok) {
      SendError(res, Unauthorized());
      res.set_header("WWW-Authenticate", "Bearer");
      return HR::Handled;
    }
  }
  return HR::Unhandled;
}

ApiError HttpServer::Impl::Prepare(const Backend& b, const ApiRequest& r,
                                   std::vector<PreparedPrompt>* prompts,
                                   std::vector<int32_t>* max_tokens) {
  const Tokenizer& tok = *b.tokenizer;
  if (r.kind == ApiKind::kChat) {
    ChatRenderOptions options;
    options.add_generation_prompt = r.add_generation_prompt;
    if (tok.bos_id() >= 0) options.bos_token = std::string(tok.TokenText(tok.bos_id()));
    if (tok.eos_id() >= 0) options.eos_token = std::string(tok.TokenText(tok.eos_id()));
    if (r.chat_template_kwargs.is_object()) options.extra_context = r.chat_template_kwargs;
    Result<std::string> text = b.chat_template->Render(r.messages, options);
    if (!text.ok()) {
      return BadRequest("Cannot apply the chat template: " + text.status().message(), "messages");
    }
    PreparedPrompt p;
    // The template writes BOS itself when the model wants one.
    p.tokens = tok.Encode(*text, /*add_special=*/false, /*parse_special=*/true);
    if (tok.add_bos() && tok.bos_id() >= 0 &&
        (p.tokens.empty() || p.tokens.front() != tok.bos_id())) {
      p.tokens.insert(p.tokens.begin(), tok.bos_id());
    }
    prompts->push_back(std::move(p));
  } else {
    for (const ApiPrompt& ap : r.prompts) {
      PreparedPrompt p;
      if (ap.is_tokens) {
        p.tokens = ap.tokens;
        if (r.echo) p.echo_text = tok.Decode(p.tokens, r.params.skip_special_tokens);
      } else {
        p.tokens = tok.Encode(ap.text, r.add_special_tokens, /*parse_special=*/true);
        if (r.echo) p.echo_text = ap.text;
      }
      prompts->push_back(std::move(p));
    }
  }
  const int64_t max_len = b.service->max_model_len();
  for (const PreparedPrompt& p : *prompts) {
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    if (n == 0)
      return BadRequest("The prompt is empty.", r.kind == ApiKind::kChat ? "messages" : "prompt");
    if (n >= max_len) {
      return ContextLengthExceeded(max_len, n, r.max_tokens.value_or(0),
                                   r.kind == ApiKind::kChat ? "messages" : "prompt");
    }
    if (r.max_tokens && n + *r.max_tokens > max_len) {
      return ContextLengthExceeded(max_len, n, *r.max_tokens, r.max_tokens_param);
    }
    if (r.params.min_tokens > 0 && n + r.params.min_tokens > max_len) {
      return ContextLengthExceeded(max_len, n, r.params.min_tokens, "min_tokens");
    }
    max_tokens->push_back(r.max_tokens ? *r.max_tokens : static_cast<int32_t>(max_len - n));
  }
  return {};
}

void HttpServer::Impl::HandleGeneration(ApiKind kind, const httplib::Request& req,
                                        httplib::Response& res) {
  auto backend_ptr = GetBackend();
  if (!backend_ptr) return SendError(res, ServiceUnavailable("Loading model"));
  const Backend& b = *backend_ptr;
  if (stopping) return SendError(res, ServiceUnavailable("The server is shutting down."));

  json body;
  ApiError err = ParseJsonBody(req.body, config.limits.max_json_depth, &body);
  ApiRequest r;
  ProtocolLimits limits = config.limits;
  limits.vocab_size = b.tokenizer->vocab_size();
  limits.max_tokens = b.service->max_model_len();
  if (err.ok()) {
    err = kind == ApiKind::kChat ? ParseChatRequest(body, limits, &r)
                                 : ParseCompletionRequest(body, limits, &r);
  }
  if (err.ok() && !ModelMatches(r.model)) err = ModelNotFound(r.model);
  std::vector<PreparedPrompt> prompts;
  std::vector<int32_t> max_tokens;
  if (err.ok()) err = Prepare(b, r, &prompts, &max_tokens);
  if (!err.ok()) return SendError(res, err);

  // Choice index = prompt index * n + i.
  std::vector<Request> requests;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (int32_t i = 0; i < r.n; ++i) {
      Request q;
      q.prompt = prompts[p].tokens;
      q.params = r.params;
      q.params.max_tokens = max_tokens[p];
      if (q.params.seed) q.params.seed = *q.params.seed + uint64_t(i);  // choices differ
      requests.push_back(std::move(q));
    }
  }
  Result<std::shared_ptr<RequestGroup>> submitted = b.service->Submit(std::move(requests));
  if (!submitted.ok()) return SendError(res, FromStatus(submitted.status()));
  std::shared_ptr<RequestGroup> group = *submitted;

  struct State {
    ResponseMeta meta;
    ApiRequest request;
    std::vector<PreparedPrompt> prompts;
    std::vector<ChoiceState> choices;
    std::unordered_map<RequestId, int32_t> choice_of;
    std::vector<int64_t> cached_tokens;  // per prompt
    std::shared_ptr<RequestGroup> group;
    std::shared_ptr<const Backend> backend;
  };
  auto st = std::make_shared<State>();
  st->meta = {RandomId(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-"), UnixNow(),
              r.model.empty() ? config.served_model_name : r.model};
  st->request = std::move(r);
  st->prompts = std::move(prompts);
  st->choices.resize(group->ids().size());
  st->cached_tokens.assign(st->prompts.size(), 0);
  for (size_t i = 0; i < group->ids().size(); ++i) {
    st->choice_of[group->ids()[i]] = int32_t(i);
    st->choices[i].result.index = int32_t(i);
  }
  st->group = group;
  st->backend = backend_ptr;

  const Tokenizer* tokenizer = b.tokenizer;
  TokenTextFn token_text = [tokenizer](TokenId id) { return tokenizer->TokenToBytes(id); };

  auto usage_of = [](const State& s) {
    Usage u;
    for (size_t p = 0; p < s.prompts.size(); ++p) {
      u.prompt_tokens += int64_t(s.prompts[p].tokens.size());
      u.cached_tokens += s.cached_tokens[p];
    }
    for (const ChoiceState& c : s.choices)
      u.completion_tokens += int64_t(c.result.token_ids.size());
    return u;
  };
  // Applies one output to its choice; returns the error to report, if it failed.
  auto apply = [](State& s, const RequestOutput& out, ChunkDelta* delta) -> ApiError {
    auto it = s.choice_of.find(out.request_id);
    if (it == s.choice_of.end()) return {};
    const int32_t index = it->second;
    ChoiceState& c = s.choices[index];
    const size_t prompt_index = size_t(index) / size_t(s.request.n);
    s.cached_tokens[prompt_index] =
        std::max<int64_t>(s.cached_tokens[prompt_index], out.num_cached_tokens);
    const bool has_content = !out.token_ids.empty() || !out.text.empty() || out.finished;
    delta->index = index;
    delta->first = !c.started && has_content;
    delta->text = out.text;
    if (delta->first && s.request.echo) {
      delta->text = s.prompts[prompt_index].echo_text + delta->text;
    }
    if (has_content) c.started = true;
    delta->token_ids = out.token_ids;
    delta->logprobs = out.logprobs;
    delta->text_offset = c.text_bytes;
    c.text_bytes += int64_t(delta->text.size());
    c.result.text += delta->text;
    c.result.token_ids.insert(c.result.token_ids.end(), out.token_ids.begin(), out.token_ids.end());
    c.result.logprobs.insert(c.result.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
    if (out.finished) {
      c.result.finish_reason = ApiFinishReason(out.finish_reason);
      c.result.stop_reason = out.stop_string;
      delta->finish_reason = c.result.finish_reason;
      delta->stop_reason = out.stop_string;
      if (out.finish_reason == FinishReason::kError ||
          out.finish_reason == FinishReason::kCapacity) {
        return InternalError("Generation failed: " +
                             (out.error.empty() ? "engine error" : out.error));
      }
    }
    return {};
  };

  if (!st->request.stream) {
    group->WakeOnlyOnFinish();
    ApiError failure;
    bool cancelled = false;
    while (!group->done()) {
      for (const RequestOutput& out : group->Wait(std::chrono::milliseconds(1000))) {
        ChunkDelta delta;
        ApiError e = apply(*st, out, &delta);
        if (!e.ok() && failure.ok()) failure = e;
        if (out.finished && out.finish_reason == FinishReason::kCancelled) cancelled = true;
      }
    }
    if (!failure.ok()) return SendError(res, failure);
    if (cancelled)
      return SendError(
          res, ServiceUnavailable("The request was cancelled: the server is shutting down."));
    const Usage usage = usage_of(*st);  // before the results are moved out
    std::vector<ChoiceResult> results;
    for (ChoiceState& c : st->choices) results.push_back(std::move(c.result));
    const json response =
        kind == ApiKind::kChat
            ? ChatResponse(st->meta, results, usage, st->request.logprobs, token_text)
            : CompletionResponse(st->meta, results, usage, st->request.logprobs, token_text);
    return SendJson(res, 200, response);
  }

  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st, kind, token_text, usage_of, apply](size_t, httplib::DataSink& sink) {
        EngineService* service = st->backend->service;
        auto write = [&](std::string_view data) { return sink.write(data.data(), data.size()); };
        auto disconnected = [&] {
          service->Cancel(st->group);
          if (st->backend->metrics) st->backend->metrics->AddClientDisconnect();
          return false;
        };
        // The chunks of all outputs taken by one Wait go out in one write: one chunked-encoding
        // frame and one send for whatever the engine produced meanwhile (n > 1, a late wake-up).
        const SseChunkWriter chunks(st->meta, kind, st->request.logprobs, token_text);
        std::vector<RequestOutput> outs;
        std::string events;
        auto last_write = std::chrono::steady_clock::now();
        while (!st->group->done()) {
          st->group->Wait(std::chrono::milliseconds(250), &outs);
          if (outs.empty()) {
            // Silence (queued or a long prefill): a comment keeps proxies open and lets a
            // failed write reveal a client that went away.
            if (std::chrono::steady_clock::now() - last_write > std::chrono::seconds(1)) {
              if (!sink.is_writable() || !write(": keep-alive\n\n")) return disconnected();
              last_write = std::chrono::steady_clock::now();
            }
            continue;
          }
          events.clear();
          for (const RequestOutput& out : outs) {
            ChunkDelta delta;
            ApiError e = apply(*st, out, &delta);
            if (!e.ok()) {
              service->Cancel(st->group);
              events += SseEvent(e.ToJson());
              events += kSseDone;
              write(events);
              sink.done();
              return true;
            }
            // Nothing new (e.g. text held back for a stop string, or a cancel): no chunk.
            if (delta.token_ids.empty() && delta.text.empty() && delta.finish_reason.empty())
              continue;
            chunks.Append(delta, &events);
          }
          if (events.empty()) continue;
          if (!write(events)) return disconnected();
          last_write = std::chrono::steady_clock::now();
        }
        if (st->request.include_usage &&
            !write(SseEvent(UsageChunk(st->meta, kind, usage_of(*st))))) {
          return disconnected();
        }
        if (!write(kSseDone)) return disconnected();
        sink.done();
        return true;
      },
      [st](bool success) {
        // Runs when the response is destroyed; covers a client that left before the provider
        // ran. Cancel is idempotent.
        if (!success) st->backend->service->Cancel(st->group);
      });
}

void HttpServer::Impl::HandleTokenize(const httplib::Request& req, httplib::Response& res) {
  auto b = GetBackend();
  if (!b) return SendError(res, ServiceUnavailable("Loading model"));
  json body;
  ApiError err = ParseJsonBody(req.body, config.limits.max_json_depth, &body);
  if (!err.ok()) return SendError(res, err);
  std::string model = body.value("model", json("")).is_string() ? body.value("model", "") : "";
  if (!ModelMatches(model)) return SendError(res, ModelNotFound(model));
  std::vector<TokenId> tokens;
  if (body.contains("messages")) {
    json chat = {{"messages", body["messages"]}};
    if (body.contains("add_generation_prompt"))
      chat["add_generation_prompt"] = body["add_generation_prompt"];
    ApiRequest r;
    ProtocolLimits limits = config.limits;
    limits.vocab_size = b->tokenizer->vocab_size();
    err = ParseChatRequest(chat, limits, &r);
    std::vector<PreparedPrompt> prompts;
    std::vector<int32_t> unused;
    if (err.ok()) {
      ChatRenderOptions options;
      options.add_generation_prompt = r.add_generation_prompt;
      Result<std::string> text = b->chat_template->Render(r.messages, options);
      if (!text.ok()) return SendError(res, BadRequest(text.status().message(), "messages"));
      tokens = b->tokenizer->Encode(*text, false, true);
    }
  } else if (body.contains("prompt") && body["prompt"].is_string()) {
    bool add_special = true;
    if (body.contains("add_special_tokens")) {
      if (!body["add_special_tokens"].is_boolean()) {
        return SendError(
            res, BadRequest("'add_special_tokens' must be a boolean.", "add_special_tokens"));
      }
      add_special = body["add_special_tokens"].get<bool>();
    }
    tokens = b->tokenizer->Encode(body["prompt"].get<std::string>(), add_special, true);
  } else {
    err = BadRequest("Give 'prompt' (a string) or 'messages'.", "prompt");
  }
  if (!err.ok()) return SendError(res, err);
  SendJson(res, 200,
           json{{"count", tokens.size()},
                {"max_model_len", b->service->max_model_len()},
                {"tokens", tokens},
                {"token_strs", nullptr}});
}

void HttpServer::Impl::HandleDetokenize(const httplib::Request& req, httplib::Response& res) {
  auto b = GetBackend();
  if (!b) return SendError(res, ServiceUnavailable("Loading model"));
  json body;
  ApiError err = ParseJsonBody(req.body, config.limits.max_json_depth, &body);
  if (!err.ok()) return SendError(res, err);
  std::string model = body.value("model", json("")).is_string() ? body.value("model", "") : "";
  if (!ModelMatches(model)) return SendError(res, ModelNotFound(model));
  if (!body.contains("tokens") || !body["tokens"].is_array()) {
    return SendError(res, BadRequest("'tokens' must be an array of token ids.", "tokens"));
  }
  std::vector<TokenId> tokens;
  const int64_t vocab = b->tokenizer->vocab_size();
  for (const json& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab ||
        (t.is_number_unsigned() && t.get<uint64_t>() >= uint64_t(vocab))) {
      return SendError(
          res,
          BadRequest(fmt::format("'tokens' must be token ids in [0, {}].", vocab - 1), "tokens"));
    }
    tokens.push_back(static_cast<TokenId>(t.get<int64_t>()));
  }
  SendJson(res, 200, json{{"prompt", b->tokenizer->Decode(tokens)}});
}

}  // namespace cleave::server
