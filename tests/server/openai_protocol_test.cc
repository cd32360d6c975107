// Request parsing/validation, error shapes and response/chunk JSON of the OpenAI protocol layer.
#include "server/openai_protocol.h"

#include <gtest/gtest.h>

#include <string>

#include "server/errors.h"
#include "server/metrics.h"

namespace cleave::server {
namespace {

using nlohmann::json;

ProtocolLimits Limits() {
  ProtocolLimits l;
  l.vocab_size = 1000;
  l.max_tokens = 2048;
  return l;
}

ApiError Chat(const json& body, ApiRequest* out = nullptr) {
  ApiRequest r;
  ApiError e = ParseChatRequest(body, Limits(), &r);
  if (out) *out = r;
  return e;
}

ApiError Completion(const json& body, ApiRequest* out = nullptr) {
  ApiRequest r;
  ApiError e = ParseCompletionRequest(body, Limits(), &r);
  if (out) *out = r;
  return e;
}

json Msgs() {
  return json::array({{{"role", "user"}, {"content", "hi"}}});
}

TEST(OpenAiProtocol, ChatDefaultsAndFields) {
  ApiRequest r;
  ASSERT_TRUE(Chat({{"model", "m"}, {"messages", Msgs()}}, &r).ok());
  EXPECT_EQ(r.kind, ApiKind::kChat);
  EXPECT_EQ(r.model, "m");
  EXPECT_FALSE(r.max_tokens.has_value());  // chat: up to the context
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.params.logprobs, -1);

  json body = {{"messages", Msgs()},
               {"max_completion_tokens", 7},
               {"temperature", 0},
               {"top_p", 0.5},
               {"top_k", 5},
               {"min_p", 0.1},
               {"n", 3},
               {"stop", "END"},
               {"seed", -5},
               {"presence_penalty", 1.5},
               {"frequency_penalty", -1},
               {"repetition_penalty", 1.1},
               {"logit_bias", {{"42", -100}}},
               {"logprobs", true},
               {"top_logprobs", 3},
               {"ignore_eos", true},
               {"min_tokens", 2},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"user", "u"}};
  ASSERT_TRUE(Chat(body, &r).ok()) << Chat(body).message;
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(r.max_tokens_param, "max_completion_tokens");
  EXPECT_EQ(r.params.temperature, 0.0f);
  EXPECT_EQ(r.params.top_k, 5);
  EXPECT_EQ(r.n, 3);
  ASSERT_EQ(r.params.stop.size(), 1u);
  EXPECT_EQ(r.params.stop[0], "END");
  EXPECT_EQ(*r.params.seed, static_cast<uint64_t>(int64_t{-5}));
  ASSERT_EQ(r.params.logit_bias.size(), 1u);
  EXPECT_EQ(r.params.logit_bias[0].first, 42);
  EXPECT_EQ(r.params.logit_bias[0].second, -100.0f);
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_TRUE(r.params.ignore_eos);
  EXPECT_EQ(r.params.min_tokens, 2);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiProtocol, NullMeansAbsent) {
  ApiRequest r;
  ASSERT_TRUE(Chat({{"messages", Msgs()}, {"temperature", nullptr}, {"stop", nullptr}}, &r).ok());
  EXPECT_EQ(r.params.temperature, 1.0f);
  EXPECT_TRUE(r.params.stop.empty());
}

TEST(OpenAiProtocol, MessagesNormalised) {
  ApiRequest r;
  json messages = json::array({{{"role", "developer"}, {"content", "sys"}},
                               {{"role", "user"},
                                {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                         {{"type", "text"}, {"text", "b"}}})}},
                               {{"role", "assistant"}, {"content", nullptr}}});
  ASSERT_TRUE(Chat({{"messages", messages}}, &r).ok());
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "a\nb");
  EXPECT_EQ(r.messages[2]["content"], "");
}

TEST(OpenAiProtocol, UnknownParametersAreNamed) {
  ApiError e = Chat({{"messages", Msgs()}, {"foo", 1}, {"tools", json::array()}});
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, "foo");
  EXPECT_NE(e.message.find("'foo'"), std::string::npos);
  EXPECT_NE(e.message.find("'tools'"), std::string::npos);
  e = Completion({{"prompt", "x"}, {"best_of", 2}});
  EXPECT_EQ(e.param, "best_of");
}

struct RangeCase {
  const char* field;
  json value;
  const char* range_text;  // must appear in the message
};

