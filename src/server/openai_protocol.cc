#include "server/openai_protocol.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <set>

namespace cleave::server {

using nlohmann::json;

namespace {

std::string TypeName(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    case json::value_t::number_float:
      return "number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    default:
      return "value";
  }
}

// Reads typed, range-checked fields of one JSON object; the first failure is kept in error().
class FieldReader {
 public:
  explicit FieldReader(const json& body) : body_(body) {}

  bool ok() const { return error_.ok(); }
  const ApiError& error() const { return error_; }
  void Fail(ApiError e) {
    if (error_.ok()) error_ = std::move(e);
  }

  // Present and not null.
  bool Has(const char* key) const {
    auto it = body_.find(key);
    return it != body_.end() && !it->is_null();
  }
  const json& Get(const char* key) const { return body_.at(key); }

  void Bool(const char* key, bool* out) {
    if (!ok() || !Has(key)) return;
    const json& v = Get(key);
    if (!v.is_boolean()) return TypeError(key, "a boolean", v);
    *out = v.get<bool>();
  }

  void String(const char* key, std::string* out) {
    if (!ok() || !Has(key)) return;
    const json& v = Get(key);
    if (!v.is_string()) return TypeError(key, "a string", v);
    *out = v.get<std::string>();
  }

  // An integer in [lo, hi]; integral floats (5.0) are accepted.
  template <typename T>
  void Int(const char* key, int64_t lo, int64_t hi, T* out) {
    if (!ok() || !Has(key)) return;
    int64_t value = 0;
    if (!ToInt(key, Get(key), lo, hi, &value)) return;
    *out = static_cast<T>(value);
  }
  template <typename T>
  void Int(const char* key, int64_t lo, int64_t hi, std::optional<T>* out) {
    if (!ok() || !Has(key)) return;
    int64_t value = 0;
    if (!ToInt(key, Get(key), lo, hi, &value)) return;
    *out = static_cast<T>(value);
  }

  bool ToInt(std::string_view name, const json& v, int64_t lo, int64_t hi, int64_t* out) {
    if (v.is_number_integer() && !v.is_number_unsigned()) {
      *out = v.get<int64_t>();
    } else if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        RangeError(name, fmt::format("[{}, {}]", lo, hi), fmt::format("{}", u));
        return false;
      }
      *out = static_cast<int64_t>(u);
    } else if (v.is_number_float()) {
      double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || d < -9.2e18 || d > 9.2e18) {
        TypeError(name, "an integer", v);
        return false;
      }
      *out = static_cast<int64_t>(d);
    } else {
      TypeError(name, "an integer", v);
      return false;
    }
    if (*out < lo || *out > hi) {
      RangeError(name, fmt::format("[{}, {}]", lo, hi), fmt::format("{}", *out));
      return false;
    }
    return true;
  }

  // A finite number in the interval; open ends are exclusive.
  void Number(const char* key, double lo, double hi, bool lo_open, bool hi_open, float* out) {
    if (!ok() || !Has(key)) return;
    const json& v = Get(key);
    if (!v.is_number()) return TypeError(key, "a number", v);
    const double d = v.get<double>();
    const bool below = lo_open ? !(d > lo) : !(d >= lo);
    const bool above = hi_open ? !(d < hi) : !(d <= hi);
    if (!std::isfinite(d) || below || above) {
      return RangeError(key,
                        fmt::format("{}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]"),
                        fmt::format("{}", d));
    }
    *out = static_cast<float>(d);
  }

  void TypeError(std::string_view name, std::string_view expected, const json& got) {
    Fail(BadRequest(fmt::format("'{}' must be {}, got {}.", name, expected, TypeName(got)),
                    std::string(name)));
  }
  void RangeError(std::string_view name, std::string_view range, std::string_view got) {
    Fail(BadRequest(fmt::format("'{}' must be in {}, got {}.", name, range, got),
                    std::string(name)));
  }

 private:
  const json& body_;
  ApiError error_;
};

