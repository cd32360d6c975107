// Workload sources: each format parses as documented, bad files fail with the file and line,
// synthetic lengths follow their stated shape, and corpus cuts hit the requested token count.
#include "bench/workload.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/testing/paths.h"

namespace cleave::bench {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  static const std::string dir = cleave::testing::TempDir();
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// One token per word: makes expected counts obvious.
class WordCounter final : public TokenCounter {
 public:
  Result<int64_t> Count(std::string_view text) override {
    int64_t n = 0;
    bool in_word = false;
    for (char c : text) {
      bool space = c == ' ' || c == '\n';
      if (!space && !in_word) ++n;
      in_word = !space;
    }
    ++calls;
    return n;
  }
  std::string name() const override { return "words"; }
  int calls = 0;
};

Corpus TestCorpus() {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "word" + std::to_string(i) + " ";
  return Corpus::FromText(text);
}

TEST(JsonlTest, ParsesAndCyclesToNumPrompts) {
  std::string path = WriteFile("ok.jsonl",
                               "{\"prompt\": \"one two three\", \"output_len\": 5}\n"
                               "\n"
                               "{\"prompt\": \"four five\", \"output_len\": 7}\n");
  WorkloadOptions opt;
  opt.num_prompts = 3;
  WordCounter counter;
  auto w = LoadJsonl(path, opt, counter);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->size(), 3u);
  EXPECT_EQ((*w)[0].prompt, "one two three");
  EXPECT_EQ((*w)[0].prompt_tokens, 3);
  EXPECT_EQ((*w)[0].output_tokens, 5);
  EXPECT_EQ((*w)[1].output_tokens, 7);
  EXPECT_EQ((*w)[2].prompt, "one two three");  // cycled
  EXPECT_LT((*w)[0].timestamp_s, 0);
  opt.output_len_override = 2;
  w = LoadJsonl(path, opt, counter);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)[1].output_tokens, 2);
}

TEST(JsonlTest, BadFilesNameTheLine) {
  WorkloadOptions opt;
  CharEstimateCounter counter;
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"{\"prompt\": \"a\", \"output_len\": 3}\n{\"output_len\": 3}\n", ":2"},
      {"{\"prompt\": \"a\", \"output_len\": 3}\nnot json\n", "not valid JSON"},
      {"{\"prompt\": \"a\", \"output_len\": -3}\n", "negative"},
      {"{\"prompt\": \"a\", \"output_len\": \"3\"}\n", "non-negative integer"},
      {"{\"prompt\": \"a\", \"output_len\": 0}\n", ">= 1"},
      {"[1, 2]\n", "expected a JSON object"},
      {"\n\n", "no requests"},
  };
  for (const Case& c : cases) {
    std::string path = WriteFile("bad.jsonl", c.text);
    auto w = LoadJsonl(path, opt, counter);
    ASSERT_FALSE(w.ok()) << c.text;
    EXPECT_NE(w.status().message().find(c.expect), std::string::npos) << w.status().message();
    EXPECT_NE(w.status().message().find("bad.jsonl"), std::string::npos) << w.status().message();
  }
  auto missing = LoadJsonl("/nonexistent/x.jsonl", opt, counter);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(ShareGptTest, FirstTwoTurnsFilteredAndShuffledBySeed) {
  std::string conv = R"([
    {"id": "a", "conversations": [{"from": "human", "value": "alpha beta gamma delta epsilon"},
                                  {"from": "gpt", "value": "one two three four five six"}]},
    {"id": "b", "conversations": [{"from": "human", "value": "only one turn here"}]},
    {"id": "c", "conversations": [{"from": "human", "value": "short"},
                                  {"from": "gpt", "value": "too short prompt is dropped"}]},
    {"id": "d", "conversations": [{"from": "human", "value": "zeta eta theta iota kappa lambda"},
                                  {"from": "gpt", "value": "seven eight nine ten"},
                                  {"from": "human", "value": "third turn is ignored"}]}
  ])";
  std::string path = WriteFile("sharegpt.json", conv);
  WorkloadOptions opt;
  opt.num_prompts = 10;
  WordCounter counter;
  auto w = LoadShareGpt(path, opt, counter);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->size(), 2u);  // b has one turn; c's prompt has < 4 tokens
  std::set<std::string> prompts;
  for (const auto& r : *w) {
    prompts.insert(r.prompt);
    if (r.prompt.starts_with("alpha")) {
      EXPECT_EQ(r.prompt_tokens, 5);
      EXPECT_EQ(r.output_tokens, 6);
    } else {
      EXPECT_EQ(r.prompt_tokens, 6);
      EXPECT_EQ(r.output_tokens, 4);
    }
  }
  EXPECT_EQ(prompts.size(), 2u);
  // Same seed, same order.
  auto again = LoadShareGpt(path, opt, counter);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*w)[0].prompt, (*again)[0].prompt);
  opt.num_prompts = 1;
  auto one = LoadShareGpt(path, opt, counter);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
}

