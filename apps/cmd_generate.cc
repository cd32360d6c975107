// `cleave generate`: run one prompt through the model and stream the continuation to stdout.
// `cleave chat`: an interactive multi-turn chat on the model's chat template.
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "apps/commands.h"
#include "apps/load_model.h"
#include "core/log.h"
#include "engine/engine.h"
#include "engine/model_executor.h"
#include "kernels/cpu/dispatch.h"
#include "model/model_path.h"

namespace cleave::app {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  std::string system;
  bool chat = false;
  int32_t max_tokens = 128;
  float temperature = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repetition_penalty = 1.0f;
  int64_t seed = -1;
  int threads = 0;
  int64_t context = 0;
  bool ignore_eos = false;
  std::string batch_file;
  std::vector<std::string> stop;
};

void AddModelAndSamplingFlags(CLI::App* cmd, GenerateOptions& o) {
  cmd->add_option("-m,--model", o.model, "GGUF model file (default: the default model)");
  cmd->add_option("-n,--max-tokens", o.max_tokens, "Tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temp,--temperature", o.temperature, "Sampling temperature; 0 = greedy")
      ->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-k", o.top_k, "Keep the k most likely tokens; 0 = off")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass; 1 = off")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", o.min_p, "Drop tokens below min-p times the top probability; 0 = off")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--repeat-penalty", o.repetition_penalty, "Repetition penalty; 1 = off")
      ->check(CLI::Range(0.0f, 10.0f));
  cmd->add_option("--seed", o.seed, "Random seed; -1 = random");
  cmd->add_option("-t,--threads", o.threads, "Threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx-size", o.context,
                  "Context length in tokens (default: the model's, at most 8192)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("--system", o.system, "System message (with --chat / chat)");
  cmd->add_flag("--ignore-eos", o.ignore_eos, "Keep generating past end-of-generation tokens");
  cmd->add_option("--stop", o.stop, "Stop string (repeatable); matched in the text, not printed");
}

SamplingParams ToSamplingParams(const GenerateOptions& o) {
  SamplingParams p;
  p.temperature = o.temperature;
  p.top_k = o.top_k;
  p.top_p = o.top_p;
  p.min_p = o.min_p;
  p.repetition_penalty = o.repetition_penalty;
  p.max_tokens = o.max_tokens;
  p.ignore_eos = o.ignore_eos;
  p.stop = o.stop;
  return p;
}

// One engine in this process: generate, chat and --batch-file all run through it, so they share
// the server's generation loop (sampling, stop strings, detokenization) and chat turns reuse the
// KV of earlier turns through the prefix cache.
struct LocalEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<ModelExecutor> executor;
  std::unique_ptr<Engine> engine;
};

int ThreadsOf(const GenerateOptions& o) {
  return o.threads > 0 ? o.threads
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Builds the engine over an already loaded model. kv_tokens: KV capacity, at least the context
// (-c, default the model's, at most 8192), which is also the prompt + output limit.
LocalEngine MakeEngine(std::unique_ptr<Model> model, const GenerateOptions& o, int64_t kv_tokens) {
  LocalEngine l;
  l.model = std::move(model);
  const int64_t context =
      o.context > 0 ? o.context : std::min<int64_t>(l.model->config().context_length, 8192);
  EngineConfig config;
  config.block_size = 16;
  config.num_blocks = static_cast<int32_t>((std::max(kv_tokens, context) + config.block_size - 1) /
                                           config.block_size);
  config.max_model_len = static_cast<int32_t>(context);
  config.seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device{}();
  l.executor =
      std::make_unique<ModelExecutor>(*l.model, config.num_blocks, config.block_size, ThreadsOf(o));
  l.engine = std::make_unique<Engine>(config, l.executor.get(), &l.model->tokenizer());
  spdlog::info("{} threads, context {} tokens, KV cache {} tokens", ThreadsOf(o), context,
               int64_t{config.num_blocks} * config.block_size);
  return l;
}

Result<LocalEngine> StartEngine(const GenerateOptions& o) {
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModelForCommand(o.model));
  return MakeEngine(std::move(model), o, 0);
}

// Steps the engine until every request has finished, handing each output to on_output.
Status RunToCompletion(Engine& engine, const std::function<void(const RequestOutput&)>& on_output) {
  while (engine.HasUnfinished()) {
    CLEAVE_RETURN_IF_ERROR(engine.Step());
    for (const RequestOutput& out : engine.PollOutputs()) on_output(out);
  }
  for (const RequestOutput& out : engine.PollOutputs()) on_output(out);
  return Status::Ok();
}