// The request fields both endpoints accept (ReadCommon and ReadLengths read them), plus `extra`.
std::set<std::string_view> WithCommonFields(std::initializer_list<std::string_view> extra) {
  std::set<std::string_view> known = {"model",
                                      "max_tokens",
                                      "temperature",
                                      "top_p",
                                      "top_k",
                                      "min_p",
                                      "n",
                                      "stop",
                                      "seed",
                                      "presence_penalty",
                                      "frequency_penalty",
                                      "repetition_penalty",
                                      "logit_bias",
                                      "logprobs",
                                      "ignore_eos",
                                      "min_tokens",
                                      "stream",
                                      "stream_options",
                                      "user",
                                      "stop_token_ids",
                                      "skip_special_tokens"};
  known.insert(extra.begin(), extra.end());
  return known;
}

ApiError CheckKnownFields(const json& body, const std::set<std::string_view>& known) {
  std::vector<std::string> unknown;
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (!known.count(it.key())) unknown.push_back(it.key());
  }
  if (unknown.empty()) return {};
  std::string list;
  for (const std::string& k : unknown) list += fmt::format("{}'{}'", list.empty() ? "" : ", ", k);
  return BadRequest(
      fmt::format("Unsupported parameter{}: {}.", unknown.size() > 1 ? "s" : "", list),
      unknown.front(), "unsupported_parameter");
}

