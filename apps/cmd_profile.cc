// `cleave profile`: llama-bench-style throughput of the forward pass on this machine.
//   cleave profile [-m MODEL] -p 128,512 -n 128 -t 1,2 -r 5 [--json]
//   cleave profile [-m MODEL] -t 1,2 --fit FIT.json   (cost-model fit for `cleave plan`)
// For each thread count: prompt processing (pp<N>: one N-token prefill into an empty cache) and
// text generation (tg<N>: N single-token decode steps from an empty cache), each repeated r
// times after one warm-up run, reported as mean ± stdev tokens/s.
// --fit times batched prefills (several prompt lengths and batch sizes; the forward pass) and
// decode steps (several batch sizes and context lengths) and fits DistServe's step-time forms per
// thread count (planner/cost_model.h). Decode steps are timed as the serving engine runs them:
// Engine::Step with its scheduler, forward, sampler (temperature 1, the OpenAI default),
// detokenizer and stop checks, over sequences whose prompt K/V are taken as already computed
// (left as zeros, which costs the same as real ones). Per-token work outside the forward pass is
// a visible part of a small model's step (the sampler alone read a 49k-entry row at ~0.5 ms per
// sequence before it was vectorized), and the planner must see it.
//
//   cleave profile [-m MODEL] --batch 1,4,16,64 [--context 128] [--steps 8] -t 2 -r 5
// Batched decode: for each batch size B, B sequences that each already hold --context tokens in
// the KV cache (distinct blocks with the same content) take --steps decode steps of one token
// each, one Forward per step, as the engine runs them. Reports total decode tokens/s over all
// sequences, TPOT (ms per step) and the throughput ratio to the first batch size of the list,
// all measured in this process. --kv-cache-dtype applies to every mode.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "apps/commands.h"
#include "apps/load_model.h"
#include "engine/engine.h"
#include "engine/model_executor.h"
#include "kernels/cpu/dispatch.h"
#include "model/model.h"
#include "model/model_path.h"
#include "planner/cost_model.h"

