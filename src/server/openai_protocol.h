// The OpenAI wire format: parsing and validating /v1/chat/completions and /v1/completions bodies
// into an ApiRequest, and building responses and SSE chunks in exactly OpenAI's shapes.
//
// Validation is strict in the way clients can act on: an unknown or unsupported field is a 400
// that names it, an out-of-range value a 400 that states the allowed range, a wrong type a 400
// that names the expected type. Fields that are null count as absent. Nothing here touches the
// engine or the model; token text comes in through a callback so this is unit-testable alone.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/errors.h"

namespace cleave::server {

enum class ApiKind { kChat, kCompletion };

struct ProtocolLimits {
  int32_t vocab_size = 0;         // token ids (prompts, logit_bias, stop_token_ids) must be below
  int32_t max_n = 16;             // n (choices per prompt)
  int32_t max_choices = 64;       // n * number of prompts
  int32_t max_tokens = 1 << 20;   // max_tokens cap (the server passes max_model_len)
  int32_t max_logprobs = 20;      // logprobs / top_logprobs
  int32_t max_stop = 16;          // stop strings
  int32_t max_stop_bytes = 512;   // length of one stop string
  int32_t max_logit_bias = 1024;  // entries
  int32_t max_json_depth = 64;    // nesting of the body
};

// A completion prompt: text or token ids.
struct ApiPrompt {
  bool is_tokens = false;
  std::string text;
  std::vector<TokenId> tokens;
};

// A validated request. Sampling fields are already in the engine's form; max_tokens is unset
// when the client did not give one (the server fills in what the context leaves).
struct ApiRequest {
  ApiKind kind = ApiKind::kChat;
  std::string model;               // "" if absent
  nlohmann::json messages;         // chat: array of {"role","content"[, "name"]}
  std::vector<ApiPrompt> prompts;  // completions: one or more prompts
  SamplingParams params;
  std::optional<int32_t> max_tokens;
  std::string max_tokens_param = "max_tokens";  // the field the client used (for errors)
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  bool echo = false;                  // completions
  bool logprobs = false;              // report logprobs (params.logprobs holds the top-k count)
  bool add_generation_prompt = true;  // chat
  bool add_special_tokens = true;     // completions: BOS as the model wants
  nlohmann::json chat_template_kwargs = nullptr;  // object or null
  std::string user;
};

// Parses a body into JSON, rejecting nesting deeper than max_depth before building anything,
// and malformed JSON or invalid UTF-8 with a 400 that says where.
ApiError ParseJsonBody(std::string_view body, int32_t max_depth, nlohmann::json* out);

ApiError ParseChatRequest(const nlohmann::json& body, const ProtocolLimits& limits,
                          ApiRequest* out);
ApiError ParseCompletionRequest(const nlohmann::json& body, const ProtocolLimits& limits,
                                ApiRequest* out);

// ---- responses -------------------------------------------------------------------------------

// The bytes a token stands for (may be part of a UTF-8 character).
using TokenTextFn = std::function<std::string(TokenId)>;

struct ResponseMeta {
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  nlohmann::json ToJson() const;
};

// A finished choice, for non-streaming responses.
struct ChoiceResult {
  int32_t index = 0;
  std::string text;
  std::vector<TokenId> token_ids;       // output tokens (for logprobs)
  std::vector<TokenLogprobs> logprobs;  // one per token when requested
  std::string finish_reason;            // "stop", "length", ...
  std::string stop_reason;              // the stop string that matched, if any
};

// "stop", "length", "abort" or "error" for the API's finish_reason.
std::string ApiFinishReason(FinishReason reason);

// Chat logprobs object {"content": [{token, logprob, bytes, top_logprobs}]} for tokens.
nlohmann::json ChatLogprobs(std::span<const TokenId> tokens,
                            std::span<const TokenLogprobs> logprobs, const TokenTextFn& text);
// Completions logprobs {tokens, token_logprobs, top_logprobs, text_offset}; offsets start at
// text_offset.
nlohmann::json CompletionLogprobs(std::span<const TokenId> tokens,
                                  std::span<const TokenLogprobs> logprobs, const TokenTextFn& text,
                                  int64_t text_offset);

nlohmann::json ChatResponse(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices,
                            const Usage& usage, bool with_logprobs, const TokenTextFn& text);
nlohmann::json CompletionResponse(const ResponseMeta& meta,
                                  const std::vector<ChoiceResult>& choices, const Usage& usage,
                                  bool with_logprobs, const TokenTextFn& text);

// One streaming delta of one choice.
struct ChunkDelta {
  int32_t index = 0;
  bool first = false;  // chat: carries role "assistant"
  std::string text;
  std::vector<TokenId> token_ids;
  std::vector<TokenLogprobs> logprobs;
  std::string finish_reason;  // "" while running
  std::string stop_reason;
  int64_t text_offset = 0;  // completions logprobs: offset of this delta in the choice's text
};

nlohmann::json ChatChunk(const ResponseMeta& meta, const ChunkDelta& delta, bool with_logprobs,
                         const TokenTextFn& text);
nlohmann::json CompletionChunk(const ResponseMeta& meta, const ChunkDelta& delta,
                               bool with_logprobs, const TokenTextFn& text);
// The final usage-only chunk: "choices": [] and "usage".
nlohmann::json UsageChunk(const ResponseMeta& meta, ApiKind kind, const Usage& usage);

// SSE framing: "data: <json>\n\n" and the terminator "data: [DONE]\n\n".
std::string SseEvent(const nlohmann::json& j);

// Writes the SSE event of one streaming chunk: the same bytes as
// SseEvent(ChatChunk(meta, delta, with_logprobs, text)) (or CompletionChunk), without building
// a JSON document per token. The constant parts (id, created, model, object) are serialized
// once; a delta that carries logprobs takes the JSON path.
class SseChunkWriter {
 public:
  SseChunkWriter(const ResponseMeta& meta, ApiKind kind, bool with_logprobs, TokenTextFn text);
  // Appends the event for `delta` to *out.
  void Append(const ChunkDelta& delta, std::string* out) const;

 private:
  ResponseMeta meta_;
  ApiKind kind_;
  bool with_logprobs_;
  TokenTextFn text_;
  std::string tail_;  // `],"created":...,"object":"..."}` and the event's blank line
};
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace cleave::server
