#include "tests/testing/paths.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "model/model_path.h"

namespace cleave::testing {
namespace fs = std::filesystem;

std::string SourceDir() {
  return CLEAVE_SOURCE_DIR;
}
std::string BinaryDir() {
  return CLEAVE_BINARY_DIR;
}
std::string CleaveBinary() {
  return BinaryDir() + "/cleave";
}

std::string DefaultModelPath() {
  fs::path p = fs::path(SourceDir()) / kDefaultModelRelPath;
  return fs::exists(p) ? p.string() : std::string();
}

std::string ReferencePython() {
  fs::path p = fs::path(SourceDir()) / ".venv/bin/python";
  return fs::exists(p) ? p.string() : std::string();
}

std::string TempDir() {
  static std::string dir = [] {
    std::string tmpl = (fs::temp_directory_path() / "cleave-test-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    std::string result = made != nullptr ? std::string(made) : std::string("/tmp");
    static struct Cleanup {
      std::string path;
      ~Cleanup() {
        std::error_code ec;
        if (path != "/tmp") fs::remove_all(path, ec);
      }
    } cleanup{result};
    return result;
  }();
  return dir;
}

}  // namespace cleave::testing