namespace cleave::app {
namespace {

struct ProfileOptions {
  std::string model;
  std::vector<int64_t> prompt_lengths = {128, 512};
  std::vector<int64_t> gen_lengths = {128};
  std::vector<int> threads = {1, 2};
  int repetitions = 5;
  bool json = false;
  std::string fit_path;
  std::vector<int64_t> batch_sizes;  // non-empty: batched decode mode
  int64_t context = 128;
  int64_t steps = 8;
  std::string kv_cache_dtype = "f16";
  DType kv_dtype = DType::kF16;  // parsed from kv_cache_dtype
};

struct Stats {
  double mean = 0, stdev = 0;
};

Stats MeanStdev(const std::vector<double>& v) {
  Stats s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.stdev = v.size() > 1 ? std::sqrt(var / (v.size() - 1)) : 0.0;
  return s;
}

struct Sample {
  std::string test;  // "pp512", "tg128"
  int threads;
  double mean_tps, stdev_tps;
  std::vector<double> tps;
};

double TimeRun(Model& model, ThreadPool& pool, int64_t tokens, bool prefill, DType kv_dtype) {
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (tokens + kBlock - 1) / kBlock;
  KvCache cache = model.MakeKvCache(blocks, kBlock, kv_dtype);
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  std::vector<TokenId> ids(tokens);
  const int64_t vocab = model.config().vocab_size;
  for (int64_t i = 0; i < tokens; ++i) ids[i] = static_cast<TokenId>((i * 7919 + 13) % vocab);
  std::vector<float> logits;
  const auto start = std::chrono::steady_clock::now();
  if (prefill) {
    ForwardItem item{ids, 0, table, LogitsMode::kLast};
    CLEAVE_CHECK(model.Forward({&item, 1}, cache, pool, &logits).ok());
  } else {
    for (int64_t i = 0; i < tokens; ++i) {
      ForwardItem item{std::span<const TokenId>(&ids[i], 1), i, table, LogitsMode::kLast};
      CLEAVE_CHECK(model.Forward({&item, 1}, cache, pool, &logits).ok());
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Seconds for one forward over spans (len_i tokens at start_i), the median of `reps` runs.
double TimeSpans(Model& model, ThreadPool& pool,
                 const std::vector<std::pair<int64_t, int64_t>>& spans, int reps, DType kv_dtype) {
  constexpr int64_t kBlock = 16;
  int64_t total_blocks = 0;
  for (auto [len, start] : spans) total_blocks += (start + len + kBlock - 1) / kBlock;
  KvCache cache = model.MakeKvCache(total_blocks, kBlock, kv_dtype);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<TokenId>> ids(spans.size());
  std::vector<std::vector<int32_t>> tables(spans.size());
  std::vector<ForwardItem> items;
  int32_t next_block = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    auto [len, start] = spans[i];
    for (int64_t t = 0; t < len; ++t) ids[i].push_back(TokenId((t * 7919 + 13 + i) % vocab));
    for (int64_t b = 0; b < (start + len + kBlock - 1) / kBlock; ++b)
      tables[i].push_back(next_block++);
    items.push_back({ids[i], start, tables[i], LogitsMode::kLast});
  }
  std::vector<float> logits;
  std::vector<double> times;
  for (int r = 0; r < reps + 1; ++r) {  // the first run warms up
    const auto t0 = std::chrono::steady_clock::now();
    CLEAVE_CHECK(model.Forward(items, cache, pool, &logits).ok());
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) times.push_back(dt);
  }
  // The median, not the best: a plan predicts typical steps, and the best of a few runs on a
  // shared machine is the luckiest one (served prompts took ~10-18% longer than the best).
  std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
  return times[reps / 2];
}

// Seconds per decode step of the engine for `batch` sequences holding `context` tokens each
// (the median over `steps` steps), and the mean Σ context over the timed steps.
std::pair<double, double> TimeEngineDecode(Model& model, int threads, int64_t batch,
                                           int64_t context, int steps, DType kv_dtype) {
  constexpr int32_t kBlock = 16;
  const int64_t per_seq = (context + steps + 2 + kBlock - 1) / kBlock;
  ModelExecutor executor(model, static_cast<int32_t>(batch * per_seq), kBlock, threads, kv_dtype);
  EngineConfig config;
  config.num_blocks = static_cast<int32_t>(batch * per_seq);
  config.block_size = kBlock;
  config.enable_prefix_caching = false;
  Engine engine(config, &executor, &model.tokenizer());
  const int64_t vocab = model.config().vocab_size;
  for (int64_t b = 0; b < batch; ++b) {
    Request request;
    for (int64_t i = 0; i < context; ++i) {
      request.prompt.push_back(static_cast<TokenId>((i * 7919 + 13 + 101 * b) % vocab));
    }
    request.params.max_tokens = steps + 4;
    request.params.ignore_eos = true;
    request.params.seed = static_cast<uint64_t>(b);
    auto blocks = engine.AllocateBlocks(static_cast<int32_t>((context + kBlock - 1) / kBlock));
    CLEAVE_CHECK(blocks.has_value());
    // The whole prompt counts as computed: the first step recomputes its last token (a
    // one-token step like every decode step) to get logits.
    CLEAVE_CHECK(engine
                     .AddPrefilledRequest(std::move(request), {}, std::move(*blocks),
                                          static_cast<int32_t>(context))
                     .ok());
  }
  CLEAVE_CHECK(engine.Step().ok());  // warm-up: the recomputed last prompt tokens
  engine.PollOutputs();
  std::vector<double> times;
  double sum_context = 0;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    CLEAVE_CHECK(engine.Step().ok());
    engine.PollOutputs();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    sum_context += static_cast<double>(batch * (context + 1 + i));
  }
  CLEAVE_CHECK(engine.num_running() == batch, "profile: a sequence finished early");
  std::nth_element(times.begin(), times.begin() + steps / 2, times.end());
  return {times[steps / 2], sum_context / steps};
}

int RunFit(const ProfileOptions& o, Model& model, const std::string& path) {
  planner::ProfileFit fit;
  fit.model = model.config().name;
  fit.isa = std::string(kernels::cpu::IsaName(kernels::cpu::ActiveIsa()));
  fit.kv_bytes_per_token = KvCache::BytesPerToken(
      o.kv_dtype, model.config().num_layers, model.config().num_kv_heads, model.config().head_dim);
  // Kept small: on a shared 2-core machine a fit must take about a minute per thread count.
  const int reps = 3;
  for (int t : o.threads) {
    ThreadPool pool(t);
    std::vector<planner::FitSample> prefill, decode;
    for (int64_t len : {16, 64, 128, 256}) {
      for (int64_t batch : {1, 2}) {
        std::vector<std::pair<int64_t, int64_t>> spans(batch, {len, 0});
        prefill.push_back({double(len * batch), double(len * len * batch),
                           TimeSpans(model, pool, spans, reps, o.kv_dtype)});
      }
    }
    // Every batch size a small server runs at (2 and 8 included: the decode kernels take
    // tokens in pairs up to 10 and switch to the batched path above, so the cost per sequence is
    // not one straight line through 1, 4 and 16).
    for (int64_t batch : {1, 2, 4, 8, 16}) {
      for (int64_t ctx : {32, 256, 1024}) {
        const auto [seconds, sum_context] =
            TimeEngineDecode(model, t, batch, ctx, /*steps=*/7, o.kv_dtype);
        decode.push_back({double(batch), sum_context, seconds});
      }
    }
    auto pf = planner::FitLinearForm(prefill);
    auto df = planner::FitLinearForm(decode);
    if (!pf.ok() || !df.ok()) {
      fmt::print(stderr, "error: fit failed: {}\n",
                 (!pf.ok() ? pf.status() : df.status()).message());
      return 1;
    }
    planner::ThreadFit tf{t, *pf, *df, planner::RmsRelativeError(*pf, prefill),
                          planner::RmsRelativeError(*df, decode)};
    fmt::print(
        "threads {}: prefill {:.4g} + {:.4g}*sum_l + {:.4g}*sum_l2 s (rms rel err {:.1f}%); "
        "decode {:.4g} + {:.4g}*B + {:.4g}*sum_ctx s (rms rel err {:.1f}%)\n",
        t, tf.prefill.a, tf.prefill.b, tf.prefill.c, 100 * tf.prefill_rms_rel_error, tf.decode.a,
        tf.decode.b, tf.decode.c, 100 * tf.decode_rms_rel_error);
    std::fflush(stdout);
    fit.fits.push_back(tf);
  }
  if (Status s = fit.Save(path); !s.ok()) {
    fmt::print(stderr, "error: {}\n", s.message());
    return 1;
  }
  fmt::print("wrote {}\n", path);
  return 0;
}

// Batched decode: see the file comment.
int RunBatchDecode(Model& model, const ProfileOptions& o, const std::string& path) {
  constexpr int64_t kBlock = 16;
  const int64_t max_batch = *std::max_element(o.batch_sizes.begin(), o.batch_sizes.end());
  const int64_t blocks_per_seq = (o.context + o.steps + kBlock - 1) / kBlock;
  const int64_t context_blocks = (o.context + kBlock - 1) / kBlock;
  KvCache cache = model.MakeKvCache(max_batch * blocks_per_seq, kBlock, o.kv_dtype);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<int32_t>> tables(max_batch, std::vector<int32_t>(blocks_per_seq));
  for (int64_t b = 0; b < max_batch; ++b) {
    std::iota(tables[b].begin(), tables[b].end(), static_cast<int32_t>(b * blocks_per_seq));
  }
  std::vector<TokenId> context(o.context);
  for (int64_t i = 0; i < o.context; ++i)
    context[i] = static_cast<TokenId>((i * 7919 + 13) % vocab);
  std::vector<float> logits;
  {
    // Prefill sequence 0's context once and copy its blocks to every other sequence.
    ThreadPool pool(*std::max_element(o.threads.begin(), o.threads.end()));
    ForwardItem item{context, 0, tables[0], LogitsMode::kNone};
    CLEAVE_CHECK(model.Forward({&item, 1}, cache, pool, &logits).ok());
    for (int64_t b = 1; b < max_batch; ++b) {
      for (int64_t j = 0; j < context_blocks; ++j) cache.CopyBlock(tables[0][j], tables[b][j]);
    }
  }
  const std::string isa(kernels::cpu::IsaName(kernels::cpu::ActiveIsa()));
  nlohmann::json out = nlohmann::json::array();
  if (!o.json) {
    fmt::print(
        "{} ({}), kernels {}, KV cache {}, context {} tokens, {} decode steps per run, {} runs\n",
        model.config().name, path, isa, o.kv_cache_dtype, o.context, o.steps, o.repetitions);
    fmt::print("| {:>7} | {:>5} | {:>20} | {:>18} | {:>9} |\n", "threads", "batch",
               "decode t/s (total)", "TPOT ms", "t/s ratio");
    fmt::print("| {:->7} | {:->5} | {:->20} | {:->18} | {:->9} |\n", "", "", "", "", "");
  }
  std::vector<TokenId> step_tokens(max_batch);
  std::vector<ForwardItem> items;
  for (int t : o.threads) {
    ThreadPool pool(t);
    double base_tps = 0;
    for (int64_t batch : o.batch_sizes) {
      // One run: `steps` forward calls of `batch` one-token spans at positions context, ...
      auto run = [&] {
        const auto start = std::chrono::steady_clock::now();
        for (int64_t s = 0; s < o.steps; ++s) {
          items.clear();
          for (int64_t b = 0; b < batch; ++b) {
            step_tokens[b] = static_cast<TokenId>((b * 131 + s * 17 + 1) % vocab);
            items.push_back(ForwardItem{std::span<const TokenId>(&step_tokens[b], 1), o.context + s,
                                        tables[b], LogitsMode::kLast});
          }
          CLEAVE_CHECK(model.Forward(items, cache, pool, &logits).ok());
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      run();  // warm-up
      std::vector<double> tps, tpot_ms;
      for (int r = 0; r < o.repetitions; ++r) {
        const double seconds = run();
        tps.push_back(batch * o.steps / seconds);
        tpot_ms.push_back(1e3 * seconds / o.steps);
      }
      const Stats tps_stats = MeanStdev(tps), tpot_stats = MeanStdev(tpot_ms);
      if (batch == o.batch_sizes.front()) base_tps = tps_stats.mean;
      const double ratio = tps_stats.mean / base_tps;
      if (o.json) {
        out.push_back({{"model", model.config().name},
                       {"model_path", path},
                       {"isa", isa},
                       {"threads", t},
                       {"batch", batch},
                       {"context", o.context},
                       {"steps", o.steps},
                       {"kv_cache_dtype", o.kv_cache_dtype},
                       {"avg_ts", tps_stats.mean},
                       {"stddev_ts", tps_stats.stdev},
                       {"avg_tpot_ms", tpot_stats.mean},
                       {"stddev_tpot_ms", tpot_stats.stdev},
                       {"ratio_to_first", ratio},
                       {"samples_ts", tps}});
      } else {
        fmt::print("| {:>7} | {:>5} | {:>20} | {:>18} | {:>9} |\n", t, batch,
                   fmt::format("{:.2f} ± {:.2f}", tps_stats.mean, tps_stats.stdev),
                   fmt::format("{:.1f} ± {:.1f}", tpot_stats.mean, tpot_stats.stdev),
                   fmt::format("{:.2f}x", ratio));
        std::fflush(stdout);
      }
    }
  }
  if (o.json) fmt::print("{}\n", out.dump(2));
  return 0;
}

int RunProfile(ProfileOptions o) {
  auto model = LoadModelForCommand(o.model);
  if (!model.ok()) {
    fmt::print(stderr, "error: {}\n", model.status().message());
    return 1;
  }
  o.kv_dtype = *ParseKvCacheDType(o.kv_cache_dtype);  // validated by the flag's check
  if (Status st = KvCache::CheckSupported(o.kv_dtype, (*model)->config().head_dim); !st.ok()) {
    fmt::print(stderr, "error: {}\n", st.message());
    return 1;
  }
  if (!o.batch_sizes.empty()) return RunBatchDecode(**model, o, (*model)->file().path());
  if (!o.fit_path.empty()) return RunFit(o, **model, o.fit_path);
  std::vector<Sample> samples;
  for (int t : o.threads) {
    ThreadPool pool(t);
    auto measure = [&](const std::string& name, int64_t n, bool prefill) {
      TimeRun(**model, pool, n, prefill, o.kv_dtype);  // warm-up
      Sample s{name, t, 0, 0, {}};
      for (int r = 0; r < o.repetitions; ++r)
        s.tps.push_back(n / TimeRun(**model, pool, n, prefill, o.kv_dtype));
      s.mean_tps = std::accumulate(s.tps.begin(), s.tps.end(), 0.0) / s.tps.size();
      double var = 0;
      for (double v : s.tps) var += (v - s.mean_tps) * (v - s.mean_tps);
      s.stdev_tps = s.tps.size() > 1 ? std::sqrt(var / (s.tps.size() - 1)) : 0.0;
      samples.push_back(s);
      if (!o.json) {
        fmt::print("| {:>30} | {:>7} | {:>6} | {:>8} | {:>16} |\n",
                   (*model)->config().name.substr(0, 30),
                   kernels::cpu::IsaName(kernels::cpu::ActiveIsa()), t, name,
                   fmt::format("{:.2f} ± {:.2f}", s.mean_tps, s.stdev_tps));
        std::fflush(stdout);
      }
    };
    if (!o.json && t == o.threads.front()) {
      fmt::print("| {:>30} | {:>7} | {:>6} | {:>8} | {:>16} |\n", "model", "isa", "threads", "test",
                 "t/s");
      fmt::print("| {:->30} | {:->7} | {:->6} | {:->8} | {:->16} |\n", "", "", "", "", "");
    }
    for (int64_t p : o.prompt_lengths) measure(fmt::format("pp{}", p), p, true);
    for (int64_t n : o.gen_lengths) measure(fmt::format("tg{}", n), n, false);
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Sample& s : samples) {
      out.push_back({{"model", (*model)->config().name},
                     {"model_path", (*model)->file().path()},
                     {"isa", kernels::cpu::IsaName(kernels::cpu::ActiveIsa())},
                     {"threads", s.threads},
                     {"test", s.test},
                     {"avg_ts", s.mean_tps},
                     {"stddev_ts", s.stdev_tps},
                     {"samples_ts", s.tps}});
    }
    fmt::print("{}\n", out.dump(2));
  }
  return 0;
}

}  // namespace

void RegisterProfile(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ProfileOptions>();
  auto* cmd =
      app.add_subcommand("profile", "Measure prompt and generation throughput (llama-bench style)");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: the default model)");
  cmd->add_option("-p,--prompt-lengths", o->prompt_lengths, "Prompt lengths, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("-n,--gen-lengths", o->gen_lengths, "Generation lengths, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("-t,--threads", o->threads, "Thread counts, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  cmd->add_option("-r,--repetitions", o->repetitions, "Timed runs per test")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", o->json, "Print JSON instead of the table");
  cmd->add_option(
      "--fit", o->fit_path,
      "Time batched prefill and decode steps, fit the planner's cost model, write JSON");
  cmd->add_option("--batch", o->batch_sizes,
                  "Batched decode mode: batch sizes, comma-separated (e.g. 1,4,16,64)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("--context", o->context,
                  "Batched decode: tokens already in each sequence's cache")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--steps", o->steps, "Batched decode: decode steps per timed run")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--kv-cache-dtype", o->kv_cache_dtype,
                  "KV cache element type: f16 (default), f32, q8_0")
      ->check(CLI::IsMember({"f16", "f32", "q8_0"}));
  cmd->callback([o, &exit_code] { exit_code = RunProfile(*o); });
}

}  // namespace cleave::app