// Fields both APIs share, read into out->params and friends.
void ReadCommon(FieldReader& r, const json& body, const ProtocolLimits& limits, ApiRequest* out) {
  SamplingParams& p = out->params;
  r.String("model", &out->model);
  r.String("user", &out->user);
  r.Number("temperature", 0.0, 2.0, false, false, &p.temperature);
  r.Number("top_p", 0.0, 1.0, true, false, &p.top_p);
  r.Int("top_k", -1, std::numeric_limits<int32_t>::max(), &p.top_k);
  if (p.top_k < 0) p.top_k = 0;
  r.Number("min_p", 0.0, 1.0, false, false, &p.min_p);
  r.Number("presence_penalty", -2.0, 2.0, false, false, &p.presence_penalty);
  r.Number("frequency_penalty", -2.0, 2.0, false, false, &p.frequency_penalty);
  r.Number("repetition_penalty", 0.0, 10.0, true, false, &p.repetition_penalty);
  r.Int("n", 1, limits.max_n, &out->n);
  r.Bool("ignore_eos", &p.ignore_eos);
  r.Bool("skip_special_tokens", &p.skip_special_tokens);
  r.Bool("stream", &out->stream);
  if (r.ok() && r.Has("seed")) {
    int64_t seed = 0;
    if (r.ToInt("seed", body.at("seed"), std::numeric_limits<int64_t>::min(),
                std::numeric_limits<int64_t>::max(), &seed)) {
      p.seed = static_cast<uint64_t>(seed);
    }
  }
  if (r.ok() && r.Has("stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) return r.TypeError("stream_options", "an object", so);
    if (!out->stream) {
      return r.Fail(
          BadRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options"));
    }
    ApiError e = CheckKnownFields(so, {"include_usage"});
    if (!e.ok()) {
      e.param = "stream_options." + e.param;
      return r.Fail(e);
    }
    FieldReader sr(so);
    sr.Bool("include_usage", &out->include_usage);
    if (!sr.ok()) {
      ApiError se = sr.error();
      se.param = "stream_options." + se.param;
      return r.Fail(se);
    }
  }
  if (r.ok() && r.Has("stop")) {
    const json& stop = body.at("stop");
    if (stop.is_string()) {
      p.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& s : stop) {
        if (!s.is_string()) return r.TypeError("stop", "a string or an array of strings", stop);
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      return r.TypeError("stop", "a string or an array of strings", stop);
    }
    if (static_cast<int32_t>(p.stop.size()) > limits.max_stop) {
      return r.RangeError("stop", fmt::format("at most {} strings", limits.max_stop),
                          fmt::format("{}", p.stop.size()));
    }
    for (const std::string& s : p.stop) {
      if (static_cast<int32_t>(s.size()) > limits.max_stop_bytes) {
        return r.Fail(BadRequest(
            fmt::format("Each 'stop' string must be at most {} bytes.", limits.max_stop_bytes),
            "stop"));
      }
    }
  }
  if (r.ok() && r.Has("stop_token_ids")) {
    const json& ids = body.at("stop_token_ids");
    if (!ids.is_array()) return r.TypeError("stop_token_ids", "an array of integers", ids);
    if (ids.size() > 64) return r.RangeError("stop_token_ids", "at most 64 ids", "more");
    for (const json& id : ids) {
      int64_t v = 0;
      if (!r.ToInt("stop_token_ids", id, 0, limits.vocab_size - 1, &v)) return;
      p.stop_token_ids.push_back(static_cast<TokenId>(v));
    }
  }
  if (r.ok() && r.Has("logit_bias")) {
    const json& bias = body.at("logit_bias");
    if (!bias.is_object()) return r.TypeError("logit_bias", "an object", bias);
    if (static_cast<int32_t>(bias.size()) > limits.max_logit_bias) {
      return r.RangeError("logit_bias", fmt::format("at most {} entries", limits.max_logit_bias),
                          fmt::format("{}", bias.size()));
    }
    for (auto it = bias.begin(); it != bias.end(); ++it) {
      const std::string& key = it.key();
      int64_t id = -1;
      auto [ptr, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (ec != std::errc() || ptr != key.data() + key.size() || id < 0 ||
          id >= limits.vocab_size) {
        return r.Fail(
            BadRequest(fmt::format("'logit_bias' keys must be token ids in [0, {}], got '{}'.",
                                   limits.vocab_size - 1, key),
                       "logit_bias"));
      }
      const json& v = it.value();
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < -100.0 ||
          v.get<double>() > 100.0) {
        return r.Fail(BadRequest(
            fmt::format("'logit_bias' values must be numbers in [-100, 100] (token {}).", key),
            "logit_bias"));
      }
      p.logit_bias.emplace_back(static_cast<TokenId>(id), v.get<float>());
    }
  }
}

// Reads max_tokens / max_completion_tokens and min_tokens, after ReadCommon.
void ReadLengths(FieldReader& r, const ProtocolLimits& limits, bool chat, ApiRequest* out) {
  if (chat && r.Has("max_completion_tokens")) {
    r.Int("max_completion_tokens", 1, limits.max_tokens, &out->max_tokens);
    out->max_tokens_param = "max_completion_tokens";
  } else {
    r.Int("max_tokens", 1, limits.max_tokens, &out->max_tokens);
  }
  const int64_t min_hi = out->max_tokens.value_or(limits.max_tokens);
  r.Int("min_tokens", 0, min_hi, &out->params.min_tokens);
}

std::string MessagePath(size_t i, std::string_view field) {
  return fmt::format("messages[{}].{}", i, field);
}

// Validates messages and normalises them for the chat template: developer -> system, content
// parts joined into one string (vLLM joins text parts with "\n"), null content -> "".
ApiError NormalizeMessages(const json& messages, json* out) {
  if (!messages.is_array()) {
    return BadRequest(fmt::format("'messages' must be an array, got {}.", TypeName(messages)),
                      "messages");
  }
  if (messages.empty()) return BadRequest("'messages' must not be empty.", "messages");
  *out = json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    if (!m.is_object()) {
      return BadRequest(fmt::format("messages[{}] must be an object.", i),
                        fmt::format("messages[{}]", i));
    }
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (it.key() != "role" && it.key() != "content" && it.key() != "name") {
        return BadRequest(fmt::format("Unsupported field '{}' in messages[{}].", it.key(), i),
                          MessagePath(i, it.key()), "unsupported_parameter");
      }
    }
    auto role_it = m.find("role");
    if (role_it == m.end() || !role_it->is_string()) {
      return BadRequest(fmt::format("messages[{}].role must be a string.", i),
                        MessagePath(i, "role"));
    }
    std::string role = role_it->get<std::string>();
    static const std::set<std::string_view> kRoles = {"system", "developer", "user", "assistant",
                                                      "tool"};
    if (!kRoles.count(role)) {
      return BadRequest(
          fmt::format("messages[{}].role must be one of system, developer, user, assistant, tool; "
                      "got '{}'.",
                      i, role),
          MessagePath(i, "role"));
    }
    if (role == "developer") role = "system";
    std::string content;
    auto content_it = m.find("content");
    if (content_it == m.end() || content_it->is_null()) {
      if (role != "assistant") {
        return BadRequest(fmt::format("messages[{}].content is required.", i),
                          MessagePath(i, "content"));
      }
    } else if (content_it->is_string()) {
      content = content_it->get<std::string>();
    } else if (content_it->is_array()) {
      for (size_t j = 0; j < content_it->size(); ++j) {
        const json& part = (*content_it)[j];
        const std::string path = fmt::format("messages[{}].content[{}]", i, j);
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
          return BadRequest(path + " must be an object with a 'type'.", path);
        }
        if (part["type"] != "text") {
          return BadRequest(fmt::format("Content part type '{}' is not supported; only 'text' is.",
                                        part["type"].get<std::string>()),
                            path + ".type");
        }
        if (!part.contains("text") || !part["text"].is_string()) {
          return BadRequest(path + ".text must be a string.", path + ".text");
        }
        if (j > 0) content += "\n";
        content += part["text"].get<std::string>();
      }
    } else {
      return BadRequest(fmt::format("messages[{}].content must be a string or an array of text "
                                    "parts, got {}.",
                                    i, TypeName(*content_it)),
                        MessagePath(i, "content"));
    }
    json msg = {{"role", role}, {"content", content}};
    if (m.contains("name")) {
      if (!m["name"].is_string()) {
        return BadRequest(fmt::format("messages[{}].name must be a string.", i),
                          MessagePath(i, "name"));
      }
      msg["name"] = m["name"];
    }
    out->push_back(std::move(msg));
  }
  return {};
}