// Runs one request, streaming its text to on_text; the last output (finish reason, timings).
Result<RequestOutput> RunOne(Engine& engine, Request request,
                             const std::function<void(const std::string&)>& on_text) {
  CLEAVE_ASSIGN_OR_RETURN(RequestId id, engine.AddRequest(std::move(request)));
  RequestOutput last;
  int32_t num_tokens = 0;
  CLEAVE_RETURN_IF_ERROR(RunToCompletion(engine, [&](const RequestOutput& out) {
    if (out.request_id != id) return;
    if (!out.text.empty()) on_text(out.text);
    num_tokens += static_cast<int32_t>(out.token_ids.size());
    if (!out.token_times_s.empty()) last.token_times_s.push_back(out.token_times_s.back());
    if (out.finished) {
      std::vector<double> times = std::move(last.token_times_s);
      last = out;
      last.token_times_s = std::move(times);
    }
  }));
  if (last.finish_reason == FinishReason::kError) return Internal("{}", last.error);
  last.token_ids.resize(num_tokens);  // only the count is used
  return last;
}

Result<std::vector<TokenId>> ChatPrompt(const Model& model, const nlohmann::json& messages) {
  ChatRenderOptions options;
  const Tokenizer& tok = model.tokenizer();
  if (tok.bos_id() >= 0) options.bos_token = std::string(tok.TokenText(tok.bos_id()));
  if (tok.eos_id() >= 0) options.eos_token = std::string(tok.TokenText(tok.eos_id()));
  CLEAVE_ASSIGN_OR_RETURN(std::string text, model.chat_template().Render(messages, options));
  // The template writes BOS itself when the model wants one; do not add a second.
  std::vector<TokenId> ids = tok.Encode(text, /*add_special=*/false, /*parse_special=*/true);
  if (tok.add_bos() && tok.bos_id() >= 0 && (ids.empty() || ids.front() != tok.bos_id())) {
    ids.insert(ids.begin(), tok.bos_id());
  }
  return ids;
}

Request MakeRequest(const GenerateOptions& o, std::vector<TokenId> prompt) {
  Request r;
  r.prompt = std::move(prompt);
  r.params = ToSamplingParams(o);
  if (o.seed >= 0) r.params.seed = static_cast<uint64_t>(o.seed);
  return r;
}

int RunGenerate(const GenerateOptions& o) {
  auto local = StartEngine(o);
  if (!local.ok()) {
    fmt::print(stderr, "error: {}\n", local.status().message());
    return 1;
  }
  Model& model = *local->model;
  Result<std::vector<TokenId>> prompt = std::vector<TokenId>{};
  if (o.chat) {
    nlohmann::json messages = nlohmann::json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    messages.push_back({{"role", "user"}, {"content", o.prompt}});
    prompt = ChatPrompt(model, messages);
  } else {
    prompt = model.tokenizer().Encode(o.prompt, /*add_special=*/true, /*parse_special=*/false);
  }
  if (!prompt.ok()) {
    fmt::print(stderr, "error: {}\n", prompt.status().message());
    return 1;
  }
  if (!o.chat) fmt::print("{}", o.prompt);
  auto out = RunOne(*local->engine, MakeRequest(o, std::move(prompt).value()),
                    [](const std::string& text) {
                      fmt::print("{}", text);
                      std::fflush(stdout);
                    });
  fmt::print("\n");
  std::fflush(stdout);
  if (!out.ok()) {
    fmt::print(stderr, "error: {}\n", out.status().message());
    return 1;
  }
  // Prompt time runs from arrival to the first sampled token; generation from there to the last.
  const int64_t prompt_tokens = out->num_prompt_tokens - out->num_cached_tokens;
  const double prompt_s = out->first_token_time_s - out->arrival_time_s;
  const auto generated = static_cast<int64_t>(out->token_ids.size());
  const double generate_s =
      out->token_times_s.empty() ? 0 : out->token_times_s.back() - out->first_token_time_s;
  fmt::print(stderr,
             "prompt: {} tokens in {:.3f} s ({:.1f} tok/s); generation: {} tokens in {:.3f} s "
             "({:.1f} tok/s after the first); finish: {}\n",
             prompt_tokens, prompt_s, prompt_tokens / std::max(1e-9, prompt_s), generated,
             generate_s, std::max<int64_t>(0, generated - 1) / std::max(1e-9, generate_s),
             FinishReasonName(out->finish_reason));
  return 0;
}