TEST(OpenAiProtocol, OutOfRangeNamesTheRange) {
  const RangeCase cases[] = {
      {"temperature", 2.5, "[0, 2]"},
      {"temperature", -1, "[0, 2]"},
      {"top_p", 0, "(0, 1]"},
      {"top_p", 1.5, "(0, 1]"},
      {"min_p", 2, "[0, 1]"},
      {"presence_penalty", 3, "[-2, 2]"},
      {"frequency_penalty", -2.5, "[-2, 2]"},
      {"repetition_penalty", 0, "(0, 10]"},
      {"n", 0, "[1, 16]"},
      {"n", 17, "[1, 16]"},
      {"max_tokens", 0, "[1, 2048]"},
      {"max_tokens", 4096, "[1, 2048]"},
      {"top_k", -2, "[-1, "},
      {"top_logprobs", 21, "[0, 20]"},
  };
  for (const RangeCase& c : cases) {
    json body = {{"messages", Msgs()}, {c.field, c.value}};
    if (std::string(c.field) == "top_logprobs") body["logprobs"] = true;
    ApiError e = Chat(body);
    EXPECT_EQ(e.http_status, 400) << c.field << "=" << c.value;
    EXPECT_EQ(e.param, c.field) << c.field;
    EXPECT_NE(e.message.find(c.range_text), std::string::npos) << e.message;
  }
  ApiError e = Completion({{"prompt", "x"}, {"logprobs", 21}});
  EXPECT_EQ(e.param, "logprobs");
  e = Chat({{"messages", Msgs()}, {"max_tokens", 10}, {"min_tokens", 11}});
  EXPECT_EQ(e.param, "min_tokens");
}

TEST(OpenAiProtocol, WrongTypes) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {{"temperature", "hot"},
                        {"n", 1.5},
                        {"n", "2"},
                        {"stream", 1},
                        {"stop", 5},
                        {"stop", json::array({1})},
                        {"seed", "x"},
                        {"logit_bias", json::array()},
                        {"max_tokens", true},
                        {"logprobs", 3}};
  for (const Case& c : cases) {
    ApiError e = Chat({{"messages", Msgs()}, {c.field, c.value}});
    EXPECT_EQ(e.http_status, 400) << c.field << "=" << c.value;
    EXPECT_EQ(e.param, c.field) << c.field << ": " << e.message;
  }
  // Integral floats are integers (pydantic does the same).
  ApiRequest r;
  ASSERT_TRUE(Chat({{"messages", Msgs()}, {"n", 2.0}}, &r).ok());
  EXPECT_EQ(r.n, 2);
}

TEST(OpenAiProtocol, HugeNumbers) {
  json body;
  ASSERT_TRUE(
      ParseJsonBody(
          R"({"messages":[{"role":"user","content":"x"}],"max_tokens":99999999999999999999999})",
          64, &body)
          .ok());
  ApiError e = Chat(body);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.param, "max_tokens");
  ASSERT_TRUE(
      ParseJsonBody(R"({"messages":[{"role":"user","content":"x"}],"seed":18446744073709551615})",
                    64, &body)
          .ok());
  EXPECT_EQ(Chat(body).param, "seed");
  // 1e999 either fails to parse or is rejected as out of range; both are 400.
  e = ParseJsonBody(R"({"messages":[{"role":"user","content":"x"}],"temperature":1e999})", 64,
                    &body);
  if (e.ok()) e = Chat(body);
  EXPECT_EQ(e.http_status, 400);
}

TEST(OpenAiProtocol, MessagesValidation) {
  EXPECT_EQ(Chat({{"model", "m"}}).param, "messages");
  EXPECT_EQ(Chat({{"messages", json::array()}}).param, "messages");
  EXPECT_EQ(Chat({{"messages", "hi"}}).param, "messages");
  EXPECT_EQ(Chat({{"messages", json::array({{{"role", "wizard"}, {"content", "x"}}})}}).param,
            "messages[0].role");
  EXPECT_EQ(Chat({{"messages", json::array({{{"role", "user"}, {"content", 5}}})}}).param,
            "messages[0].content");
  EXPECT_EQ(Chat({{"messages", json::array({{{"role", "user"}}})}}).param, "messages[0].content");
  json image =
      json::array({{{"role", "user"},
                    {"content", json::array({{{"type", "image_url"}, {"image_url", "x"}}})}}});
  EXPECT_EQ(Chat({{"messages", image}}).param, "messages[0].content[0].type");
}

