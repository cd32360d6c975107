// `cleave profile`: llama-bench-style throughput of the forward pass on this machine.
//   cleave profile [-m MODEL] -p 128,512 -n 128 -t 1,2 -r 5 [--json]
// For each thread count: prompt processing (pp<N>: one N-token prefill into an empty cache) and
// text generation (tg<N>: N single-token decode steps from an empty cache), each repeated r
// times after one warm-up run, reported as mean ± stdev tokens/s.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <numeric>

#include "apps/commands.h"
#include "kernels/cpu/dispatch.h"
#include "model/model.h"
#include "model/model_path.h"

namespace cleave::app {
namespace {

struct ProfileOptions {
  std::string model;
  std::vector<int64_t> prompt_lengths = {128, 512};
  std::vector<int64_t> gen_lengths = {128};
  std::vector<int> threads = {1, 2};
  int repetitions = 5;
  bool json = false;
};

struct Sample {
  std::string test;  // "pp512", "tg128"
  int threads;
  double mean_tps, stdev_tps;
  std::vector<double> tps;
};

double TimeRun(Model& model, ThreadPool& pool, int64_t tokens, bool prefill) {
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (tokens + kBlock - 1) / kBlock;
  KvCache cache = model.MakeKvCache(blocks, kBlock);
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

int RunProfile(const ProfileOptions& o) {
  auto path = ResolveModelPath(o.model);
  if (!path.ok()) {
    fmt::print(stderr, "error: {}\n", path.status().message());
    return 1;
  }
  kernels::cpu::LogIsaChoice();
  auto model = Model::Load(*path);
  if (!model.ok()) {
    fmt::print(stderr, "error: {}\n", model.status().message());
    return 1;
  }
  std::vector<Sample> samples;
  for (int t : o.threads) {
    ThreadPool pool(t);
    auto measure = [&](const std::string& name, int64_t n, bool prefill) {
      TimeRun(**model, pool, n, prefill);  // warm-up
      Sample s{name, t, 0, 0, {}};
      for (int r = 0; r < o.repetitions; ++r) s.tps.push_back(n / TimeRun(**model, pool, n, prefill));
      s.mean_tps = std::accumulate(s.tps.begin(), s.tps.end(), 0.0) / s.tps.size();
      double var = 0;
      for (double v : s.tps) var += (v - s.mean_tps) * (v - s.mean_tps);
      s.stdev_tps = s.tps.size() > 1 ? std::sqrt(var / (s.tps.size() - 1)) : 0.0;
      samples.push_back(s);
      if (!o.json) {
        fmt::print("| {:>30} | {:>7} | {:>6} | {:>8} | {:>16} |\n", (*model)->config().name.substr(0, 30),
                   kernels::cpu::IsaName(kernels::cpu::ActiveIsa()), t, name,
                   fmt::format("{:.2f} ± {:.2f}", s.mean_tps, s.stdev_tps));
        std::fflush(stdout);
      }
    };
    if (!o.json && t == o.threads.front()) {
      fmt::print("| {:>30} | {:>7} | {:>6} | {:>8} | {:>16} |\n", "model", "isa", "threads", "test", "t/s");
      fmt::print("| {:->30} | {:->7} | {:->6} | {:->8} | {:->16} |\n", "", "", "", "", "");
    }
    for (int64_t p : o.prompt_lengths) measure(fmt::format("pp{}", p), p, true);
    for (int64_t n : o.gen_lengths) measure(fmt::format("tg{}", n), n, false);
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Sample& s : samples) {
      out.push_back({{"model", (*model)->config().name}, {"model_path", *path},
                     {"isa", kernels::cpu::IsaName(kernels::cpu::ActiveIsa())}, {"threads", s.threads},
                     {"test", s.test}, {"avg_ts", s.mean_tps}, {"stddev_ts", s.stdev_tps}, {"samples_ts", s.tps}});
    }
    fmt::print("{}\n", out.dump(2));
  }
  return 0;
}

}  // namespace

void RegisterProfile(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ProfileOptions>();
  auto* cmd = app.add_subcommand("profile", "Measure prompt and generation throughput (llama-bench style)");
  cmd->add_option("-m,--model", o->model, "GGUF model file (default: the default model)");
  cmd->add_option("-p,--prompt-lengths", o->prompt_lengths, "Prompt lengths, comma-separated")
      ->delimiter(',')->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("-n,--gen-lengths", o->gen_lengths, "Generation lengths, comma-separated")
      ->delimiter(',')->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("-t,--threads", o->threads, "Thread counts, comma-separated")
      ->delimiter(',')->check(CLI::Range(1, 1024));
  cmd->add_option("-r,--repetitions", o->repetitions, "Timed runs per test")->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", o->json, "Print JSON instead of the table");
  cmd->callback([o, &exit_code] { exit_code = RunProfile(*o); });
}

}  // namespace cleave::app
