// Logging: spdlog to stderr, level from CLEAVE_LOG_LEVEL (trace, debug, info, warn, error, off).
// Call InitLogging() once at start-up; afterwards use spdlog::info(...) etc. directly.
#pragma once

#include <spdlog/spdlog.h>

namespace cleave {

// Idempotent. `verbose` forces debug level unless CLEAVE_LOG_LEVEL says otherwise.
void InitLogging(bool verbose = false);

}  // namespace cleave
