// Paths tests need: the source tree, the build tree, the cleave binary, the default model.
#pragma once

#include <string>

namespace cleave::testing {

std::string SourceDir();
std::string BinaryDir();
std::string CleaveBinary();
// The default model's path, or "" if it is not installed (tests then GTEST_SKIP with a message).
std::string DefaultModelPath();
// Python of the project's reference venv (.venv/bin/python), or "" if absent.
std::string ReferencePython();
// A fresh temporary directory, removed when the process exits.
std::string TempDir();

}  // namespace cleave::testing
