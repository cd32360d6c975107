#include "tests/testing/run_cleave.h"

#include <sys/wait.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "tests/testing/paths.h"

namespace cleave::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

CommandResult RunCleave(const std::string& args) {
  static std::atomic<int> counter{0};
  const std::string stem = TempDir() + "/run" + std::to_string(counter++);
  const std::string cmd = CleaveBinary() + " " + args + " >" + stem + ".out 2>" + stem + ".err";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadAll(stem + ".out");
  r.err = ReadAll(stem + ".err");
  return r;
}

}  // namespace cleave::testing