TEST(ShareGptTest, BadFiles) {
  WorkloadOptions opt;
  CharEstimateCounter counter;
  EXPECT_NE(LoadShareGpt(WriteFile("s1.json", "{\"a\": 1}"), opt, counter)
                .status()
                .message()
                .find("JSON array"),
            std::string::npos);
  EXPECT_NE(LoadShareGpt(WriteFile("s2.json", "[{\"id\": 1}]"), opt, counter)
                .status()
                .message()
                .find("conversations"),
            std::string::npos);
  EXPECT_NE(LoadShareGpt(WriteFile("s3.json", "[{\"conversations\": [{\"value\": 1}, {}]}]"), opt,
                         counter)
                .status()
                .message()
                .find("value"),
            std::string::npos);
  EXPECT_NE(LoadShareGpt(WriteFile("s4.json", "[1, "), opt, counter)
                .status()
                .message()
                .find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(
      LoadShareGpt(WriteFile("s5.json", "[]"), opt, counter).status().message().find("no usable"),
      std::string::npos);
}

TEST(TraceTest, MooncakeTimestampsAndLengths) {
  std::string path =
      WriteFile("trace.jsonl",
                "{\"timestamp\": 1000, \"input_length\": 12, \"output_length\": 3, "
                "\"hash_ids\": [1, 2]}\n"
                "{\"timestamp\": 1500, \"input_length\": 40, \"output_length\": 9}\n"
                "{\"timestamp\": 4000, \"input_length\": 7, \"output_length\": 1}\n");
  WorkloadOptions opt;
  opt.num_prompts = 10;
  WordCounter counter;
  Corpus corpus = TestCorpus();
  auto w = LoadTrace(path, opt, corpus, counter);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->size(), 3u);
  EXPECT_DOUBLE_EQ((*w)[0].timestamp_s, 0.0);
  EXPECT_DOUBLE_EQ((*w)[1].timestamp_s, 0.5);
  EXPECT_DOUBLE_EQ((*w)[2].timestamp_s, 3.0);
  EXPECT_EQ((*w)[1].prompt_tokens, 40);  // one token per word: cut is exact
  EXPECT_EQ(counter.Count((*w)[1].prompt).value(), 40);
  EXPECT_EQ((*w)[1].output_tokens, 9);
  opt.length_scale = 0.5;
  w = LoadTrace(path, opt, corpus, counter);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)[1].prompt_tokens, 20);
  EXPECT_EQ((*w)[2].output_tokens, 1);  // never below 1

  auto bad = LoadTrace(WriteFile("t2.jsonl",
                                 "{\"timestamp\": 5, \"input_length\": 3, "
                                 "\"output_length\": 2}\n{\"timestamp\": 4, "
                                 "\"input_length\": 3, \"output_length\": 2}\n"),
                       opt, corpus, counter);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t2.jsonl:2"), std::string::npos);
  bad = LoadTrace(WriteFile("t3.jsonl", "{\"input_length\": 3, \"output_length\": 2}\n"), opt,
                  corpus, counter);
  EXPECT_NE(bad.status().message().find("timestamp"), std::string::npos);
}

TEST(CorpusTest, CutHitsTargetWithFewCounts) {
  Corpus corpus = TestCorpus();
  Rng rng(3);
  for (int64_t target : {1, 7, 100, 499, 1200}) {  // 1200 > corpus: wraps around the ring
    WordCounter counter;
    int64_t actual = 0;
    auto text = corpus.Cut(target, counter, rng, &actual);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(actual, target);
    EXPECT_LE(counter.calls, 30) << target;
  }
  // With the 4-chars-per-token estimate the cut is the largest that fits.
  CharEstimateCounter est;
  int64_t actual = 0;
  auto text = corpus.Cut(50, est, rng, &actual);
  ASSERT_TRUE(text.ok());
  EXPECT_LE(actual, 50);
  EXPECT_GE(actual, 47);
  EXPECT_EQ(est.Count(*text).value(), actual);
}

TEST(SyntheticTest, LengthShapesAndReproducibility) {
  Rng rng(11);
  double in_sum = 0, out_sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    LengthPair p = SampleLengths(SyntheticApp::kCode, rng);
    in_sum += static_cast<double>(p.input_tokens);
    out_sum += static_cast<double>(p.output_tokens);
  }
  // HumanEval statistics the code model targets (docs/benchmarking.md): means 171 and 98.2.
  EXPECT_NEAR(in_sum / n, 171.0, 171.0 * 0.05);
  EXPECT_NEAR(out_sum / n, 98.2, 98.2 * 0.05);
  for (int i = 0; i < 2000; ++i) {
    LengthPair s = SampleLengths(SyntheticApp::kSummarization, rng);
    ASSERT_GE(s.input_tokens + s.output_tokens, 1900);
    ASSERT_LE(s.input_tokens + s.output_tokens, 2040);
    LengthPair c = SampleLengths(SyntheticApp::kChatbot, rng);
    ASSERT_LT(c.input_tokens + c.output_tokens, 2048);
    ASSERT_GE(c.input_tokens, 4);
  }
  WorkloadOptions opt;
  opt.num_prompts = 5;
  opt.seed = 4;
  opt.length_scale = 0.05;
  WordCounter counter;
  Corpus corpus = TestCorpus();
  auto a = MakeSynthetic(SyntheticApp::kChatbot, opt, corpus, counter);
  auto b = MakeSynthetic(SyntheticApp::kChatbot, opt, corpus, counter);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    EXPECT_EQ((*a)[i].output_tokens, (*b)[i].output_tokens);
  }
}

TEST(LoadWorkloadTest, SpecErrors) {
  WorkloadOptions opt;
  CharEstimateCounter counter;
  EXPECT_NE(LoadWorkload("nonsense", opt, counter).status().message().find("unknown workload"),
            std::string::npos);
  EXPECT_NE(LoadWorkload("jsonl", opt, counter).status().message().find("needs a file"),
            std::string::npos);
  EXPECT_NE(LoadWorkload("chatbot", opt, counter).status().message().find("--corpus"),
            std::string::npos);
  opt.num_prompts = 0;
  EXPECT_FALSE(LoadWorkload("chatbot", opt, counter).ok());
}

}  // namespace
}  // namespace cleave::bench
