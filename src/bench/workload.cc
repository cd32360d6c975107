#include "bench/workload.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace cleave::bench {
namespace {

using nlohmann::json;

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open workload file '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss("error reading '{}'", path);
  return ss.str();
}

// Reads a non-negative integer field; rejects floats with a fraction, negatives and strings.
Result<int64_t> IntField(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return InvalidArgument("missing field \"{}\"", key);
  if (it->is_number_integer() || it->is_number_unsigned()) {
    int64_t v = it->get<int64_t>();
    if (v < 0) return InvalidArgument("field \"{}\" is negative ({})", key, v);
    return v;
  }
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (d >= 0 && d == std::floor(d) && d < 9e15) return static_cast<int64_t>(d);
  }
  return InvalidArgument("field \"{}\" must be a non-negative integer, got {}", key, it->dump());
}

// Calls fn(line_number, parsed_object) for each non-blank line of a JSONL file.
template <typename Fn>
Status ForEachJsonLine(const std::string& path, const std::string& text, Fn&& fn) {
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json obj = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded()) return InvalidArgument("{}:{}: not valid JSON", path, line_no);
    if (!obj.is_object()) return InvalidArgument("{}:{}: expected a JSON object", path, line_no);
    Status s = fn(line_no, obj);
    if (!s.ok()) return s.WithContext(fmt::format("{}:{}", path, line_no));
  }
  return Status::Ok();
}

struct LogNormalSpec {
  double mean;   // published mean (tokens)
  double sigma;  // shape: our choice, see docs/benchmarking.md
};
int64_t SampleLogNormal(const LogNormalSpec& s, Rng& rng) {
  double mu = std::log(s.mean) - 0.5 * s.sigma * s.sigma;  // so that E[X] = mean
  return std::max<int64_t>(1, std::llround(rng.LogNormal(mu, s.sigma)));
}

}  // namespace

int64_t ScaleLength(int64_t n, double scale) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(n) * scale)));
}

Result<int64_t> CharEstimateCounter::Count(std::string_view text) {
  return static_cast<int64_t>((text.size() + 3) / 4);
}

Corpus Corpus::FromText(std::string text) {
  Corpus c;
  c.text_ = std::make_shared<const std::string>(std::move(text));
  const std::string& t = *c.text_;
  size_t i = 0;
  while (i < t.size()) {
    while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
    size_t start = i;
    while (i < t.size() && !std::isspace(static_cast<unsigned char>(t[i]))) ++i;
    if (i > start) c.words_.emplace_back(t.data() + start, i - start);
  }
  return c;
}

Result<Corpus> Corpus::Load(const std::string& path) {
  CLEAVE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Corpus c = FromText(std::move(text));
  if (c.num_words() < 100) {
    return InvalidArgument("corpus '{}' has only {} words; need at least 100", path, c.num_words());
  }
  return c;
}

std::string Corpus::Words(size_t start, size_t count) const {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) out.push_back(' ');
    out.append(words_[(start + i) % words_.size()]);
  }
  return out;
}

