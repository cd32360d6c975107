#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace cleave {

void InitLogging(bool verbose) {
  static std::once_flag once;
  std::call_once(once, [verbose] {
    auto logger = spdlog::stderr_color_mt("cleave");
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);
    if (const char* level = std::getenv("CLEAVE_LOG_LEVEL")) {
      spdlog::set_level(spdlog::level::from_str(level));
    }
  });
}

}  // namespace cleave
