#include "model/architecture.h"

namespace cleave {

const Architecture* FindArchitecture(std::string_view name) {
  for (const Architecture* a : {&arch::kLlama, &arch::kQwen2}) {
    if (a->name == name) return a;
  }
  return nullptr;
}

}  // namespace cleave