Result<std::string> Corpus::Cut(int64_t target_tokens, TokenCounter& counter, Rng& rng,
                                int64_t* actual_tokens) const {
  CLEAVE_CHECK(!words_.empty());
  CLEAVE_CHECK(target_tokens >= 1);
  const size_t start =
      static_cast<size_t>(rng.UniformInt(0, static_cast<int64_t>(words_.size()) - 1));
  auto count_words = [&](int64_t n) -> Result<int64_t> {
    return counter.Count(Words(start, static_cast<size_t>(n)));
  };
  // Bracket: lo words fit (<= target), hi words do not. Start near 0.75 words per token and
  // widen geometrically, so a typical cut costs about ten counts.
  int64_t lo = 0, hi = std::max<int64_t>(1, target_tokens * 3 / 4);
  int64_t lo_tokens = 0;
  for (;;) {
    CLEAVE_ASSIGN_OR_RETURN(int64_t n, count_words(hi));
    if (n > target_tokens) break;
    lo = hi;
    lo_tokens = n;
    hi = hi + std::max<int64_t>(1, hi / 4);
    if (hi > 16 * target_tokens + 16) {
      return Internal("token counter reports {} tokens for {} words; cannot reach {} tokens", n, lo,
                      target_tokens);
    }
  }
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    CLEAVE_ASSIGN_OR_RETURN(int64_t n, count_words(mid));
    if (n <= target_tokens) {
      lo = mid;
      lo_tokens = n;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) {
    // Not even one word fits (e.g. target 1 and a long word): send one word anyway.
    lo = 1;
    CLEAVE_ASSIGN_OR_RETURN(lo_tokens, count_words(1));
  }
  *actual_tokens = lo_tokens;
  return Words(start, static_cast<size_t>(lo));
}

Result<SyntheticApp> ParseSyntheticApp(std::string_view name) {
  if (name == "chatbot") return SyntheticApp::kChatbot;
  if (name == "code" || name == "code-completion") return SyntheticApp::kCode;
  if (name == "summarization") return SyntheticApp::kSummarization;
  return InvalidArgument("unknown synthetic workload '{}' (chatbot, code, summarization)", name);
}

// Length models; the published statistics they follow are in docs/benchmarking.md.
// DistServe's preprocessing keeps input + output below OPT's 2048 positions, so do we.
LengthPair SampleLengths(SyntheticApp app, Rng& rng) {
  constexpr int64_t kMaxTotal = 2048;
  switch (app) {
    case SyntheticApp::kChatbot:
    case SyntheticApp::kCode: {
      const bool chat = app == SyntheticApp::kChatbot;
      const LogNormalSpec in = chat ? LogNormalSpec{755.4, 0.9} : LogNormalSpec{171.0, 0.45};
      const LogNormalSpec out = chat ? LogNormalSpec{200.4, 0.9} : LogNormalSpec{98.2, 0.6};
      for (int attempt = 0;; ++attempt) {
        LengthPair p{SampleLogNormal(in, rng), SampleLogNormal(out, rng)};
        p.input_tokens = std::max<int64_t>(p.input_tokens, 4);
        p.output_tokens = std::max<int64_t>(p.output_tokens, 4);
        if (p.input_tokens + p.output_tokens < kMaxTotal) return p;
        if (attempt == 100) return {kMaxTotal / 2, kMaxTotal / 4};  // unreachable in practice
      }
    }
    case SyntheticApp::kSummarization: {
      // LongBench as DistServe prepared it: the context is truncated to a random length in
      // [1900, 2048] minus the answer's length; answers are short.
      int64_t out = std::min<int64_t>(SampleLogNormal({90.7, 0.5}, rng), 500);
      int64_t total = rng.UniformInt(1900, kMaxTotal - 8);
      return {total - out, out};
    }
  }
  return {};
}

