#include "bench/client.h"

#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace cleave::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxErrorBody = 2048;

struct UrlParts {
  std::string scheme_host_port;  // "http://127.0.0.1:8000"
  std::string prefix;            // "" or "/api" (no trailing slash)
};

Result<UrlParts> SplitBaseUrl(const std::string& url) {
  // Debian's cpp-httplib is built with OpenSSL, so https:// works as well as http://.
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos ||
      (url.compare(0, scheme_end, "http") != 0 && url.compare(0, scheme_end, "https") != 0)) {
    return InvalidArgument("base URL must start with http:// or https://: '{}'", url);
  }
  const size_t host_begin = scheme_end + 3;
  size_t slash = url.find('/', host_begin);
  UrlParts parts;
  parts.scheme_host_port = url.substr(0, slash);
  if (parts.scheme_host_port.size() == host_begin) {
    return InvalidArgument("base URL has no host: '{}'", url);
  }
  if (slash != std::string::npos) {
    parts.prefix = url.substr(slash);
    while (!parts.prefix.empty() && parts.prefix.back() == '/') parts.prefix.pop_back();
  }
  return parts;
}

std::unique_ptr<httplib::Client> MakeHttpClient(const UrlParts& url, const ClientConfig& config) {
  auto client = std::make_unique<httplib::Client>(url.scheme_host_port);
  auto timeout = std::chrono::duration<double>(std::max(config.timeout_s, 0.001));
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout);
  client->set_connection_timeout(std::min(us, std::chrono::microseconds(10'000'000)));
  client->set_read_timeout(us);
  client->set_write_timeout(us);
  if (!config.api_key.empty()) client->set_bearer_token_auth(config.api_key.c_str());
  return client;
}

bool IsChat(const std::string& endpoint) {
  return endpoint.find("chat") != std::string::npos;
}

std::string ErrorMessageFromBody(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      return e["message"].get<std::string>();
    }
    return e.dump();
  }
  return body.substr(0, 200);
}

// Incremental SSE parser: feed bytes, get whole events' data payloads.
class SseParser {
 public:
  template <typename OnData>
  void Feed(const char* data, size_t size, OnData&& on_data) {
    buffer_.append(data, size);
    for (;;) {
      // An event ends at a blank line; accept \n\n and \r\n\r\n.
      size_t end = buffer_.find("\n\n");
      size_t crlf = buffer_.find("\r\n\r\n");
      size_t sep_len = 2;
      if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
        end = crlf;
        sep_len = 4;
      }
      if (end == std::string::npos) return;
      std::string event = buffer_.substr(0, end);
      buffer_.erase(0, end + sep_len);
      std::string payload;
      size_t pos = 0;
      while (pos <= event.size()) {
        size_t nl = event.find('\n', pos);
        std::string line =
            event.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) == 0) {
          std::string_view v(line);
          v.remove_prefix(5);
          if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
          if (!payload.empty()) payload.push_back('\n');
          payload.append(v);
        }  // comments (":...") and other fields (event:, id:) are ignored
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      if (!payload.empty()) on_data(payload);
    }
  }

 private:
  std::string buffer_;
};

}  // namespace

Status ValidateClientConfig(const ClientConfig& config) {
  CLEAVE_ASSIGN_OR_RETURN(UrlParts parts, SplitBaseUrl(config.base_url));
  (void)parts;
  if (config.endpoint.empty() || config.endpoint.front() != '/') {
    return InvalidArgument("endpoint must start with '/': '{}'", config.endpoint);
  }
  if (!(config.timeout_s > 0)) return InvalidArgument("timeout must be > 0");
  if (!config.extra_body.empty()) {
    json extra = json::parse(config.extra_body, nullptr, false);
    if (extra.is_discarded() || !extra.is_object()) {
      return InvalidArgument("--extra-body must be a JSON object: {}", config.extra_body);
    }
  }
  return Status::Ok();
}

