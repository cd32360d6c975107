// One streaming request to an OpenAI-compatible server, timed chunk by chunk.
//
// Speaks only HTTP (cpp-httplib), so it measures cleave, vLLM, llama-server or anything else
// that serves /v1/completions or /v1/chat/completions with `stream: true`. Parsing follows the
// SSE framing those servers use: events separated by a blank line, `data: <json>` lines,
// `:` comment lines ignored, `data: [DONE]` ends the stream, and with
// `stream_options.include_usage` a final chunk carries `usage`.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "bench/metrics.h"
#include "bench/workload.h"
#include "core/status.h"

namespace httplib {
class Client;
}

namespace cleave::bench {

struct ClientConfig {
  std::string base_url = "http://127.0.0.1:8000";  // http://host:port, optionally /prefix
  std::string endpoint = "/v1/completions";        // or /v1/chat/completions
  std::string model;
  std::string api_key;     // sent as "Authorization: Bearer KEY" when set
  double timeout_s = 120;  // whole request, connect to last byte
  bool ignore_eos = true;  // ask for exactly output_tokens tokens (vLLM/llama-server extension)
  std::string extra_body;  // JSON object merged into every request body, or empty
};

// Checks the URL and endpoint and parses extra_body.
Status ValidateClientConfig(const ClientConfig& config);

// The JSON body sent for `request` (exposed for tests and --dry-run style inspection).
std::string BuildRequestBody(const ClientConfig& config, const WorkloadRequest& request);

// Sends `request` and blocks until the stream ends, fails, times out, or `cancel` becomes true.
// Never throws: failures are recorded in the returned record. send_time_s is measured from
// `run_start`. Thread-safe (each call uses its own connection).
RequestRecord SendStreamingRequest(const ClientConfig& config, const WorkloadRequest& request,
                                   int64_t index, std::chrono::steady_clock::time_point run_start,
                                   const std::atomic<bool>* cancel);

// data[0].id of GET /v1/models: the model to name when --model is not given.
Result<std::string> FetchFirstModel(const ClientConfig& config);

// GET /health (falls back to /v1/models): OK once the server answers 200.
Status CheckReady(const ClientConfig& config);

// Token counts from the server's POST /tokenize ({model, prompt, add_special_tokens: false};
// reads vLLM's "count" or the length of "tokens", so llama-server's shape works too).
// Not thread-safe: it keeps one keep-alive connection.
class HttpTokenCounter final : public TokenCounter {
 public:
  // Probes /tokenize once; NotFound/Unavailable when the server has none (use the estimate).
  static Result<std::unique_ptr<HttpTokenCounter>> Probe(const ClientConfig& config);
  ~HttpTokenCounter() override;
  Result<int64_t> Count(std::string_view text) override;
  std::string name() const override { return "server /tokenize"; }

 private:
  explicit HttpTokenCounter(const ClientConfig& config);
  ClientConfig config_;
  std::string path_;
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace cleave::bench