TEST(OpenAiProtocol, StreamOptionsNeedStream) {
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"stream_options", {{"include_usage", true}}}}).param,
            "stream_options");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"stream", true}, {"stream_options", {{"x", 1}}}}).param,
            "stream_options.x");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"top_logprobs", 2}}).param, "top_logprobs");
}

TEST(OpenAiProtocol, LogitBiasAndStopLimits) {
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"logit_bias", {{"1000", 1}}}}).param, "logit_bias");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"logit_bias", {{"abc", 1}}}}).param, "logit_bias");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"logit_bias", {{"5", 101}}}}).param, "logit_bias");
  EXPECT_EQ(Chat({{"messages", Msgs()},
                  {"stop", json::array({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l",
                                        "m", "n", "o", "p", "q"})}})
                .param,
            "stop");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"stop", std::string(600, 'x')}}).param, "stop");
  EXPECT_EQ(Chat({{"messages", Msgs()}, {"stop_token_ids", json::array({5, 1000})}}).param,
            "stop_token_ids");
}

TEST(OpenAiProtocol, CompletionPrompts) {
  ApiRequest r;
  ASSERT_TRUE(Completion({{"prompt", "hello"}}, &r).ok());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_tokens);
  EXPECT_EQ(*r.max_tokens, 16);  // OpenAI's default for completions
  ASSERT_TRUE(Completion({{"prompt", json::array({"a", "b"})}, {"echo", true}}, &r).ok());
  EXPECT_EQ(r.prompts.size(), 2u);
  EXPECT_TRUE(r.echo);
  ASSERT_TRUE(Completion({{"prompt", json::array({1, 2, 3})}, {"logprobs", 2}}, &r).ok());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_tokens);
  EXPECT_EQ(r.prompts[0].tokens, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(r.params.logprobs, 2);
  ASSERT_TRUE(
      Completion({{"prompt", json::array({json::array({1}), json::array({2, 3})})}}, &r).ok());
  EXPECT_EQ(r.prompts.size(), 2u);

  EXPECT_EQ(Completion(json::object()).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", json::array()}}).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", json::array({1, "a"})}}).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", json::array({1, 1000})}}).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", json::array({-1})}}).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", 5}}).param, "prompt");
  EXPECT_EQ(Completion({{"prompt", "x"}, {"echo", true}, {"logprobs", 1}}).param, "echo");
  // n times prompts is capped.
  json many = json::array();
  for (int i = 0; i < 8; ++i) many.push_back("p");
  EXPECT_EQ(Completion({{"prompt", many}, {"n", 16}}).param, "prompt");
}

