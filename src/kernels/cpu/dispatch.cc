#include "kernels/cpu/dispatch.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace cleave::kernels::cpu {
namespace {

Isa Detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kScalar;
}

struct Choice {
  Isa isa;
  bool forced = false;  // CLEAVE_ISA picked the level
  std::string warning;  // why CLEAVE_ISA was ignored, for the start-up log
};

Choice Choose() {
  const Isa detected = DetectedIsa();
  const char* env = std::getenv("CLEAVE_ISA");
  if (env == nullptr || *env == '\0') return {detected, false, ""};
  const std::string want(env);
  Isa requested;
  if (want == "scalar") {
    requested = Isa::kScalar;
  } else if (want == "avx2") {
    requested = Isa::kAvx2;
  } else if (want == "avx512") {
    requested = Isa::kAvx512;
  } else {
    return {detected, false, "CLEAVE_ISA=" + want + " is not one of scalar|avx2|avx512; ignored"};
  }
  if (!IsaSupported(requested)) {
    return {detected, false,
            "CLEAVE_ISA=" + want + " is not supported by this CPU; using " +
                std::string(IsaName(detected))};
  }
  return {requested, true, ""};
}

const Choice& GetChoice() {
  static const Choice choice = Choose();
  return choice;
}

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

Isa DetectedIsa() {
  static const Isa isa = Detect();
  return isa;
}

bool IsaSupported(Isa isa) {
  return static_cast<int>(isa) <= static_cast<int>(DetectedIsa());
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

Isa ActiveIsa() {
  return GetChoice().isa;
}

void LogIsaChoice() {
  static std::atomic<bool> logged{false};
  if (logged.exchange(true)) return;
  const Choice& choice = GetChoice();
  if (!choice.warning.empty()) spdlog::warn("{}", choice.warning);
  spdlog::info("kernels: ISA {} (CPU supports up to {}){}", IsaName(choice.isa),
               IsaName(DetectedIsa()), choice.forced ? ", forced by CLEAVE_ISA" : "");
}

}  // namespace cleave::kernels::cpu
