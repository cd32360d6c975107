// Real chat templates (tests/fixtures/chat_templates/*.jinja) rendered by cleave's engine must
// equal Python jinja2's rendering under HF's settings (expected.json, written by
// tests/reference/make_chat_template_fixture.py) byte for byte, and fail where Python fails.
#include "model/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tests/testing/paths.h"

namespace cleave {
namespace {

using ojson = nlohmann::ordered_json;

std::string FixtureDir() {
  return testing::SourceDir() + "/tests/fixtures/chat_templates";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const ojson& Expected() {
  static const ojson* expected = [] {
    std::string text = ReadFile(FixtureDir() + "/expected.json");
    return new ojson(text.empty() ? ojson() : ojson::parse(text));
  }();
  return *expected;
}

TEST(ChatTemplateFixture, RealTemplatesMatchPythonJinja2) {
  const ojson& expected = Expected();
  ASSERT_TRUE(expected.is_object()) << "missing " << FixtureDir() << "/expected.json";
  ASSERT_GE(expected["cases"].size(), 40u);
  int checked = 0;
  for (const auto& c : expected["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::string source = ReadFile(FixtureDir() + "/" + c["template"].get<std::string>());
    ASSERT_FALSE(source.empty());
    Result<ChatTemplate> tmpl = ChatTemplate::Parse(source);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
    ChatRenderOptions options;
    options.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    options.bos_token = c["bos_token"].get<std::string>();
    options.eos_token = c["eos_token"].get<std::string>();
    options.ordered_extra_context = c["extra_context"];
    options.now_unix_seconds = expected["fixed_now_unix_seconds"].get<int64_t>();
    Result<std::string> out = tmpl->Render(c["messages"], options);
    if (c["error"].is_null()) {
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      EXPECT_EQ(*out, c["expected"].get<std::string>());
    } else {
      ASSERT_FALSE(out.ok()) << "expected an error, got: " << *out;
      if (c["error"]["type"] == "TemplateError") {  // raise_exception(): same message
        EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
        EXPECT_EQ(out.status().message(), c["error"]["message"].get<std::string>());
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(expected["cases"].size()));
}

TEST(ChatTemplate, ChatMLRendersConversation) {
  ChatTemplate chatml = ChatTemplate::ChatML();
  ChatRenderOptions options;
  Result<std::string> out =
      chatml.Render(std::vector<ChatMessage>{{"system", "S"}, {"user", "U"}}, options);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
            "<|im_start|>assistant\n");
  options.add_generation_prompt = false;
  out = chatml.Render(std::vector<ChatMessage>{{"user", "U"}}, options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "<|im_start|>user\nU<|im_end|>\n");
}

TEST(ChatTemplate, ParseErrorReportsLineAndColumn) {
  Result<ChatTemplate> t = ChatTemplate::Parse("ok\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("line 3, column"), std::string::npos) << t.status().message();
  Result<ChatTemplate> unclosed = ChatTemplate::Parse("{% for m in messages %}x");
  ASSERT_FALSE(unclosed.ok());
  EXPECT_NE(unclosed.status().message().find("endfor"), std::string::npos);
  EXPECT_FALSE(ChatTemplate::Parse("{{ 'unterminated }}").ok());
  EXPECT_FALSE(ChatTemplate::Parse("{% unknown_tag %}").ok());
}

TEST(ChatTemplate, BrokenTemplateFallsBackToChatML) {
  ChatTemplate t = ChatTemplate::FromGgufOrChatML("{% if %}broken");
  ChatTemplate empty = ChatTemplate::FromGgufOrChatML("");
  EXPECT_EQ(t.source(), ChatTemplate::ChatML().source());
  EXPECT_EQ(empty.source(), ChatTemplate::ChatML().source());
  ChatTemplate good = ChatTemplate::FromGgufOrChatML("{{ messages[0].content }}");
  EXPECT_EQ(good.source(), "{{ messages[0].content }}");
}

TEST(ChatTemplate, TextPartsAreFlattenedForStringOnlyTemplates) {
  // ChatML concatenates content with '+', which fails on a list; the retry joins text parts.
  ChatTemplate chatml = ChatTemplate::ChatML();
  nlohmann::json messages = nlohmann::json::parse(
      R"([{"role": "user", "content": [{"type": "text", "text": "a"},
                                        {"type": "text", "text": "b"}]}])");
  ChatRenderOptions options;
  options.add_generation_prompt = false;
  Result<std::string> out = chatml.Render(messages, options);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "<|im_start|>user\na\nb<|im_end|>\n");
  // A template that handles lists sees the list itself.
  Result<ChatTemplate> lister =
      ChatTemplate::Parse("{% for p in messages[0].content %}[{{ p.text }}]{% endfor %}");
  ASSERT_TRUE(lister.ok());
  out = lister->Render(messages, options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "[a][b]");
}

TEST(ChatTemplate, ExtraContextAndTools) {
  Result<ChatTemplate> t = ChatTemplate::Parse(
      "{{ bos_token }}{% if tools is none %}no tools{% else %}{{ tools|length }}{% endif %}"
      "|{{ date_string }}|{{ documents is none }}{{ eos_token }}");
  ASSERT_TRUE(t.ok());
  ChatRenderOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  Result<std::string> out = t->Render(nlohmann::json::array(), options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "<s>no tools||True</s>");
  options.extra_context = {{"tools", nlohmann::json::array({1, 2})}, {"date_string", "today"}};
  out = t->Render(nlohmann::json::array(), options);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "<s>2|today|True</s>");
  options.extra_context = nlohmann::json::array();
  EXPECT_FALSE(t->Render(nlohmann::json::array(), options).ok());
  EXPECT_FALSE(t->Render(nlohmann::json::object(), ChatRenderOptions()).ok());
}

TEST(ChatTemplate, LimitsAreResourceExhausted) {
  Result<ChatTemplate> t =
      ChatTemplate::Parse("{% for i in range(100000) %}{{ 'xxxxxxxxxxx' }}{% endfor %}");
  ASSERT_TRUE(t.ok());
  ChatRenderOptions options;
  options.max_output_bytes = 1 << 20;
  Result<std::string> out = t->Render(nlohmann::json::array(), options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
  options.max_output_bytes = 2 << 20;
  EXPECT_TRUE(t->Render(nlohmann::json::array(), options).ok());
}

}  // namespace
}  // namespace cleave
