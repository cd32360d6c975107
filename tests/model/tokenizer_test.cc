// Tokenizer tests: reference ids from Hugging Face `tokenizers` (tests/fixtures/tokenizer/*.json,
// written by tests/reference/make_tokenizer_fixture.py) on the real SmolLM2 vocabulary under four
// pre-tokenizers and on a small SentencePiece-style vocabulary; plus unit tests on hand-made
// vocabularies for merging order, special tokens, BOS/EOS, end-of-generation ids, invalid UTF-8
// and incremental decoding.
#include "model/tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "model/gguf.h"
#include "model/pretokenizer.h"
#include "tests/testing/paths.h"

namespace cleave {
namespace {

using nlohmann::json;

json LoadFixture(const std::string& name) {
  std::ifstream in(testing::SourceDir() + "/tests/fixtures/tokenizer/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return json::parse(buffer.str());
}

TokenizerData DataFromJson(const json& j) {
  TokenizerData data;
  data.model = j.at("model");
  data.pre = j.value("pre", "default");
  data.tokens = j.at("tokens").get<std::vector<std::string>>();
  data.scores = j.value("scores", std::vector<float>{});
  for (int type : j.value("token_types", std::vector<int>{})) {
    data.token_types.push_back(static_cast<TokenType>(type));
  }
  data.merges = j.value("merges", std::vector<std::string>{});
  data.bos_id = j.value("bos_id", -1);
  data.eos_id = j.value("eos_id", -1);
  data.unk_id = j.value("unk_id", -1);
  data.add_bos = j.value("add_bos", false);
  data.add_eos = j.value("add_eos", false);
  data.add_space_prefix = j.value("add_space_prefix", false);
  return data;
}

// The default model's tokenizer data, read once (nullptr when the model is absent).
const TokenizerData* DefaultModelData() {
  static const auto* data = []() -> TokenizerData* {
    std::string path = testing::DefaultModelPath();
    if (path.empty()) return nullptr;
    auto file = gguf::GgufFile::Open(path);
    if (!file.ok()) {
      ADD_FAILURE() << file.status().ToString();
      return nullptr;
    }
    auto data = TokenizerData::FromGguf(**file);
    if (!data.ok()) {
      ADD_FAILURE() << data.status().ToString();
      return nullptr;
    }
    return new TokenizerData(std::move(*data));
  }();
  return data;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

class TokenizerFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixtureTest, MatchesHuggingFace) {
  json fixture = LoadFixture(GetParam() + ".json");
  TokenizerData data;
  if (fixture.at("source") == "inline") {
    data = DataFromJson(fixture.at("tokenizer"));
  } else {
    const TokenizerData* model_data = DefaultModelData();
    if (model_data == nullptr) GTEST_SKIP() << "default model not installed (scripts/setup.sh)";
    data = *model_data;
    ASSERT_EQ(static_cast<int>(data.tokens.size()), fixture.at("vocab_size").get<int>());
    data.pre = fixture.at("pre");
  }
  auto made = Tokenizer::Create(data);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Tokenizer& tok = **made;
  if (GetParam() != "spm") {
    EXPECT_EQ(tok.pre_name(), GetParam());
  }

  const auto& cases = fixture.at("cases");
  ASSERT_GE(cases.size(), 150u);
  int failures = 0;
  for (const auto& c : cases) {
    std::string text = c.at("text");
    bool add_special = c.at("add_special");
    bool parse_special = c.at("parse_special");
    auto expected = c.at("ids").get<std::vector<TokenId>>();
    std::vector<TokenId> ids = tok.Encode(text, add_special, parse_special);
    std::string where = fmt::format("text \"{}\" add_special={} parse_special={}", Printable(text),
                                    add_special, parse_special);
    if (ids != expected) {
      ADD_FAILURE() << where << "\n  got      " << fmt::format("{}", fmt::join(ids, ","))
                    << "\n  expected " << fmt::format("{}", fmt::join(expected, ","));
      if (++failures > 10) FAIL() << "too many failures";
      continue;
    }
    EXPECT_EQ(tok.Decode(expected), c.at("decoded").get<std::string>()) << where;
    // Round trip. SentencePiece puts a space after every user-defined token (which is matched
    // even without parse_special), so text holding one does not come back unchanged.
    bool split_by_special = std::any_of(ids.begin(), ids.end(), [&](TokenId id) {
      return tok.GetTokenType(id) == TokenType::kUserDefined;
    });
    if (!add_special && !parse_special && !(tok.add_space_prefix() && split_by_special)) {
      EXPECT_EQ(tok.Decode(ids), text) << where;
      // Streaming gives the same text (SentencePiece's prefix space aside).
      IncrementalDecoder stream(tok, /*skip_special=*/false);
      std::string streamed;
      for (TokenId id : ids) streamed += stream.Push(id);
      streamed += stream.Flush();
      if (tok.add_space_prefix() && !streamed.empty()) streamed.erase(0, 1);
      EXPECT_EQ(streamed, text) << where;
    }
  }
}

// The pre-tokenizer's pieces against HF's pre_tokenize_str (independent of the vocabulary, so
// this separates e.g. Llama 3's digit triples from Qwen2's single digits).
class PreTokenizerFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PreTokenizerFixtureTest, SplitsMatchHuggingFace) {
  json fixture = LoadFixture(GetParam() + ".json");
  auto pre = PreTokenizer::Create(fixture.at("pre").get<std::string>());
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  for (const auto& c : fixture.at("splits")) {
    std::string text = c.at("text");
    std::vector<std::string_view> pieces;
    (*pre)->Split(text, &pieces);
    std::vector<std::string> got(pieces.begin(), pieces.end());
    EXPECT_EQ(got, c.at("pieces").get<std::vector<std::string>>()) << Printable(text);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerFixtureTest,
                         ::testing::Values("smollm", "llama3", "qwen2", "gpt2", "spm"));
INSTANTIATE_TEST_SUITE_P(Fixtures, PreTokenizerFixtureTest,
                         ::testing::Values("smollm", "llama3", "qwen2", "gpt2"));

// A Tokenizer is shared by request threads: concurrent Encode calls must agree.
TEST(TokenizerGguf, ConcurrentEncode) {
  const TokenizerData* data = DefaultModelData();
  if (data == nullptr) GTEST_SKIP() << "default model not installed (scripts/setup.sh)";
  auto made = Tokenizer::Create(*data);
  ASSERT_TRUE(made.ok());
  const Tokenizer& tok = **made;
  const std::string text = "Threads share one tokenizer: 1234 café 你好 😀\n\tdon't <|im_end|>";
  const std::vector<TokenId> expected = tok.Encode(text, true, true);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (tok.Encode(text, true, true) != expected) ++mismatches;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerGguf, DefaultModel) {
  std::string path = testing::DefaultModelPath();
  if (path.empty()) GTEST_SKIP() << "default model not installed (scripts/setup.sh)";
  auto file = gguf::GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto made = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const Tokenizer& tok = **made;
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.model_name(), "gpt2");
  EXPECT_EQ(tok.pre_name(), "smollm");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.TokenText(1), "<|im_start|>");
  EXPECT_EQ(tok.GetTokenType(1), TokenType::kControl);
  // <|im_end|> (eos) and <|endoftext|> end generation; <|im_start|> does not.
  EXPECT_EQ(tok.eog_ids(), (std::vector<TokenId>{0, 2}));
  EXPECT_TRUE(tok.IsEog(2));
  EXPECT_FALSE(tok.IsEog(1));
  EXPECT_EQ(tok.TokenToBytes(2), "<|im_end|>");
  EXPECT_EQ(tok.TokenToBytes(2, /*skip_special=*/true), "");
  EXPECT_EQ(tok.TokenToBytes(-1), "");
  EXPECT_EQ(tok.TokenToBytes(49152), "");
}

// Encoding ~10k tokens of mixed text; prints the time (a sanity benchmark, not an assertion).
TEST(TokenizerGguf, EncodeSpeed) {
  const TokenizerData* data = DefaultModelData();
  if (data == nullptr) GTEST_SKIP() << "default model not installed (scripts/setup.sh)";
  auto made = Tokenizer::Create(*data);
  ASSERT_TRUE(made.ok());
  std::string text;
  while (text.size() < 45000) {
    text +=
        "The scheduler hands out a token budget each step; prefill chunks and decodes share it. "
        "int main() {\n\treturn 42;\n}\n Café 你好 😀 1234567 don't\n";
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<TokenId> ids = (*made)->Encode(text, false, false);
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu bytes into %zu tokens in %.2f ms\n", text.size(), ids.size(), ms);
  EXPECT_GT(ids.size(), 9000u);
  EXPECT_EQ((*made)->Decode(ids), text);
}

// --- Hand-made vocabularies -------------------------------------------------------------------

// GPT-2's printable form of a byte (the byte-level vocabulary alphabet).
std::string ByteChar(uint8_t byte) {
  bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
  uint32_t cp = byte;
  if (!printable) {
    cp = 0x100;
    for (int b = 0; b < byte; ++b) {
      bool p = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      if (!p) ++cp;
    }
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// 256 byte tokens, then `extra` normal tokens, then specials; merges as given.
TokenizerData ByteLevelData(const std::vector<std::string>& extra,
                            const std::vector<std::string>& merges) {
  TokenizerData data;
  data.model = "gpt2";
  data.pre = "gpt2";
  for (int b = 0; b < 256; ++b) data.tokens.push_back(ByteChar(static_cast<uint8_t>(b)));
  for (const auto& t : extra) data.tokens.push_back(t);
  data.token_types.assign(data.tokens.size(), TokenType::kNormal);
  auto add = [&](std::string text, TokenType type) {
    data.tokens.push_back(std::move(text));
    data.token_types.push_back(type);
    return static_cast<TokenId>(data.tokens.size() - 1);
  };
  data.bos_id = add("<|begin|>", TokenType::kControl);
  data.eos_id = add("<|end|>", TokenType::kControl);
  add("<|end|>x", TokenType::kControl);  // longer special sharing a prefix
  add("<tool>", TokenType::kUserDefined);
  add("<|eot_id|>", TokenType::kControl);
  data.merges = merges;
  return data;
}

std::unique_ptr<Tokenizer> MustCreate(TokenizerData data) {
  auto made = Tokenizer::Create(std::move(data));
  CLEAVE_CHECK(made.ok(), "{}", made.status().ToString());
  return std::move(*made);
}

TEST(TokenizerBpe, MergesByRankThenLeftmost) {
  // "aa"(256) "ab"(257) "aab"(258) "baa"(259). Ranks: "a a" < "a b" < "aa b".
  auto tok = MustCreate(ByteLevelData({"aa", "ab", "aab", "baa"}, {"a a", "a b", "aa b"}));
  // a a a -> leftmost "a a" first: [aa, a].
  EXPECT_EQ(tok->Encode("aaa", false, false), (std::vector<TokenId>{256, 'a'}));
  // a a b: "a a"(rank 0) beats "a b"(rank 1), then "aa b" -> aab.
  EXPECT_EQ(tok->Encode("aab", false, false), (std::vector<TokenId>{258}));
  // b a a: only "a a" applies ("baa" has no merge): [b, aa].
  EXPECT_EQ(tok->Encode("baa", false, false), (std::vector<TokenId>{'b', 256}));
  // Pre-tokenizer boundaries stop merges: "a a" is the words "a" and " a" (byte ids = bytes).
  EXPECT_EQ(tok->Encode("a a", false, false), (std::vector<TokenId>{'a', ' ', 'a'}));
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{258, ' ', 256}), "aab aa");
}

TEST(TokenizerBpe, SpecialTokens) {
  TokenizerData data = ByteLevelData({}, {});
  const TokenId bos = data.bos_id, eos = data.eos_id, eos_x = eos + 1, tool = eos + 2;
  auto tok = MustCreate(data);
  // parse_special: the longest special token at a position wins.
  EXPECT_EQ(tok->Encode("<|end|>x<|end|>", false, true), (std::vector<TokenId>{eos_x, eos}));
  EXPECT_EQ(tok->Encode("a<|begin|>b", false, true), (std::vector<TokenId>{'a', bos, 'b'}));
  // Without parse_special, control tokens are plain text...
  std::vector<TokenId> plain = tok->Encode("<|end|>", false, false);
  EXPECT_EQ(plain.size(), 7u);
  EXPECT_EQ(tok->Decode(plain), "<|end|>");
  // ...but user-defined tokens are always matched (as in HF tokenizers and llama.cpp).
  EXPECT_EQ(tok->Encode("<tool>", false, false), (std::vector<TokenId>{tool}));
  // Decoding: control text unless skipped; user-defined text always.
  std::vector<TokenId> ids = {bos, 'h', 'i', tool, eos};
  EXPECT_EQ(tok->Decode(ids), "<|begin|>hi<tool><|end|>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "hi<tool>");
}

TEST(TokenizerBpe, AddSpecial) {
  TokenizerData data = ByteLevelData({}, {});
  const TokenId bos = data.bos_id, eos = data.eos_id;
  EXPECT_EQ(MustCreate(data)->Encode("x", true, false), (std::vector<TokenId>{'x'}));
  data.add_bos = true;
  EXPECT_EQ(MustCreate(data)->Encode("x", true, false), (std::vector<TokenId>{bos, 'x'}));
  EXPECT_EQ(MustCreate(data)->Encode("x", false, false), (std::vector<TokenId>{'x'}));
  EXPECT_EQ(MustCreate(data)->Encode("", true, false), (std::vector<TokenId>{bos}));
  data.add_eos = true;
  EXPECT_EQ(MustCreate(data)->Encode("x", true, false), (std::vector<TokenId>{bos, 'x', eos}));
}

TEST(TokenizerBpe, EogIds) {
  TokenizerData data = ByteLevelData({}, {});
  auto tok = MustCreate(data);
  TokenId eot = data.eos_id + 3;  // "<|eot_id|>"
  EXPECT_EQ(tok->eog_ids(), (std::vector<TokenId>{data.eos_id, eot}));
  EXPECT_TRUE(tok->IsEog(eot));
  EXPECT_FALSE(tok->IsEog(data.bos_id));
}

TEST(TokenizerBpe, InvalidUtf8RoundTrips) {
  auto tok = MustCreate(ByteLevelData({}, {}));
  const std::string inputs[] = {
      "\xff",           "ab\xfe\xff cd", "\xc3",     "x\xe2\x82",
      "\xed\xa0\x80 z", "\xf0\x9f\x98",  "\xc0\xaf", std::string("nul\0byte", 8)};
  for (const std::string& s : inputs) {
    EXPECT_EQ(tok->Decode(tok->Encode(s, false, false)), s) << Printable(s);
  }
}

TEST(TokenizerBpe, UnknownPreTokenizerFallsBack) {
  TokenizerData data = ByteLevelData({}, {});
  data.pre = "no-such-pre";
  auto tok = MustCreate(data);
  EXPECT_EQ(tok->pre_name(), "gpt2");
  EXPECT_EQ(tok->Decode(tok->Encode("still works 123", false, false)), "still works 123");
}

TEST(TokenizerCreate, RejectsBadData) {
  TokenizerData data = ByteLevelData({}, {});
  {
    TokenizerData bad = data;
    bad.model = "wordpiece";
    EXPECT_EQ(Tokenizer::Create(bad).status().code(), StatusCode::kUnimplemented);
  }
  {
    TokenizerData bad = data;
    bad.eos_id = static_cast<TokenId>(bad.tokens.size());
    EXPECT_EQ(Tokenizer::Create(bad).status().code(), StatusCode::kOutOfRange);
  }
  {
    TokenizerData bad = data;
    bad.scores.assign(3, 0.0f);
    EXPECT_EQ(Tokenizer::Create(bad).status().code(), StatusCode::kInvalidArgument);
  }
  {
    TokenizerData bad = data;
    bad.token_types[5] = static_cast<TokenType>(42);
    EXPECT_EQ(Tokenizer::Create(bad).status().code(), StatusCode::kInvalidArgument);
  }
  {
    TokenizerData bad = data;
    bad.merges = {"nospace"};
    EXPECT_EQ(Tokenizer::Create(bad).status().code(), StatusCode::kInvalidArgument);
  }
  {
    TokenizerData bad = data;
    bad.tokens.clear();
    bad.token_types.clear();
    EXPECT_FALSE(Tokenizer::Create(bad).ok());
  }
}

// A SentencePiece-style vocabulary: <unk> <s> </s>, then pieces with scores, optionally bytes.
TokenizerData SpmData(bool with_bytes) {
  TokenizerData data;
  data.model = "llama";
  data.add_bos = true;
  data.add_space_prefix = true;
  data.unk_id = 0;
  data.bos_id = 1;
  data.eos_id = 2;
  auto add = [&](std::string text, TokenType type, float score) {
    data.tokens.push_back(std::move(text));
    data.token_types.push_back(type);
    data.scores.push_back(score);
  };
  add("<unk>", TokenType::kUnknown, 0);
  add("<s>", TokenType::kControl, 0);
  add("</s>", TokenType::kControl, 0);
  const std::pair<const char*, float> pieces[] = {
      {"\xE2\x96\x81", -1},  // 3 ▁
      {"a", -2},             // 4
      {"b", -3},             // 5
      {"ab", -4},            // 6
      {"\xE2\x96\x81"
       "ab",
       -5},           // 7 ▁ab
      {"bb", -0.5f},  // 8: higher score than "ab"
  };
  for (auto [text, score] : pieces) add(text, TokenType::kNormal, score);
  if (with_bytes) {
    for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b), TokenType::kByte, 0);
  }
  return data;
}

TEST(TokenizerSpm, MergesByScoreAndPrefixesSpace) {
  auto tok = MustCreate(SpmData(true));
  // "▁ab" -> ▁ab ; " ab" -> "▁▁ab" -> ▁ ▁ab
  EXPECT_EQ(tok->Encode("ab", false, false), (std::vector<TokenId>{7}));
  EXPECT_EQ(tok->Encode(" ab", false, false), (std::vector<TokenId>{3, 7}));
  // "abb": "bb" (score -0.5) beats "ab" (-4): ▁ a bb.
  EXPECT_EQ(tok->Encode("abb", false, false), (std::vector<TokenId>{3, 4, 8}));
  EXPECT_EQ(tok->Encode("ab", true, false), (std::vector<TokenId>{1, 7}));
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{1, 7, 3, 4}), "<s> ab a");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{1, 7, 3, 4}, true), "ab a");
  // After a special token the text gets a prefix space again.
  EXPECT_EQ(tok->Encode("ab</s>ab", false, true), (std::vector<TokenId>{7, 2, 7}));
}

