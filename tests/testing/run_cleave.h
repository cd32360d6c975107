// Runs the built `cleave` binary with arguments and collects what it wrote, for CLI tests.
#pragma once

#include <string>

namespace cleave::testing {

struct CommandResult {
  int exit_code = -1;  // -1 if it did not exit normally
  std::string out;     // stdout
  std::string err;     // stderr
};

// `cleave ARGS` through /bin/sh (so ARGS may quote), stdout and stderr captured via files in
// TempDir().
CommandResult RunCleave(const std::string& args);

}  // namespace cleave::testing