ApiError ReadTokenIds(const json& arr, int32_t vocab_size, std::vector<TokenId>* out) {
  for (const json& v : arr) {
    if (!v.is_number_integer()) {
      return BadRequest("'prompt' token ids must be integers.", "prompt");
    }
    if (v.is_number_unsigned() ? v.get<uint64_t>() >= uint64_t(vocab_size)
                               : (v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size)) {
      return BadRequest(
          fmt::format("'prompt' token ids must be in [0, {}], got {}.", vocab_size - 1, v.dump()),
          "prompt");
    }
    out->push_back(static_cast<TokenId>(v.get<int64_t>()));
  }
  return {};
}

ApiError ReadPrompts(const json& prompt, int32_t vocab_size, std::vector<ApiPrompt>* out) {
  const char* kShape =
      "'prompt' must be a string, an array of strings, an array of token ids or "
      "an array of token id arrays.";
  if (prompt.is_string()) {
    out->push_back({false, prompt.get<std::string>(), {}});
    return {};
  }
  if (!prompt.is_array() || prompt.empty()) return BadRequest(kShape, "prompt");
  if (prompt[0].is_string()) {
    for (const json& p : prompt) {
      if (!p.is_string()) return BadRequest(kShape, "prompt");
      out->push_back({false, p.get<std::string>(), {}});
    }
  } else if (prompt[0].is_number()) {
    ApiPrompt p{true, {}, {}};
    ApiError e = ReadTokenIds(prompt, vocab_size, &p.tokens);
    if (!e.ok()) return e;
    out->push_back(std::move(p));
  } else if (prompt[0].is_array()) {
    for (const json& ids : prompt) {
      if (!ids.is_array() || ids.empty()) return BadRequest(kShape, "prompt");
      ApiPrompt p{true, {}, {}};
      ApiError e = ReadTokenIds(ids, vocab_size, &p.tokens);
      if (!e.ok()) return e;
      out->push_back(std::move(p));
    }
  } else {
    return BadRequest(kShape, "prompt");
  }
  return {};
}

ApiError CheckChoices(const ApiRequest& r, const ProtocolLimits& limits) {
  const int64_t prompts = r.kind == ApiKind::kChat ? 1 : int64_t(r.prompts.size());
  if (prompts * r.n > limits.max_choices) {
    return BadRequest(fmt::format("n times the number of prompts must be at most {}, got {}.",
                                  limits.max_choices, prompts * r.n),
                      r.kind == ApiKind::kChat ? "n" : "prompt");
  }
  return {};
}

}  // namespace

ApiError ParseJsonBody(std::string_view body, int32_t max_depth, json* out) {
  // A linear pre-scan bounds nesting before nlohmann builds (and recursively destroys) a DOM.
  int32_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return BadRequest(fmt::format("JSON nesting exceeds the limit of {} levels.", max_depth));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  *out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    // Parse again with exceptions for a message that says where (the body is small; errors are
    // rare).
    try {
      json unused = json::parse(body);
      (void)unused;
    } catch (const json::exception& e) {
      return BadRequest(fmt::format("Invalid JSON body: {}", e.what()));
    }
    return BadRequest("Invalid JSON body.");
  }
  if (!out->is_object()) return BadRequest("The request body must be a JSON object.");
  return {};
}