TEST(OpenAiProtocol, ParseJsonBodyRejectsMalformed) {
  json out;
  EXPECT_TRUE(ParseJsonBody(R"({"a": "[[[["})", 2, &out).ok());  // brackets in strings don't count
  EXPECT_EQ(ParseJsonBody(R"({"a": [[[1]]]})", 3, &out).http_status, 400);
  EXPECT_EQ(
      ParseJsonBody(std::string(100000, '[') + std::string(100000, ']'), 64, &out).http_status,
      400);
  EXPECT_EQ(ParseJsonBody(R"({"a": )", 64, &out).http_status, 400);  // truncated
  EXPECT_EQ(ParseJsonBody("", 64, &out).http_status, 400);
  EXPECT_EQ(ParseJsonBody("[1, 2]", 64, &out).http_status, 400);                 // not an object
  EXPECT_EQ(ParseJsonBody("{\"a\": \"\xff\xfe\"}", 64, &out).http_status, 400);  // bad UTF-8
  ApiError e = ParseJsonBody("{\"a\": 1,}", 64, &out);
  EXPECT_EQ(e.type, "invalid_request_error");
}

TEST(Errors, Shapes) {
  json j = BadRequest("bad", "temperature").ToJson();
  ASSERT_TRUE(j.contains("error"));
  EXPECT_EQ(j["error"]["message"], "bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  j = BadRequest("bad").ToJson();
  EXPECT_TRUE(j["error"]["param"].is_null());

  ApiError ctx = ContextLengthExceeded(100, 120, 10, "messages");
  EXPECT_EQ(ctx.http_status, 400);
  EXPECT_EQ(ctx.code, "context_length_exceeded");
  EXPECT_NE(ctx.message.find("maximum context length is 100 tokens"), std::string::npos);
  EXPECT_NE(ctx.message.find("130 tokens (120 in the messages, 10 in the completion)"),
            std::string::npos);
  EXPECT_EQ(ctx.ToJson()["error"]["n_prompt_tokens"], 120);
  EXPECT_EQ(ctx.ToJson()["error"]["n_ctx"], 100);

  EXPECT_EQ(Unauthorized().http_status, 401);
  EXPECT_EQ(Unauthorized().type, "authentication_error");
  EXPECT_EQ(PayloadTooLarge(10).http_status, 413);
  EXPECT_EQ(Overloaded("x").http_status, 429);
  EXPECT_EQ(ServiceUnavailable("x").http_status, 503);
  EXPECT_EQ(ErrorForHttpStatus(404).http_status, 404);
  EXPECT_EQ(FromStatus(InvalidArgument("x")).http_status, 400);
  EXPECT_EQ(FromStatus(ResourceExhausted("x")).http_status, 429);
  EXPECT_EQ(FromStatus(Unavailable("x")).http_status, 503);
  EXPECT_EQ(FromStatus(Internal("x")).http_status, 500);
  // Invalid UTF-8 in a message does not throw on the wire.
  EXPECT_NE(BadRequest("\xff").ToJsonString().find("\xEF\xBF\xBD"), std::string::npos);
}

std::string FakeText(TokenId id) {
  return id == 7 ? "\xE2\x82" : "t" + std::to_string(id);
}

TEST(Responses, ChatChunkShape) {
  ResponseMeta meta{"chatcmpl-1", 123, "m"};
  ChunkDelta d;
  d.index = 2;
  d.first = true;
  d.text = "Hi";
  d.token_ids = {5};
  json c = ChatChunk(meta, d, false, FakeText);
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["id"], "chatcmpl-1");
  EXPECT_EQ(c["created"], 123);
  ASSERT_EQ(c["choices"].size(), 1u);
  EXPECT_EQ(c["choices"][0]["index"], 2);
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(c["choices"][0]["logprobs"].is_null());

  d.first = false;
  d.text = "";
  d.finish_reason = "stop";
  c = ChatChunk(meta, d, false, FakeText);
  EXPECT_FALSE(c["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");

  std::string sse = SseEvent(c);
  EXPECT_EQ(sse.rfind("data: {", 0), 0u);
  EXPECT_EQ(sse.substr(sse.size() - 2), "\n\n");
  EXPECT_EQ(sse.find('\n'), sse.size() - 2);  // one line per event

  json u = UsageChunk(meta, ApiKind::kChat, Usage{10, 4, 3});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(u["usage"]["completion_tokens"], 4);
  EXPECT_EQ(u["usage"]["total_tokens"], 14);
  EXPECT_EQ(u["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
}

// The preformatted stream writer must give exactly the JSON path's bytes.
TEST(Responses, SseChunkWriterMatchesJson) {
  const std::vector<std::string> texts = {"",
                                          "Hi",
                                          " a \"quoted\" \\ word",
                                          "tab\there\nnewline\r\x01\x1f\x7f",
                                          "\b\f",
                                          "caf\xC3\xA9",
                                          "\xE2\x82",
                                          "bad \xFF byte",
                                          "\xF0\x9F\x98\x80 ok"};
  const std::vector<ResponseMeta> metas = {{"chatcmpl-1", 123, "m"},
                                           {"cmpl-abc", 1796092013, "we\"ird/\xC3\xA9\\model"}};
  int checked = 0;
  for (const ResponseMeta& meta : metas) {
    for (ApiKind kind : {ApiKind::kChat, ApiKind::kCompletion}) {
      for (bool with_logprobs : {false, true}) {
        const SseChunkWriter writer(meta, kind, with_logprobs, FakeText);
        for (const std::string& text : texts) {
          for (int variant = 0; variant < 8; ++variant) {
            ChunkDelta d;
            d.index = variant % 3;
            d.first = (variant & 1) != 0;
            d.text = text;
            if (variant & 2) d.finish_reason = variant & 4 ? "length" : "stop";
            if ((variant & 6) == 2) d.stop_reason = text.empty() ? "\n\n" : text;
            if (variant != 6) d.token_ids = {5, 7};
            if (variant != 6) d.logprobs = {{-0.5f, {{5, -0.5f}}}, {-1.25f, {}}};
            d.text_offset = 4;
            const json j = kind == ApiKind::kChat
                               ? ChatChunk(meta, d, with_logprobs, FakeText)
                               : CompletionChunk(meta, d, with_logprobs, FakeText);
            std::string out = "prefix";
            writer.Append(d, &out);
            ASSERT_EQ(out, "prefix" + SseEvent(j))
                << "kind " << int(kind) << " logprobs " << with_logprobs << " variant " << variant
                << " text " << json(text).dump(-1, ' ', true, json::error_handler_t::replace);
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 2 * 2 * 2 * 9 * 8);
}

TEST(Responses, LogprobsBothApis) {
  std::vector<TokenId> tokens = {5, 7};
  std::vector<TokenLogprobs> lps = {{-0.5f, {{5, -0.5f}, {6, -1.5f}}},
                                    {-std::numeric_limits<float>::infinity(), {}}};
  json chat = ChatLogprobs(tokens, lps, FakeText);
  ASSERT_EQ(chat["content"].size(), 2u);
  EXPECT_EQ(chat["content"][0]["token"], "t5");
  EXPECT_DOUBLE_EQ(chat["content"][0]["logprob"].get<double>(), -0.5);
  EXPECT_EQ(chat["content"][0]["bytes"], json::array({'t', '5'}));
  ASSERT_EQ(chat["content"][0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], "t6");
  EXPECT_EQ(chat["content"][1]["bytes"], json::array({0xE2, 0x82}));
  EXPECT_DOUBLE_EQ(chat["content"][1]["logprob"].get<double>(), -9999.0);  // -inf is not JSON
  EXPECT_NO_THROW(DumpJson(chat));

  json comp = CompletionLogprobs(tokens, lps, FakeText, 10);
  EXPECT_EQ(comp["tokens"], json::array({"t5", "\xE2\x82"}));
  EXPECT_EQ(comp["text_offset"], json::array({10, 12}));
  EXPECT_DOUBLE_EQ(comp["top_logprobs"][0]["t6"].get<double>(), -1.5);
  EXPECT_EQ(comp["token_logprobs"].size(), 2u);
}

TEST(Responses, NonStreamingShapes) {
  ResponseMeta meta{"cmpl-1", 1, "m"};
  std::vector<ChoiceResult> choices(2);
  choices[0].index = 0;
  choices[0].text = "a";
  choices[0].finish_reason = "length";
  choices[1].index = 1;
  choices[1].text = "b";
  choices[1].finish_reason = "stop";
  choices[1].stop_reason = "\n";
  json c = CompletionResponse(meta, choices, Usage{3, 2, 0}, false, FakeText);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][1]["text"], "b");
  EXPECT_EQ(c["choices"][1]["index"], 1);
  EXPECT_EQ(c["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  json chat = ChatResponse(meta, choices, Usage{3, 2, 0}, false, FakeText);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "a");
  EXPECT_TRUE(chat["choices"][0]["logprobs"].is_null());
}

TEST(Metrics, PrometheusText) {
  Metrics m("my-model");
  m.AddPromptTokens(5);
  m.AddGenerationTokens(3);
  m.ObserveTtft(0.05);
  m.ObserveFinished("stop", 1.0, -1, 0.05, 0.9, 0.45, 5, 3);
  EngineGauges g;
  g.num_running = 2;
  g.blocks.num_blocks = 10;
  g.blocks.num_free_blocks = 7;
  std::string text = m.Render(g);
  EXPECT_NE(text.find("vllm:num_requests_running{model_name=\"my-model\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:kv_cache_usage_perc{model_name=\"my-model\"} 0.3\n"),
            std::string::npos);
  EXPECT_NE(text.find("cleave:kv_free_blocks{model_name=\"my-model\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:prompt_tokens_total{model_name=\"my-model\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:generation_tokens_total{model_name=\"my-model\"} 3\n"),
            std::string::npos);
  EXPECT_NE(
      text.find("vllm:request_success_total{model_name=\"my-model\",finished_reason=\"stop\"} 1\n"),
      std::string::npos);
  // 0.05 falls in the 0.06 bucket and every later one; the 0.04 bucket stays empty.
  EXPECT_NE(
      text.find("vllm:time_to_first_token_seconds_bucket{model_name=\"my-model\",le=\"0.04\"} 0\n"),
      std::string::npos);
  EXPECT_NE(
      text.find("vllm:time_to_first_token_seconds_bucket{model_name=\"my-model\",le=\"0.06\"} 1\n"),
      std::string::npos);
  EXPECT_NE(
      text.find("vllm:time_to_first_token_seconds_bucket{model_name=\"my-model\",le=\"+Inf\"} 1\n"),
      std::string::npos);
  EXPECT_NE(text.find("vllm:time_to_first_token_seconds_count{model_name=\"my-model\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE vllm:e2e_request_latency_seconds histogram\n"), std::string::npos);
}

}  // namespace
}  // namespace cleave::server
