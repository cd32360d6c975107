#include "tests/testing/llama_reference.h"

#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "tests/testing/paths.h"

namespace cleave::testing {

Result<ReferenceRun> RunLlamaReference(const std::string& model_path,
                                       const std::vector<int32_t>& tokens, int greedy_tokens) {
  const std::string python = ReferencePython();
  if (python.empty()) return FailedPrecondition("reference env missing: run scripts/setup.sh");
  static int counter = 0;
  const std::string logits_path = fmt::format("{}/ref-logits-{}.bin", TempDir(), counter++);
  const std::string cmd = fmt::format(
      "'{}' '{}/tests/reference/llama_reference.py' '{}' --tokens {} "
      "--logits-out '{}' --greedy {}",
      python, SourceDir(), model_path, fmt::join(tokens, ","), logits_path, greedy_tokens);
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return Internal("cannot run {}", cmd);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int rc = ::pclose(pipe);
  if (rc != 0) return Internal("reference failed (rc {}): {}", rc, cmd);
  auto json = nlohmann::json::parse(out, nullptr, false);
  if (json.is_discarded()) return Internal("reference printed no JSON: {}", out);
  ReferenceRun run;
  run.num_tokens = json["num_tokens"].get<int64_t>();
  run.vocab = json["vocab"].get<int64_t>();
  run.greedy = json["greedy"].get<std::vector<int32_t>>();
  run.logits.resize(run.num_tokens * run.vocab);
  std::ifstream in(logits_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(run.logits.data()),
          static_cast<std::streamsize>(run.logits.size() * sizeof(float)));
  if (!in) return Internal("short logits file {}", logits_path);
  std::remove(logits_path.c_str());
  return run;
}

}  // namespace cleave::testing
