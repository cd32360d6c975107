// `cleave generate`: run one prompt through the model and stream the continuation to stdout.
#include <fmt/format.h>

#include "apps/commands.h"

namespace cleave::app {

void RegisterGenerate(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  cmd->callback([&exit_code] {
    fmt::print(stderr, "error: generate is not implemented yet\n");
    exit_code = 1;
  });
}

}  // namespace cleave::app
