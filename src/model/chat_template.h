// Chat templates: renders a GGUF's `tokenizer.chat_template` (a Jinja2 template) with cleave's
// own Jinja-subset engine, byte for byte as Python's jinja2 would under HF transformers'
// apply_chat_template (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// the `tojson` override, raise_exception and strftime_now). Rendering is bounded in recursion
// depth, output size and steps, so a hostile template cannot hang or exhaust us.
//
// Fallback: a template that fails to Parse is not fatal for a model. The model layer calls
// FromGgufOrChatML(), which logs a warning and uses ChatML instead.
//
// Errors from Render: kInvalidArgument for template errors (the message of raise_exception()
// verbatim, e.g. "Conversation roles must alternate user/assistant/user/assistant/..."; other
// errors carry "line N: "), kResourceExhausted when a limit is hit.
// Thread-safety: a ChatTemplate is immutable after Parse; Render may run concurrently.
//
// Key order: nlohmann::json sorts object keys; `tojson` prints keys in insertion order like
// Python, so pass nlohmann::ordered_json (messages and ordered_extra_context) to keep the
// client's order in tool schemas and tool-call arguments.
//
// Unsupported jinja2 features (error if used): call blocks, recursive loops, include/extends/
// import, *args/**kwargs in calls. str.upper/lower/title are ASCII-only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace cleave {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  std::string bos_token;
  std::string eos_token;
  // Further top-level variables (e.g. "tools", "date_string"); must be a JSON object or null.
  nlohmann::json extra_context;
  // Same as extra_context, keeping key order; applied after extra_context.
  nlohmann::ordered_json ordered_extra_context;
  // strftime_now()'s clock, as UTC seconds; unset: the current local time (as HF does).
  std::optional<int64_t> now_unix_seconds;
  // Limits: output size (and any single string or list built while rendering) and work.
  int64_t max_output_bytes = 4 << 20;
  int64_t max_steps = 2'000'000;
};

class ChatTemplate {
 public:
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Parses a Jinja template source; InvalidArgument with line/column on a syntax error.
  static Result<ChatTemplate> Parse(std::string_view source);
  // The ChatML template (<|im_start|>role\ncontent<|im_end|>\n), used as a fallback.
  static ChatTemplate ChatML();
  // The GGUF's template, or ChatML when `source` is empty or does not parse (logged as a
  // warning naming the parse error).
  static ChatTemplate FromGgufOrChatML(std::string_view source);

  // `messages` is a JSON array of {"role", "content", ...} objects, as the OpenAI API sends them
  // (content may be a string or a list of {"type":"text","text":...} parts).
  // Messages are passed to the template as they are (HF semantics). If rendering fails and some
  // content is a list of text parts only, it is retried once with each such list joined by
  // "\n" into a string (for templates that only handle string content).
  Result<std::string> Render(const nlohmann::json& messages,
                             const ChatRenderOptions& options) const;
  Result<std::string> Render(const nlohmann::ordered_json& messages,
                             const ChatRenderOptions& options) const;
  Result<std::string> Render(const std::vector<ChatMessage>& messages,
                             const ChatRenderOptions& options) const;

  const std::string& source() const;

 private:
  struct Impl;
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cleave
