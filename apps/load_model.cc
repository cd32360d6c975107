#include "apps/load_model.h"

#include "kernels/cpu/dispatch.h"
#include "model/model_path.h"

namespace cleave::app {

Result<std::unique_ptr<Model>> LoadModelForCommand(const std::string& model_flag) {
  CLEAVE_ASSIGN_OR_RETURN(std::string path, ResolveModelPath(model_flag));
  kernels::cpu::LogIsaChoice();
  return Model::Load(path);
}

}  // namespace cleave::app
