// What every model-running subcommand does first: find the model (-m, $CLEAVE_MODEL or the
// default), log the kernel ISA, and load it.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/model.h"

namespace cleave::app {

Result<std::unique_ptr<Model>> LoadModelForCommand(const std::string& model_flag);

// Loads a resolved model path with the weights' backing chosen by the environment: copied onto
// huge pages by default, mapped from the file when CLEAVE_MMAP=1 (pages shared between
// processes, e.g. the workers of one machine, at some decode speed). Logs which one it got.
Result<std::unique_ptr<Model>> LoadModelWeights(const std::string& path);

}  // namespace cleave::app
