// What every model-running subcommand does first: find the model (-m, $CLEAVE_MODEL or the
// default), log the kernel ISA, and load it.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "model/model.h"

namespace cleave::app {

Result<std::unique_ptr<Model>> LoadModelForCommand(const std::string& model_flag);

}  // namespace cleave::app
