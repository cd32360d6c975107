// Chat templates: renders a GGUF's `tokenizer.chat_template` (a Jinja2 template) with cleave's
// own Jinja-subset engine, byte for byte as Python's jinja2 would. Rendering is bounded in
// recursion depth, output size and steps, so a hostile template cannot hang or exhaust us.
#pragma once

#include <memory>
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

  // `messages` is a JSON array of {"role", "content", ...} objects, as the OpenAI API sends them
  // (content may be a string or a list of {"type":"text","text":...} parts).
  Result<std::string> Render(const nlohmann::json& messages, const ChatRenderOptions& options) const;
  Result<std::string> Render(const std::vector<ChatMessage>& messages,
                             const ChatRenderOptions& options) const;

  const std::string& source() const;

 private:
  struct Impl;
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cleave
