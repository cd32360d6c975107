// OpenAI-style API errors: {"error": {"message", "type", "param", "code"}} plus the HTTP status
// that goes with them. Handlers build an ApiError for every expected failure (bad request, bad
// key, full queue); a Status crossing in from a lower layer is mapped by FromStatus.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace cleave::server {

struct ApiError {
  int http_status = 0;  // 0: no error
  std::string message;
  std::string type;   // "invalid_request_error", "authentication_error", ...
  std::string param;  // the offending request field, or "" (null in JSON)
  std::string code;   // "context_length_exceeded", "invalid_api_key", ... or "" (null)
  nlohmann::json extra = nlohmann::json::object();  // further fields inside "error"

  bool ok() const { return http_status == 0; }
  // {"error": {...}}
  nlohmann::json ToJson() const;
  std::string ToJsonString() const;
};

// 400 invalid_request_error naming `param`.
ApiError BadRequest(std::string message, std::string param = "", std::string code = "");
ApiError Unauthorized();
ApiError NotFoundError(std::string message, std::string code = "");
// 413: the body is larger than the server accepts.
ApiError PayloadTooLarge(size_t limit_bytes);
// 429 (queue full; retry later) or 503 (draining, loading, engine failed).
ApiError Overloaded(std::string message);
ApiError ServiceUnavailable(std::string message);
ApiError InternalError(std::string message);
// 400 with OpenAI's wording and llama.cpp's n_prompt_tokens / n_ctx fields.
ApiError ContextLengthExceeded(int64_t max_model_len, int64_t prompt_tokens,
                               int64_t completion_tokens, std::string_view param);

// The error for an HTTP status we did not produce ourselves (404 route, 413 from the HTTP
// library, 400 malformed request line, ...).
ApiError ErrorForHttpStatus(int http_status);
// Maps a lower layer's Status: kInvalidArgument/kOutOfRange -> 400, kNotFound -> 404,
// kUnauthenticated -> 401, kResourceExhausted -> 429, kUnavailable/kFailedPrecondition -> 503,
// kUnimplemented -> 400 (valid JSON, unsupported feature), everything else -> 500.
ApiError FromStatus(const Status& status, std::string param = "");

// Serialises JSON for the wire: invalid UTF-8 (e.g. a token that is half a character) is
// replaced by U+FFFD rather than throwing.
std::string DumpJson(const nlohmann::json& j);

}  // namespace cleave::server
