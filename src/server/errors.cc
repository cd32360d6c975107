#include "server/errors.h"

#include <fmt/format.h>

namespace cleave::server {

using nlohmann::json;

namespace {

ApiError Make(int status, std::string message, std::string type, std::string param = "",
              std::string code = "") {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

}  // namespace

json ApiError::ToJson() const {
  json error = extra.is_object() ? extra : json::object();
  error["message"] = message;
  error["type"] = type;
  error["param"] = param.empty() ? json(nullptr) : json(param);
  error["code"] = code.empty() ? json(nullptr) : json(code);
  return json{{"error", std::move(error)}};
}

std::string ApiError::ToJsonString() const {
  return DumpJson(ToJson());
}

ApiError BadRequest(std::string message, std::string param, std::string code) {
  return Make(400, std::move(message), "invalid_request_error", std::move(param), std::move(code));
}

ApiError Unauthorized() {
  return Make(401, "Incorrect or missing API key (send 'Authorization: Bearer <key>').",
              "authentication_error", "", "invalid_api_key");
}

ApiError NotFoundError(std::string message, std::string code) {
  return Make(404, std::move(message), "not_found_error", "", std::move(code));
}

ApiError PayloadTooLarge(size_t limit_bytes) {
  return Make(413, fmt::format("Request body exceeds the limit of {} bytes.", limit_bytes),
              "invalid_request_error", "", "request_too_large");
}

ApiError Overloaded(std::string message) {
  return Make(429, std::move(message), "rate_limit_error", "", "queue_full");
}

ApiError ServiceUnavailable(std::string message) {
  return Make(503, std::move(message), "unavailable_error", "", "service_unavailable");
}

ApiError InternalError(std::string message) {
  return Make(500, std::move(message), "server_error", "", "internal_error");
}

ApiError ContextLengthExceeded(int64_t max_model_len, int64_t prompt_tokens,
                               int64_t completion_tokens, std::string_view param) {
  ApiError e = BadRequest(
      fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                  "tokens ({} in the messages, {} in the completion). Please reduce the length "
                  "of the messages or completion.",
                  max_model_len, prompt_tokens + completion_tokens, prompt_tokens,
                  completion_tokens),
      std::string(param), "context_length_exceeded");
  e.extra = json{{"n_prompt_tokens", prompt_tokens}, {"n_ctx", max_model_len}};
  return e;
}

ApiError ErrorForHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return BadRequest("Malformed HTTP request.");
    case 401:
      return Unauthorized();
    case 404:
      return NotFoundError("Not found.", "not_found");
    case 405:
      return Make(405, "Method not allowed.", "invalid_request_error", "", "method_not_allowed");
    case 413:
      return Make(413, "Request body too large.", "invalid_request_error", "", "request_too_large");
    case 414:
      return Make(414, "Request URI too long.", "invalid_request_error", "", "uri_too_long");
    case 431:
      return Make(431, "Request headers too large or too many.", "invalid_request_error", "",
                  "headers_too_large");
    default:
      break;
  }
  if (http_status >= 400 && http_status < 500) {
    return Make(http_status, fmt::format("HTTP error {}.", http_status), "invalid_request_error");
  }
  return InternalError(fmt::format("HTTP error {}.", http_status));
}

ApiError FromStatus(const Status& status, std::string param) {
  switch (status.code()) {
    case StatusCode::kOk:
      return ApiError{};
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kUnimplemented:
    case StatusCode::kDataLoss:
      return BadRequest(status.message(), std::move(param));
    case StatusCode::kNotFound:
      return NotFoundError(status.message());
    case StatusCode::kUnauthenticated:
      return Unauthorized();
    case StatusCode::kResourceExhausted:
      return Overloaded(status.message());
    case StatusCode::kUnavailable:
    case StatusCode::kFailedPrecondition:
      return ServiceUnavailable(status.message());
    case StatusCode::kDeadlineExceeded:
      return Make(504, status.message(), "timeout_error");
    default:
      return InternalError(status.message());
  }
}

std::string DumpJson(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

}  // namespace cleave::server
