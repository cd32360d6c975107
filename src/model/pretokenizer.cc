#include "model/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <spdlog/spdlog.h>

#include <array>

namespace cleave {
namespace {

// GPT-2's regex as Hugging Face's ByteLevel pre-tokenizer spells it (with the final `\s+`, which
// takes a lone whitespace character that precedes a non-space, e.g. the "\n" in "\nx").
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3: case-insensitive contractions, a letter run may take one leading non-letter (so
// "_foo" and "(foo" stay together), digits in groups of at most three, newlines kept apart.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 but every digit on its own.
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// SmolLM / StarCoder: every digit isolated first, then GPT-2's regex on the rest.
constexpr std::string_view kDigitRegex = R"(\p{N})";

struct RegexSet {
  std::string_view canonical;
  std::vector<std::string_view> regexes;
};

// Maps a `tokenizer.ggml.pre` name to its regexes; false if the name is unknown.
bool LookupRegexSet(std::string_view name, RegexSet* set) {
  static constexpr std::array<std::string_view, 3> kGpt2Names = {"default", "gpt2", "gpt-2"};
  static constexpr std::array<std::string_view, 5> kSmolNames = {"smollm", "starcoder", "refact",
                                                                 "codeshell", "command-r"};
  static constexpr std::array<std::string_view, 3> kLlama3Names = {"llama-bpe", "llama3",
                                                                   "llama-v3"};
  static constexpr std::array<std::string_view, 3> kQwen2Names = {"qwen2", "stablelm2",
                                                                  "deepseek-r1-qwen"};
  auto in = [name](const auto& names) {
    for (std::string_view n : names) {
      if (n == name) return true;
    }
    return false;
  };
  if (in(kGpt2Names)) {
    *set = {"gpt2", {kGpt2Regex}};
  } else if (in(kSmolNames)) {
    *set = {"smollm", {kDigitRegex, kGpt2Regex}};
  } else if (in(kLlama3Names)) {
    *set = {"llama3", {kLlama3Regex}};
  } else if (in(kQwen2Names)) {
    *set = {"qwen2", {kQwen2Regex}};
  } else {
    return false;
  }
  return true;
}

// Per-thread match state: pcre2_match needs writable match data, and the JIT a stack. Created
// on first use in each thread, freed at thread exit.
struct MatchScratch {
  pcre2_match_data* match_data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;

  MatchScratch() {
    match_data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) {
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    CLEAVE_CHECK(match_data != nullptr && context != nullptr, "PCRE2 allocation failed");
  }
  ~MatchScratch() {
    pcre2_match_data_free(match_data);
    pcre2_match_context_free(context);
    if (jit_stack != nullptr) pcre2_jit_stack_free(jit_stack);
  }
};

MatchScratch& Scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view name) {
  RegexSet set;
  if (!LookupRegexSet(name, &set)) {
    spdlog::warn("tokenizer: unknown pre-tokenizer '{}', using the GPT-2 regex", name);
    LookupRegexSet("gpt2", &set);
  }
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->name_ = std::string(set.canonical);
  for (std::string_view pattern : set.regexes) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto regex = std::make_unique<Regex>();
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (regex->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      return Internal("tokenizer: regex /{}/ does not compile at {}: {}", pattern, error_offset,
                      reinterpret_cast<const char*>(message.data()));
    }
    // Without JIT (e.g. a platform PCRE2 built without it) matching still works, only slower.
    if (pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE) != 0) {
      spdlog::debug("tokenizer: PCRE2 JIT unavailable for /{}/", pattern);
    }
    pre->regexes_.push_back(std::move(regex));
  }
  return pre;
}

void PreTokenizer::SplitOne(const Regex& regex, std::string_view piece,
                            std::vector<std::string_view>* out) const {
  MatchScratch& scratch = Scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t last = 0;    // end of what has been emitted
  size_t offset = 0;  // where the next search starts
  while (offset < piece.size()) {
    int rc = pcre2_match(regex.code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK,
                         scratch.match_data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // Resource limits (JIT stack, match limit) on pathological input: keep the rest whole
      // rather than fail the request. BPE still encodes it, only with other boundaries.
      spdlog::warn("tokenizer: pre-tokenizer regex failed with PCRE2 error {}", rc);
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data);
    size_t begin = ovector[0];
    size_t end = ovector[1];
    if (end == begin) {
      // An empty match (none of our regexes has one): step over one character.
      size_t step = Utf8CharLength(piece.substr(offset));
      offset += step == 0 ? 1 : step;
      continue;
    }
    if (begin > last) out->push_back(piece.substr(last, begin - last));
    out->push_back(piece.substr(begin, end - begin));
    last = offset = end;
  }
  if (last < piece.size()) out->push_back(piece.substr(last));
}

void PreTokenizer::Split(std::string_view text, std::vector<std::string_view>* pieces) const {
  // Valid UTF-8 runs go through the regexes; each invalid byte becomes a piece of its own.
  std::vector<std::string_view> current;
  std::vector<std::string_view> next;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t valid = ValidUtf8Prefix(text.substr(pos));
    if (valid == 0) {
      pieces->push_back(text.substr(pos, 1));
      ++pos;
      continue;
    }
    current.assign(1, text.substr(pos, valid));
    for (const auto& regex : regexes_) {
      next.clear();
      for (std::string_view piece : current) SplitOne(*regex, piece, &next);
      current.swap(next);
    }
    pieces->insert(pieces->end(), current.begin(), current.end());
    pos += valid;
  }
}

size_t Utf8CharLength(std::string_view text) {
  if (text.empty()) return 0;
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  auto cont = [&](size_t i) { return i < text.size() && (byte(i) & 0xC0) == 0x80; };
  uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  if (b0 < 0xC2) return 0;  // continuation byte or overlong 2-byte lead
  if (b0 < 0xE0) return cont(1) ? 2 : 0;
  if (b0 < 0xF0) {
    if (!cont(1) || !cont(2)) return 0;
    uint8_t b1 = byte(1);
    if (b0 == 0xE0 && b1 < 0xA0) return 0;   // overlong
    if (b0 == 0xED && b1 >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (b0 < 0xF5) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    uint8_t b1 = byte(1);
    if (b0 == 0xF0 && b1 < 0x90) return 0;   // overlong
    if (b0 == 0xF4 && b1 >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

size_t ValidUtf8Prefix(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    size_t len = Utf8CharLength(text.substr(pos));
    if (len == 0) break;
    pos += len;
  }
  return pos;
}

}  // namespace cleave
