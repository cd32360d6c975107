#include "model/chat_template.h"

#include <spdlog/spdlog.h>

#include "model/jinja_interpreter.h"
#include "model/jinja_parser.h"
#include "model/jinja_value.h"

namespace cleave {
namespace {

constexpr std::string_view kChatMLSource =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' "
    "}}{% endif %}";

Status ToStatus(const jinja::JinjaError& e) {
  switch (e.kind()) {
    case jinja::JinjaError::Kind::kLimit:
      return ResourceExhausted("chat template: {}", e.what());
    case jinja::JinjaError::Kind::kRaised:
      return Status(StatusCode::kInvalidArgument, e.what());
    case jinja::JinjaError::Kind::kTemplate:
      break;
  }
  return InvalidArgument("chat template: {}", e.what());
}

// Joins a content list made only of {"type": "text", "text": ...} parts; nullopt otherwise.
template <typename Json>
std::optional<std::string> JoinTextParts(const Json& content) {
  if (!content.is_array()) return std::nullopt;
  std::string joined;
  bool first = true;
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return std::nullopt;
    }
    if (!first) joined += "\n";
    first = false;
    joined += part["text"].template get<std::string>();
  }
  return joined;
}

}  // namespace

struct ChatTemplate::Impl {
  std::string source;
  jinja::Template tmpl;

  template <typename Json>
  Result<std::string> Render(const Json& messages, const ChatRenderOptions& options) const {
    if (!messages.is_array()) return InvalidArgument("chat template: messages must be an array");
    Result<std::string> first = RenderOnce(messages, options);
    if (first.ok() || first.status().code() != StatusCode::kInvalidArgument) return first;
    // Retry with text-part lists flattened, for templates that only handle string content.
    Json flattened = messages;
    bool changed = false;
    for (auto& m : flattened) {
      if (!m.is_object() || !m.contains("content")) continue;
      if (auto joined = JoinTextParts(m["content"])) {
        m["content"] = *joined;
        changed = true;
      }
    }
    if (!changed) return first;
    Result<std::string> second = RenderOnce(flattened, options);
    return second.ok() ? second : first;
  }

  template <typename Json>
  Result<std::string> RenderOnce(const Json& messages, const ChatRenderOptions& options) const {
    try {
      std::vector<std::pair<std::string, jinja::Value>> globals;
      globals.emplace_back("messages", jinja::Value::FromJson(messages));
      globals.emplace_back("add_generation_prompt",
                           jinja::Value::Bool(options.add_generation_prompt));
      globals.emplace_back("bos_token", jinja::Value::String(options.bos_token));
      globals.emplace_back("eos_token", jinja::Value::String(options.eos_token));
      // HF always passes these two; None unless the caller provides them.
      globals.emplace_back("tools", jinja::Value::None());
      globals.emplace_back("documents", jinja::Value::None());
      auto add_context = [&](const auto& ctx) {
        if (ctx.is_null()) return true;
        if (!ctx.is_object()) return false;
        for (auto it = ctx.begin(); it != ctx.end(); ++it) {
          globals.emplace_back(it.key(), jinja::Value::FromJson(it.value()));
        }
        return true;
      };
      if (!add_context(options.extra_context) || !add_context(options.ordered_extra_context)) {
        return InvalidArgument("chat template: extra_context must be a JSON object");
      }
      jinja::RenderLimits limits;
      limits.max_output_bytes = options.max_output_bytes;
      limits.max_steps = options.max_steps;
      jinja::Interpreter interpreter(limits);
      interpreter.fixed_now_unix_seconds = options.now_unix_seconds;
      return interpreter.Render(tmpl, globals);
    } catch (const jinja::JinjaError& e) {
      return ToStatus(e);
    }
  }
};

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

Result<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::string(source);
  try {
    impl->tmpl = jinja::ParseTemplate(source);
  } catch (const jinja::JinjaError& e) {
    return InvalidArgument("chat template: {}", e.what());
  }
  return ChatTemplate(std::move(impl));
}

ChatTemplate ChatTemplate::ChatML() {
  Result<ChatTemplate> t = Parse(kChatMLSource);
  CLEAVE_CHECK(t.ok(), "ChatML template must parse: {}", t.status().ToString());
  return std::move(t).value();
}

ChatTemplate ChatTemplate::FromGgufOrChatML(std::string_view source) {
  if (source.empty()) {
    spdlog::warn("model has no chat template; using ChatML");
    return ChatML();
  }
  Result<ChatTemplate> t = Parse(source);
  if (!t.ok()) {
    spdlog::warn("model's chat template does not parse ({}); using ChatML instead",
                 t.status().message());
    return ChatML();
  }
  return std::move(t).value();
}

Result<std::string> ChatTemplate::Render(const nlohmann::json& messages,
                                         const ChatRenderOptions& options) const {
  return impl_->Render(messages, options);
}

Result<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                         const ChatRenderOptions& options) const {
  return impl_->Render(messages, options);
}

Result<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                         const ChatRenderOptions& options) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& m : messages) {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    obj["role"] = m.role;
    obj["content"] = m.content;
    list.push_back(std::move(obj));
  }
  return impl_->Render(list, options);
}

const std::string& ChatTemplate::source() const {
  return impl_->source;
}

}  // namespace cleave