ApiError ParseChatRequest(const json& body, const ProtocolLimits& limits, ApiRequest* out) {
  *out = ApiRequest{};
  out->kind = ApiKind::kChat;
  if (!body.is_object()) return BadRequest("The request body must be a JSON object.");
  static const std::set<std::string_view> kKnown =
      WithCommonFields({"messages", "max_completion_tokens", "top_logprobs",
                        "add_generation_prompt", "chat_template_kwargs", "response_format"});
  ApiError e = CheckKnownFields(body, kKnown);
  if (!e.ok()) return e;
  if (!body.contains("messages")) return BadRequest("'messages' is required.", "messages");
  e = NormalizeMessages(body.at("messages"), &out->messages);
  if (!e.ok()) return e;

  FieldReader r(body);
  ReadCommon(r, body, limits, out);
  ReadLengths(r, limits, /*chat=*/true, out);
  r.Bool("logprobs", &out->logprobs);
  int32_t top_logprobs = 0;
  r.Int("top_logprobs", 0, limits.max_logprobs, &top_logprobs);
  if (r.ok() && r.Has("top_logprobs") && !out->logprobs) {
    r.Fail(BadRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs"));
  }
  out->params.logprobs = out->logprobs ? top_logprobs : -1;
  r.Bool("add_generation_prompt", &out->add_generation_prompt);
  if (r.ok() && r.Has("chat_template_kwargs")) {
    if (!body.at("chat_template_kwargs").is_object()) {
      r.TypeError("chat_template_kwargs", "an object", body.at("chat_template_kwargs"));
    } else {
      out->chat_template_kwargs = body.at("chat_template_kwargs");
    }
  }
  if (r.ok() && r.Has("response_format")) {
    const json& rf = body.at("response_format");
    if (!rf.is_object() || rf.value("type", json()) != "text") {
      r.Fail(BadRequest("Only response_format {\"type\": \"text\"} is supported.",
                        "response_format", "unsupported_parameter"));
    }
  }
  if (!r.ok()) return r.error();
  return CheckChoices(*out, limits);
}

ApiError ParseCompletionRequest(const json& body, const ProtocolLimits& limits, ApiRequest* out) {
  *out = ApiRequest{};
  out->kind = ApiKind::kCompletion;
  if (!body.is_object()) return BadRequest("The request body must be a JSON object.");
  static const std::set<std::string_view> kKnown =
      WithCommonFields({"prompt", "echo", "add_special_tokens"});
  ApiError e = CheckKnownFields(body, kKnown);
  if (!e.ok()) return e;
  if (!body.contains("prompt") || body.at("prompt").is_null()) {
    return BadRequest("'prompt' is required.", "prompt");
  }
  e = ReadPrompts(body.at("prompt"), limits.vocab_size, &out->prompts);
  if (!e.ok()) return e;

  FieldReader r(body);
  ReadCommon(r, body, limits, out);
  out->max_tokens = std::min<int32_t>(16, limits.max_tokens);  // OpenAI's and vLLM's default
  ReadLengths(r, limits, /*chat=*/false, out);
  if (r.ok() && r.Has("logprobs")) {
    int32_t k = 0;
    r.Int("logprobs", 0, limits.max_logprobs, &k);
    out->logprobs = true;
    out->params.logprobs = k;
  }
  r.Bool("echo", &out->echo);
  r.Bool("add_special_tokens", &out->add_special_tokens);
  if (r.ok() && out->echo && out->logprobs) {
    r.Fail(BadRequest("'echo' together with 'logprobs' (prompt logprobs) is not supported.", "echo",
                      "unsupported_parameter"));
  }
  if (!r.ok()) return r.error();
  return CheckChoices(*out, limits);
}

// ---- responses -------------------------------------------------------------------------------

namespace {

double SafeLogprob(float lp) {
  return std::isfinite(lp) ? double(lp) : -9999.0;
}

json BytesArray(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

json ChoiceLogprobs(ApiKind kind, std::span<const TokenId> tokens,
                    std::span<const TokenLogprobs> logprobs, const TokenTextFn& text,
                    int64_t offset) {
  if (kind == ApiKind::kChat) return ChatLogprobs(tokens, logprobs, text);
  return CompletionLogprobs(tokens, logprobs, text, offset);
}

json FinishJson(const std::string& reason) {
  return reason.empty() ? json(nullptr) : json(reason);
}

}  // namespace

json Usage::ToJson() const {
  json u = {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  u["prompt_tokens_details"] = {{"cached_tokens", cached_tokens}};
  return u;
}

std::string ApiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kNone:
      return "";
    default:
      return "error";
  }
}

json ChatLogprobs(std::span<const TokenId> tokens, std::span<const TokenLogprobs> logprobs,
                  const TokenTextFn& text) {
  json content = json::array();
  for (size_t i = 0; i < tokens.size() && i < logprobs.size(); ++i) {
    const std::string s = text(tokens[i]);
    json top = json::array();
    for (const TokenLogprob& t : logprobs[i].top) {
      const std::string ts = text(t.token);
      top.push_back(
          {{"token", ts}, {"logprob", SafeLogprob(t.logprob)}, {"bytes", BytesArray(ts)}});
    }
    content.push_back({{"token", s},
                       {"logprob", SafeLogprob(logprobs[i].logprob)},
                       {"bytes", BytesArray(s)},
                       {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}

json CompletionLogprobs(std::span<const TokenId> tokens, std::span<const TokenLogprobs> logprobs,
                        const TokenTextFn& text, int64_t text_offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  int64_t offset = text_offset;
  for (size_t i = 0; i < tokens.size() && i < logprobs.size(); ++i) {
    const std::string s = text(tokens[i]);
    toks.push_back(s);
    lps.push_back(SafeLogprob(logprobs[i].logprob));
    json top = json::object();
    top[s] = SafeLogprob(logprobs[i].logprob);  // vLLM: the sampled token is always listed
    for (const TokenLogprob& t : logprobs[i].top) top[text(t.token)] = SafeLogprob(t.logprob);
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += static_cast<int64_t>(s.size());
  }
  return json{{"tokens", std::move(toks)},
              {"token_logprobs", std::move(lps)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

json ChatResponse(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices,
                  const Usage& usage, bool with_logprobs, const TokenTextFn& text) {
  json cs = json::array();
  for (const ChoiceResult& c : choices) {
    cs.push_back(
        {{"index", c.index},
         {"message", {{"role", "assistant"}, {"content", c.text}}},
         {"logprobs", with_logprobs ? ChatLogprobs(c.token_ids, c.logprobs, text) : json()},
         {"finish_reason", FinishJson(c.finish_reason)},
         {"stop_reason", c.stop_reason.empty() ? json() : json(c.stop_reason)}});
  }
  return json{{"id", meta.id},       {"object", "chat.completion"}, {"created", meta.created},
              {"model", meta.model}, {"choices", std::move(cs)},    {"usage", usage.ToJson()}};
}

json CompletionResponse(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices,
                        const Usage& usage, bool with_logprobs, const TokenTextFn& text) {
  json cs = json::array();
  for (const ChoiceResult& c : choices) {
    cs.push_back({{"index", c.index},
                  {"text", c.text},
                  {"logprobs",
                   with_logprobs ? CompletionLogprobs(c.token_ids, c.logprobs, text, 0) : json()},
                  {"finish_reason", FinishJson(c.finish_reason)},
                  {"stop_reason", c.stop_reason.empty() ? json() : json(c.stop_reason)}});
  }
  return json{{"id", meta.id},       {"object", "text_completion"}, {"created", meta.created},
              {"model", meta.model}, {"choices", std::move(cs)},    {"usage", usage.ToJson()}};
}

json ChatChunk(const ResponseMeta& meta, const ChunkDelta& d, bool with_logprobs,
               const TokenTextFn& text) {
  json delta = json::object();
  if (d.first) delta["role"] = "assistant";
  if (!d.text.empty() || d.first) delta["content"] = d.text;
  json choice = {{"index", d.index},
                 {"delta", std::move(delta)},
                 {"logprobs", with_logprobs && !d.token_ids.empty()
                                  ? ChoiceLogprobs(ApiKind::kChat, d.token_ids, d.logprobs, text, 0)
                                  : json()},
                 {"finish_reason", FinishJson(d.finish_reason)}};
  if (!d.stop_reason.empty()) choice["stop_reason"] = d.stop_reason;
  return json{{"id", meta.id},
              {"object", "chat.completion.chunk"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", json::array({std::move(choice)})}};
}

json CompletionChunk(const ResponseMeta& meta, const ChunkDelta& d, bool with_logprobs,
                     const TokenTextFn& text) {
  json choice = {{"index", d.index},
                 {"text", d.text},
                 {"logprobs", with_logprobs && !d.token_ids.empty()
                                  ? ChoiceLogprobs(ApiKind::kCompletion, d.token_ids, d.logprobs,
                                                   text, d.text_offset)
                                  : json()},
                 {"finish_reason", FinishJson(d.finish_reason)}};
  if (!d.stop_reason.empty()) choice["stop_reason"] = d.stop_reason;
  return json{{"id", meta.id},
              {"object", "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", json::array({std::move(choice)})}};
}

json UsageChunk(const ResponseMeta& meta, ApiKind kind, const Usage& usage) {
  return json{{"id", meta.id},
              {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", json::array()},
              {"usage", usage.ToJson()}};
}

std::string SseEvent(const json& j) {
  return "data: " + DumpJson(j) + "\n\n";
}

namespace {

// Appends s as a JSON string literal, exactly as DumpJson writes it. ASCII is escaped here
// (the same escapes nlohmann::json uses: \" \\ \b \f \n \r \t, other control characters
// as lowercase \u00xx); anything else goes through DumpJson, which owns the UTF-8 checks and
// the replacement of invalid bytes.
void AppendJsonString(std::string_view s, std::string* out) {
  for (unsigned char c : s) {
    if (c >= 0x80) {
      out->append(DumpJson(json(s)));
      return;
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xf]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace

SseChunkWriter::SseChunkWriter(const ResponseMeta& meta, ApiKind kind, bool with_logprobs,
                               TokenTextFn text)
    : meta_(meta), kind_(kind), with_logprobs_(with_logprobs), text_(std::move(text)) {
  // nlohmann::json objects keep their keys sorted: choices, created, id, model, object.
  tail_ = fmt::format("],\"created\":{},\"id\":{},\"model\":{},\"object\":{}}}\n\n", meta.created,
                      DumpJson(json(meta.id)), DumpJson(json(meta.model)),
                      kind == ApiKind::kChat ? "\"chat.completion.chunk\"" : "\"text_completion\"");
}

void SseChunkWriter::Append(const ChunkDelta& d, std::string* out) const {
  if (with_logprobs_ && !d.token_ids.empty()) {
    out->append(SseEvent(kind_ == ApiKind::kChat
                             ? ChatChunk(meta_, d, with_logprobs_, text_)
                             : CompletionChunk(meta_, d, with_logprobs_, text_)));
    return;
  }
  // The choice's keys, sorted: (delta,) finish_reason, index, logprobs, stop_reason, (text).
  out->append("data: {\"choices\":[{");
  if (kind_ == ApiKind::kChat) {
    out->append("\"delta\":{");
    const bool content = !d.text.empty() || d.first;
    if (content) {
      out->append("\"content\":");
      AppendJsonString(d.text, out);
    }
    if (d.first) out->append(content ? ",\"role\":\"assistant\"" : "\"role\":\"assistant\"");
    out->append("},");
  }
  out->append("\"finish_reason\":");
  if (d.finish_reason.empty()) {
    out->append("null");
  } else {
    AppendJsonString(d.finish_reason, out);
  }
  out->append(",\"index\":");
  out->append(fmt::format_int(d.index).c_str());
  out->append(",\"logprobs\":null");
  if (!d.stop_reason.empty()) {
    out->append(",\"stop_reason\":");
    AppendJsonString(d.stop_reason, out);
  }
  if (kind_ == ApiKind::kCompletion) {
    out->append(",\"text\":");
    AppendJsonString(d.text, out);
  }
  out->append("}");
  out->append(tail_);
}

}  // namespace cleave::server