Result<std::vector<WorkloadRequest>> LoadShareGpt(const std::string& path,
                                                  const WorkloadOptions& options,
                                                  TokenCounter& counter) {
  CLEAVE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("{}: not valid JSON", path);
  if (!doc.is_array()) {
    return InvalidArgument("{}: ShareGPT file must be a JSON array of conversations", path);
  }
  // Like vLLM: keep entries with at least two turns; the first turn is the prompt, the second
  // the reference completion whose length is the output length.
  std::vector<size_t> order;
  for (size_t i = 0; i < doc.size(); ++i) {
    const json& e = doc[i];
    if (!e.is_object()) return InvalidArgument("{}: entry {} is not an object", path, i);
    auto conv = e.find("conversations");
    if (conv == e.end() || !conv->is_array()) {
      return InvalidArgument("{}: entry {} has no \"conversations\" array", path, i);
    }
    if (conv->size() < 2) continue;
    for (size_t t = 0; t < 2; ++t) {
      const json& turn = (*conv)[t];
      if (!turn.is_object() || !turn.contains("value") || !turn["value"].is_string()) {
        return InvalidArgument("{}: entry {} turn {} has no string \"value\"", path, i, t);
      }
    }
    order.push_back(i);
  }
  Rng rng(options.seed);
  for (size_t i = order.size(); i > 1; --i) {  // Fisher-Yates with our portable Rng
    std::swap(order[i - 1],
              order[static_cast<size_t>(rng.UniformInt(0, static_cast<int64_t>(i) - 1))]);
  }
  std::vector<WorkloadRequest> out;
  for (size_t i : order) {
    if (static_cast<int64_t>(out.size()) >= options.num_prompts) break;
    const json& conv = doc[i]["conversations"];
    WorkloadRequest r;
    r.prompt = conv[0]["value"].get<std::string>();
    CLEAVE_ASSIGN_OR_RETURN(r.prompt_tokens, counter.Count(r.prompt));
    if (options.output_len_override > 0) {
      r.output_tokens = options.output_len_override;
    } else {
      CLEAVE_ASSIGN_OR_RETURN(r.output_tokens, counter.Count(conv[1]["value"].get<std::string>()));
      // vLLM's filter: drop very short pairs and those too long for a 2048-token context.
      if (r.prompt_tokens < 4 || r.output_tokens < 4) continue;
      if (r.prompt_tokens > 1024 || r.prompt_tokens + r.output_tokens > 2048) continue;
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) return InvalidArgument("{}: no usable conversations", path);
  return out;
}

Result<std::vector<WorkloadRequest>> LoadJsonl(const std::string& path,
                                               const WorkloadOptions& options,
                                               TokenCounter& counter) {
  CLEAVE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<WorkloadRequest> rows;
  CLEAVE_RETURN_IF_ERROR(ForEachJsonLine(path, text, [&](int64_t, const json& obj) -> Status {
    auto prompt = obj.find("prompt");
    if (prompt == obj.end() || !prompt->is_string()) {
      return InvalidArgument("missing string field \"prompt\"");
    }
    WorkloadRequest r;
    r.prompt = prompt->get<std::string>();
    CLEAVE_ASSIGN_OR_RETURN(r.output_tokens, IntField(obj, "output_len"));
    if (r.output_tokens < 1) return InvalidArgument("\"output_len\" must be >= 1");
    if (options.output_len_override > 0) r.output_tokens = options.output_len_override;
    rows.push_back(std::move(r));
    return Status::Ok();
  }));
  if (rows.empty()) return InvalidArgument("{}: no requests", path);
  // A short file is cycled so that every probe can send num_prompts requests.
  std::vector<WorkloadRequest> out;
  for (int64_t i = 0; i < options.num_prompts; ++i) {
    WorkloadRequest r = rows[static_cast<size_t>(i) % rows.size()];
    CLEAVE_ASSIGN_OR_RETURN(r.prompt_tokens, counter.Count(r.prompt));
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<WorkloadRequest>> LoadTrace(const std::string& path,
                                               const WorkloadOptions& options, const Corpus& corpus,
                                               TokenCounter& counter) {
  CLEAVE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  struct Row {
    double t_ms;
    int64_t in, out;
  };
  std::vector<Row> rows;
  CLEAVE_RETURN_IF_ERROR(ForEachJsonLine(path, text, [&](int64_t, const json& obj) -> Status {
    auto ts = obj.find("timestamp");
    if (ts == obj.end() || !ts->is_number() || ts->get<double>() < 0) {
      return InvalidArgument("missing non-negative number \"timestamp\" (milliseconds)");
    }
    CLEAVE_ASSIGN_OR_RETURN(int64_t in, IntField(obj, "input_length"));
    CLEAVE_ASSIGN_OR_RETURN(int64_t out, IntField(obj, "output_length"));
    if (in < 1 || out < 1) return InvalidArgument("lengths must be >= 1");
    if (!rows.empty() && ts->get<double>() < rows.back().t_ms) {
      return InvalidArgument("timestamps must not decrease");
    }
    rows.push_back({ts->get<double>(), in, out});
    return Status::Ok();
  }));
  if (rows.empty()) return InvalidArgument("{}: no requests", path);
  Rng rng(options.seed);
  std::vector<WorkloadRequest> out;
  for (size_t i = 0; i < rows.size() && static_cast<int64_t>(out.size()) < options.num_prompts;
       ++i) {
    WorkloadRequest r;
    r.timestamp_s = (rows[i].t_ms - rows[0].t_ms) / 1e3;
    CLEAVE_ASSIGN_OR_RETURN(r.prompt, corpus.Cut(ScaleLength(rows[i].in, options.length_scale),
                                                 counter, rng, &r.prompt_tokens));
    r.output_tokens = options.output_len_override > 0
                          ? options.output_len_override
                          : ScaleLength(rows[i].out, options.length_scale);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<WorkloadRequest>> MakeSynthetic(SyntheticApp app, const WorkloadOptions& options,
                                                   const Corpus& corpus, TokenCounter& counter) {
  Rng lengths_rng(options.seed);
  Rng text_rng(options.seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<WorkloadRequest> out;
  for (int64_t i = 0; i < options.num_prompts; ++i) {
    LengthPair p = SampleLengths(app, lengths_rng);
    WorkloadRequest r;
    CLEAVE_ASSIGN_OR_RETURN(r.prompt, corpus.Cut(ScaleLength(p.input_tokens, options.length_scale),
                                                 counter, text_rng, &r.prompt_tokens));
    r.output_tokens = options.output_len_override > 0
                          ? options.output_len_override
                          : ScaleLength(p.output_tokens, options.length_scale);
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<WorkloadRequest>> LoadWorkload(std::string_view spec,
                                                  const WorkloadOptions& options,
                                                  TokenCounter& counter) {
  if (options.num_prompts < 1) return InvalidArgument("--num-prompts must be >= 1");
  if (!(options.length_scale > 0)) return InvalidArgument("--length-scale must be > 0");
  auto colon = spec.find(':');
  std::string kind(spec.substr(0, colon));
  std::string file = colon == std::string_view::npos ? "" : std::string(spec.substr(colon + 1));
  auto need_file = [&]() -> Status {
    if (file.empty()) return InvalidArgument("workload '{}' needs a file: {}:PATH", kind, kind);
    return Status::Ok();
  };
  auto load_corpus = [&]() -> Result<Corpus> {
    if (options.corpus_path.empty()) {
      return NotFound("no text corpus found for synthetic prompts; pass --corpus FILE");
    }
    return Corpus::Load(options.corpus_path);
  };
  if (kind == "sharegpt") {
    CLEAVE_RETURN_IF_ERROR(need_file());
    return LoadShareGpt(file, options, counter);
  }
  if (kind == "jsonl") {
    CLEAVE_RETURN_IF_ERROR(need_file());
    return LoadJsonl(file, options, counter);
  }
  if (kind == "trace") {
    CLEAVE_RETURN_IF_ERROR(need_file());
    CLEAVE_ASSIGN_OR_RETURN(Corpus corpus, load_corpus());
    return LoadTrace(file, options, corpus, counter);
  }
  auto app = ParseSyntheticApp(kind);
  if (!app.ok() || !file.empty()) {
    return InvalidArgument(
        "unknown workload '{}': use chatbot, code, summarization, sharegpt:FILE, jsonl:FILE or "
        "trace:FILE",
        spec);
  }
  CLEAVE_ASSIGN_OR_RETURN(Corpus corpus, load_corpus());
  return MakeSynthetic(*app, options, corpus, counter);
}

}  // namespace cleave::bench
