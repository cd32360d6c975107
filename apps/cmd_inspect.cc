// `cleave inspect MODEL`: metadata, tensor table and a summary of a GGUF file.
#include <fmt/format.h>

#include "apps/commands.h"
#include "model/gguf.h"
#include "model/model_path.h"

namespace cleave::app {

void RegisterInspect(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("inspect", "Print a GGUF file's metadata, tensors and summary");
  auto path = std::make_shared<std::string>();
  cmd->add_option("model", *path, "GGUF file (default: the default model)");
  cmd->callback([path, &exit_code] {
    auto resolved = ResolveModelPath(*path);
    if (!resolved.ok()) {
      fmt::print(stderr, "error: {}\n", resolved.status().message());
      exit_code = 1;
      return;
    }
    auto file = gguf::GgufFile::Open(*resolved);
    if (!file.ok()) {
      fmt::print(stderr, "error: {}\n", file.status().ToString());
      exit_code = 1;
      return;
    }
    fmt::print("{}: GGUF v{}, {} metadata keys, {} tensors\n", *resolved, (*file)->version(),
               (*file)->metadata().size(), (*file)->tensors().size());
  });
}

}  // namespace cleave::app