// --batch-file: every non-empty line is a prompt; all run through the engine at once
// (continuous batching), and the outputs are printed in file order.
int RunBatch(const GenerateOptions& o) {
  std::ifstream in(o.batch_file);
  if (!in) {
    fmt::print(stderr, "error: cannot read {}\n", o.batch_file);
    return 1;
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  if (lines.empty()) {
    fmt::print(stderr, "error: {} has no prompts\n", o.batch_file);
    return 1;
  }
  // Tokenize first: the KV capacity is sized to hold every prompt and output at once.
  auto model = LoadModelForCommand(o.model);
  if (!model.ok()) {
    fmt::print(stderr, "error: {}\n", model.status().message());
    return 1;
  }
  const Tokenizer& tok = (*model)->tokenizer();
  std::vector<std::vector<TokenId>> prompts;
  int64_t total_tokens = 0;
  for (const std::string& line : lines) {
    Result<std::vector<TokenId>> ids = std::vector<TokenId>{};
    if (o.chat) {
      nlohmann::json messages = nlohmann::json::array();
      if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
      messages.push_back({{"role", "user"}, {"content", line}});
      ids = ChatPrompt(**model, messages);
    } else {
      ids = tok.Encode(line, /*add_special=*/true, /*parse_special=*/false);
    }
    if (!ids.ok()) {
      fmt::print(stderr, "error: {}\n", ids.status().message());
      return 1;
    }
    total_tokens += static_cast<int64_t>(ids->size()) + o.max_tokens;
    prompts.push_back(std::move(ids).value());
  }
  // Two spare blocks per prompt: a sequence's last block is partly filled.
  LocalEngine local =
      MakeEngine(std::move(model).value(), o, total_tokens + 32 * int64_t(prompts.size()));
  Engine& engine = *local.engine;
  std::map<RequestId, size_t> index;
  std::vector<std::string> texts(prompts.size());
  std::vector<std::string> reasons(prompts.size());
  SamplingParams params = ToSamplingParams(o);
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r;
    r.prompt = prompts[i];
    r.params = params;
    if (o.seed >= 0) r.params.seed = static_cast<uint64_t>(o.seed) + i;
    auto id = engine.AddRequest(std::move(r));
    if (!id.ok()) {
      fmt::print(stderr, "error: prompt {}: {}\n", i + 1, id.status().message());
      return 1;
    }
    index[*id] = i;
  }
  int64_t generated = 0, prompt_tokens = 0;
  while (engine.HasUnfinished()) {
    Status s = engine.Step();
    if (!s.ok()) {
      fmt::print(stderr, "error: {}\n", s.message());
      return 1;
    }
    for (RequestOutput& out : engine.PollOutputs()) {
      const size_t i = index[out.request_id];
      texts[i] += out.text;
      generated += static_cast<int64_t>(out.token_ids.size());
      if (out.finished) {
        reasons[i] = std::string(FinishReasonName(out.finish_reason));
        prompt_tokens += out.num_prompt_tokens;
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; i < prompts.size(); ++i) {
    fmt::print("=== [{}] {}\n{}\n[finish: {}]\n\n", i + 1, lines[i], texts[i], reasons[i]);
  }
  fmt::print(stderr,
             "{} prompts: {} prompt + {} generated tokens in {:.2f} s ({:.1f} generated tok/s, {} "
             "preemptions)\n",
             prompts.size(), prompt_tokens, generated, seconds, generated / std::max(1e-9, seconds),
             engine.num_preemptions());
  return 0;
}

int RunChat(const GenerateOptions& o) {
  auto local = StartEngine(o);
  if (!local.ok()) {
    fmt::print(stderr, "error: {}\n", local.status().message());
    return 1;
  }
  Model& model = *local->model;
  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  if (tty)
    fmt::print(stderr, "Chatting with {}. Ctrl-D to quit, /reset to start over.\n",
               model.config().name);
  std::string line;
  uint64_t turn = 0;
  while (true) {
    if (tty) fmt::print("> ");
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (line == "/reset") {
      messages = nlohmann::json::array();
      if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
      continue;
    }
    messages.push_back({{"role", "user"}, {"content", line}});
    auto prompt = ChatPrompt(model, messages);
    if (!prompt.ok()) {
      fmt::print(stderr, "error: {}\n", prompt.status().message());
      messages.erase(messages.end() - 1);
      continue;
    }
    // Each turn resends the whole conversation; the prefix cache finds the earlier turns' KV.
    std::string reply;
    Request request = MakeRequest(o, std::move(prompt).value());
    if (o.seed >= 0) *request.params.seed += turn++;
    auto out = RunOne(*local->engine, std::move(request), [&](const std::string& text) {
      reply += text;
      fmt::print("{}", text);
      std::fflush(stdout);
    });
    fmt::print("\n");
    if (!out.ok()) {
      fmt::print(stderr, "error: {}\n", out.status().message());
      messages.erase(messages.end() - 1);
      continue;
    }
    messages.push_back({{"role", "assistant"}, {"content", reply}});
  }
  return 0;
}

}  // namespace

void RegisterGenerate(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* batch = cmd->add_option("--batch-file", o->batch_file,
                                "Run every line of this file as a prompt, all batched at once");
  prompt->excludes(batch);
  cmd->add_flag("--chat", o->chat,
                "Wrap the prompt as a user message in the model's chat template");
  AddModelAndSamplingFlags(cmd, *o);
  cmd->callback([o, &exit_code] {
    if (o->prompt.empty() && o->batch_file.empty()) {
      fmt::print(stderr, "error: give a prompt with -p or a file of prompts with --batch-file\n");
      exit_code = 2;
      return;
    }
    exit_code = o->batch_file.empty() ? RunGenerate(*o) : RunBatch(*o);
  });
}

void RegisterChat(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<GenerateOptions>();
  o->max_tokens = 512;
  auto* cmd =
      app.add_subcommand("chat", "Interactive multi-turn chat on the model's chat template");
  AddModelAndSamplingFlags(cmd, *o);
  cmd->callback([o, &exit_code] { exit_code = RunChat(*o); });
}

}  // namespace cleave::app