TEST(TokenizerSpm, ByteFallbackAndUnknown) {
  auto tok = MustCreate(SpmData(true));
  const TokenId byte0 = 9;  // <0x00>
  // "é" (C3 A9) is not a piece: its bytes' tokens.
  EXPECT_EQ(tok->Encode("\xC3\xA9", false, false),
            (std::vector<TokenId>{3, byte0 + 0xC3, byte0 + 0xA9}));
  EXPECT_EQ(tok->TokenToBytes(byte0 + 0xC3), "\xC3");
  EXPECT_EQ(tok->Decode(tok->Encode("a\xC3\xA9 b\xF0\x9F\x98\x80", false, false)),
            "a\xC3\xA9 b\xF0\x9F\x98\x80");
  // Without byte tokens, a character outside the vocabulary becomes <unk>.
  auto no_bytes = MustCreate(SpmData(false));
  EXPECT_EQ(no_bytes->Encode("a\xC3\xA9", false, false), (std::vector<TokenId>{3, 4, 0}));
}

TEST(IncrementalDecoder, HoldsSplitCharacters) {
  auto tok = MustCreate(ByteLevelData({}, {}));
  // 😀 is F0 9F 98 80: byte-level ids are the bytes themselves here.
  IncrementalDecoder decoder(*tok);
  EXPECT_EQ(decoder.Push('a'), "a");
  EXPECT_EQ(decoder.Push(0xF0), "");
  EXPECT_EQ(decoder.Push(0x9F), "");
  EXPECT_EQ(decoder.Push(0x98), "");
  EXPECT_EQ(decoder.Push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(decoder.Push('b'), "b");
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(IncrementalDecoder, ZwjSequenceAcrossSpmByteTokens) {
  auto tok = MustCreate(SpmData(true));
  const std::string family = "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9";  // 👨‍👩
  std::vector<TokenId> ids = tok->Encode(family, false, false);
  IncrementalDecoder decoder(*tok);
  std::string out;
  for (TokenId id : ids) {
    std::string delta = decoder.Push(id);
    EXPECT_EQ(ValidUtf8Prefix(delta), delta.size()) << "emitted half a character";
    out += delta;
  }
  out += decoder.Flush();
  EXPECT_EQ(out, " " + family);  // the stream keeps SentencePiece's prefix space
}

TEST(IncrementalDecoder, ReplacesInvalidBytes) {
  auto tok = MustCreate(ByteLevelData({}, {}));
  IncrementalDecoder decoder(*tok);
  // A lone continuation byte can never become valid: replaced at once.
  EXPECT_EQ(decoder.Push(0x80), "\xEF\xBF\xBD");
  // A lead byte followed by a non-continuation: the lead is replaced, the rest emitted.
  EXPECT_EQ(decoder.Push(0xE2), "");
  EXPECT_EQ(decoder.Push('x'), "\xEF\xBF\xBDx");
  // An incomplete character at the end comes out of Flush as one U+FFFD.
  EXPECT_EQ(decoder.Push(0xE2), "");
  EXPECT_EQ(decoder.Push(0x82), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.Flush(), "");
  // Special tokens are skipped by default.
  EXPECT_EQ(decoder.Push(tok->eos_id()), "");
  IncrementalDecoder keep(*tok, /*skip_special=*/false);
  EXPECT_EQ(keep.Push(tok->eos_id()), "<|end|>");
}

TEST(PreTokenizer, Splits) {
  auto pre = PreTokenizer::Create("llama-bpe");
  ASSERT_TRUE(pre.ok());
  std::vector<std::string_view> pieces;
  (*pre)->Split("Hello world 12345 it's\n\n", &pieces);
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"Hello", " world", " ", "123", "45", " it", "'s",
                                                   "\n\n"}));
  auto smol = PreTokenizer::Create("smollm");
  ASSERT_TRUE(smol.ok());
  pieces.clear();
  (*smol)->Split("a 12", &pieces);
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"a", " ", "1", "2"}));
}

}  // namespace
}  // namespace cleave
