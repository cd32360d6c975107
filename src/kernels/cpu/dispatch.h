// Run-time choice of the CPU instruction set the kernels use. The one place that reads CPUID.
//
// Levels are ordered: a CPU that has a level has every level below it. The active level is
// the best the CPU supports, unless the environment variable CLEAVE_ISA (scalar|avx2|avx512)
// asks for a lower one; asking for a level the CPU lacks logs a warning and falls back to the
// best supported one. Thread-safe (computed once on first use).
#pragma once

#include <string_view>
#include <vector>

namespace cleave::kernels::cpu {

enum class Isa {
  kScalar = 0,  // portable C++, the reference every other level is tested against
  kAvx2 = 1,    // AVX2 + FMA + F16C
  kAvx512 = 2,  // AVX-512 F, BW, VL, DQ and VNNI (+ BF16 where present)
};

std::string_view IsaName(Isa isa);
// Best level this CPU supports.
Isa DetectedIsa();
bool IsaSupported(Isa isa);
// Every supported level, lowest first (what tests iterate over).
std::vector<Isa> SupportedIsas();
// The level kernels use by default: DetectedIsa() lowered by CLEAVE_ISA.
Isa ActiveIsa();
// Logs the active level and the CPU features behind it (once; later calls do nothing).
// The app calls this at start-up after InitLogging().
void LogIsaChoice();

}  // namespace cleave::kernels::cpu
