// `cleave synth`: writes a synthetic Llama-family GGUF with random weights
// (model/synthetic_model.h).
//   cleave synth --shape llama-3.2-1b|tiny --type q4_0 -o FILE [--seed N]
// The file is streamed to FILE.partial and renamed into place when complete, so an interrupted
// run never leaves a truncated FILE behind.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "apps/commands.h"
#include "kernels/quant_formats.h"
#include "model/synthetic_model.h"

namespace cleave::app {
namespace {

struct SynthOptions {
  std::string shape = "tiny";
  std::string type = "q4_0";
  std::string output;
  uint64_t seed = 1;
};

// The weight formats cleave runs, by their GGUF names.
std::optional<DType> WeightTypeByName(std::string_view name) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (DTypeName(t) == name) return t;
  }
  return std::nullopt;
}

int RunSynth(const SynthOptions& o) {
  const std::optional<DType> type = WeightTypeByName(o.type);
  if (!type) {
    fmt::print(stderr,
               "error: unknown weight type '{}' (f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, "
               "q5_K, q6_K)\n",
               o.type);
    return 1;
  }
  SyntheticModelSpec spec;
  if (o.shape == "llama-3.2-1b") {
    spec = Llama32_1BSpec(*type);
  } else {  // "tiny": the small default shape tests use
    spec.weight_type = *type;
    spec.embedding_type = *type;
  }
  spec.seed = o.seed;
  const std::string partial = o.output + ".partial";
  const auto start = std::chrono::steady_clock::now();
  if (Status s = WriteSyntheticModel(spec, partial); !s.ok()) {
    std::remove(partial.c_str());
    fmt::print(stderr, "error: {}\n", s.message());
    return 1;
  }
  std::error_code ec;
  std::filesystem::rename(partial, o.output, ec);
  if (ec) {
    fmt::print(stderr, "error: cannot rename {} to {}: {}\n", partial, o.output, ec.message());
    return 1;
  }
  fmt::print("wrote {} ({} {}, {:.1f} MiB) in {:.1f} s\n", o.output, o.shape, o.type,
             double(std::filesystem::file_size(o.output)) / (1 << 20),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace

void RegisterSynth(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SynthOptions>();
  auto* cmd = app.add_subcommand("synth", "Write a synthetic model with random weights (GGUF)");
  cmd->add_option("--shape", o->shape, "llama-3.2-1b or tiny")
      ->check(CLI::IsMember({"llama-3.2-1b", "tiny"}));
  cmd->add_option("--type", o->type, "Weight format of the 2-D tensors (default q4_0)");
  cmd->add_option("-o,--output", o->output, "Output GGUF file")->required();
  cmd->add_option("--seed", o->seed, "Seed of the random weights");
  cmd->callback([o, &exit_code] { exit_code = RunSynth(*o); });
}

}  // namespace cleave::app