std::string BuildRequestBody(const ClientConfig& config, const WorkloadRequest& request) {
  json body;
  body["model"] = config.model;
  if (IsChat(config.endpoint)) {
    body["messages"] = json::array({{{"role", "user"}, {"content", request.prompt}}});
    body["max_completion_tokens"] = request.output_tokens;
  } else {
    body["prompt"] = request.prompt;
  }
  body["max_tokens"] = request.output_tokens;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (config.ignore_eos) body["ignore_eos"] = true;
  if (!config.extra_body.empty()) {
    json extra = json::parse(config.extra_body, nullptr, false);
    if (extra.is_object()) body.update(extra);
  }
  return body.dump();
}

RequestRecord SendStreamingRequest(const ClientConfig& config, const WorkloadRequest& request,
                                   int64_t index, Clock::time_point run_start,
                                   const std::atomic<bool>* cancel) {
  RequestRecord record;
  record.index = index;
  record.prompt_tokens = request.prompt_tokens;
  record.expected_output_tokens = request.output_tokens;
  auto url = SplitBaseUrl(config.base_url);
  const Clock::time_point sent = Clock::now();
  record.send_time_s = std::chrono::duration<double>(sent - run_start).count();
  auto since_sent = [&] { return std::chrono::duration<double>(Clock::now() - sent).count(); };
  if (!url.ok()) {
    record.error = url.status().message();
    return record;
  }
  auto http = MakeHttpClient(*url, config);

  httplib::Request req;
  req.method = "POST";
  req.path = url->prefix + config.endpoint;
  req.body = BuildRequestBody(config, request);
  req.headers = {{"Accept", "text/event-stream"}, {"Content-Type", "application/json"}};

  SseParser parser;
  std::string error_body;
  std::string stream_error;
  bool done = false, timed_out = false, cancelled = false;
  int64_t completion_tokens = -1;
  req.response_handler = [&](const httplib::Response& res) {
    record.http_status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const double now = since_sent();
    if (record.http_status != 200) {
      if (error_body.size() < kMaxErrorBody) error_body.append(data, std::min(size, kMaxErrorBody));
      return true;
    }
    parser.Feed(data, size, [&](const std::string& payload) {
      if (done) return;
      if (payload == "[DONE]") {
        done = true;
        return;
      }
      json chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded() || !chunk.is_object()) return;  // tolerate junk, like vLLM
      if (chunk.contains("error")) {
        stream_error = ErrorMessageFromBody(payload);
        return;
      }
      auto choices = chunk.find("choices");
      if (choices != chunk.end() && choices->is_array() && !choices->empty()) {
        const json& c = (*choices)[0];
        std::string text;
        if (c.contains("text") && c["text"].is_string()) text = c["text"].get<std::string>();
        if (c.contains("delta") && c["delta"].is_object()) {
          const json& d = c["delta"];
          if (d.contains("content") && d["content"].is_string())
            text += d["content"].get<std::string>();
          if (d.contains("reasoning_content") && d["reasoning_content"].is_string()) {
            text += d["reasoning_content"].get<std::string>();
          }
        }
        if (!text.empty()) {
          record.chunk_times_s.push_back(now);
          record.generated_text += text;
        }
      }
      auto usage = chunk.find("usage");
      if (usage != chunk.end() && usage->is_object()) {
        if (usage->contains("completion_tokens") && (*usage)["completion_tokens"].is_number()) {
          completion_tokens = (*usage)["completion_tokens"].get<int64_t>();
        }
        if (usage->contains("prompt_tokens") && (*usage)["prompt_tokens"].is_number()) {
          record.prompt_tokens = (*usage)["prompt_tokens"].get<int64_t>();
        }
      }
    });
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      cancelled = true;
      return false;
    }
    if (now > config.timeout_s) {
      timed_out = true;
      return false;
    }
    return !done && stream_error.empty();
  };

  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  bool ok = http->send(req, res, err);
  record.latency_s = since_sent();
  if (record.http_status == 0) record.http_status = res.status;
  if (timed_out) {
    record.error = fmt::format("timeout after {:.1f} s", config.timeout_s);
  } else if (cancelled) {
    record.error = "cancelled: run deadline reached";
  } else if (!stream_error.empty()) {
    record.error = "server error in stream: " + stream_error;
  } else if (record.http_status != 200 && record.http_status != 0) {
    record.error = fmt::format("HTTP {}: {}", record.http_status, ErrorMessageFromBody(error_body));
  } else if (!ok && !done) {
    record.error = err == httplib::Error::Read && record.latency_s >= config.timeout_s * 0.99
                       ? fmt::format("timeout after {:.1f} s", config.timeout_s)
                       : "connection: " + httplib::to_string(err);
  } else if (record.chunk_times_s.empty()) {
    record.error = "stream ended without any content";
  } else {
    record.success = true;
    record.ttft_s = record.chunk_times_s.front();
    record.usage_reported = completion_tokens >= 0;
    record.output_tokens = completion_tokens >= 0
                               ? completion_tokens
                               : static_cast<int64_t>(record.chunk_times_s.size());
  }
  return record;
}

