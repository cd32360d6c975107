#include "apps/load_model.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string_view>

#include "kernels/cpu/dispatch.h"
#include "model/model_path.h"

namespace cleave::app {

Result<std::unique_ptr<Model>> LoadModelForCommand(const std::string& model_flag) {
  CLEAVE_ASSIGN_OR_RETURN(std::string path, ResolveModelPath(model_flag));
  kernels::cpu::LogIsaChoice();
  return LoadModelWeights(path);
}

Result<std::unique_ptr<Model>> LoadModelWeights(const std::string& path) {
  const char* env = std::getenv("CLEAVE_MMAP");
  const bool map = env != nullptr && std::string_view(env) == "1";
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                          Model::Load(path, map ? MappedFile::Backing::kFileMapping
                                                : MappedFile::Backing::kHugePageCopy));
  if (model->file().backing() == MappedFile::Backing::kHugePageCopy) {
    spdlog::info("weights: copied onto huge pages (CLEAVE_MMAP=1 maps the file instead)");
  } else {
    spdlog::info("weights: mapped from the file{}",
                 map ? "" : " (transparent huge pages are off in this kernel)");
  }
  return model;
}

}  // namespace cleave::app