Result<std::string> FetchFirstModel(const ClientConfig& config) {
  CLEAVE_ASSIGN_OR_RETURN(UrlParts url, SplitBaseUrl(config.base_url));
  auto http = MakeHttpClient(url, config);
  auto res = http->Get(url.prefix + "/v1/models");
  if (!res) {
    return Unavailable("GET {}/v1/models: {}", config.base_url, httplib::to_string(res.error()));
  }
  if (res->status != 200) {
    return Unavailable("GET /v1/models: HTTP {}: {}", res->status, ErrorMessageFromBody(res->body));
  }
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
    return DataLoss("GET /v1/models: no data[0].id in the answer");
  }
  return j["data"][0]["id"].get<std::string>();
}

Status CheckReady(const ClientConfig& config) {
  CLEAVE_ASSIGN_OR_RETURN(UrlParts url, SplitBaseUrl(config.base_url));
  auto http = MakeHttpClient(url, config);
  // /health is authoritative where it exists (503 while loading, as vLLM and llama-server do);
  // servers without it are ready once /v1/models answers.
  auto health = http->Get(url.prefix + "/health");
  if (!health) return Unavailable("{}: {}", config.base_url, httplib::to_string(health.error()));
  if (health->status == 200) return Status::Ok();
  if (health->status != 404) {
    return Unavailable("{}/health: HTTP {} {}", config.base_url, health->status,
                       ErrorMessageFromBody(health->body));
  }
  auto models = http->Get(url.prefix + "/v1/models");
  if (!models) return Unavailable("{}: {}", config.base_url, httplib::to_string(models.error()));
  if (models->status == 200) return Status::Ok();
  return Unavailable("{}/v1/models: HTTP {}", config.base_url, models->status);
}

HttpTokenCounter::HttpTokenCounter(const ClientConfig& config) : config_(config) {}
HttpTokenCounter::~HttpTokenCounter() = default;

Result<std::unique_ptr<HttpTokenCounter>> HttpTokenCounter::Probe(const ClientConfig& config) {
  CLEAVE_ASSIGN_OR_RETURN(UrlParts url, SplitBaseUrl(config.base_url));
  std::unique_ptr<HttpTokenCounter> counter(new HttpTokenCounter(config));
  counter->path_ = url.prefix + "/tokenize";
  counter->http_ = MakeHttpClient(url, config);
  counter->http_->set_keep_alive(true);
  CLEAVE_ASSIGN_OR_RETURN(int64_t n, counter->Count("Hello world, this is a probe."));
  if (n < 1) return NotFound("/tokenize returned {} tokens for a probe sentence", n);
  return counter;
}

Result<int64_t> HttpTokenCounter::Count(std::string_view text) {
  json body = {{"model", config_.model}, {"prompt", text}, {"add_special_tokens", false}};
  auto res = http_->Post(path_, body.dump(), "application/json");
  if (!res) return Unavailable("POST {}: {}", path_, httplib::to_string(res.error()));
  if (res->status == 404 || res->status == 405) return NotFound("server has no {}", path_);
  if (res->status != 200) {
    return Unavailable("POST {}: HTTP {}: {}", path_, res->status, ErrorMessageFromBody(res->body));
  }
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("POST {}: answer is not JSON", path_);
  if (j.contains("count") && j["count"].is_number_integer()) return j["count"].get<int64_t>();
  if (j.contains("tokens") && j["tokens"].is_array())
    return static_cast<int64_t>(j["tokens"].size());
  return DataLoss("POST {}: answer has neither \"count\" nor \"tokens\"", path_);
}

}  // namespace cleave::bench
