// Measured GPU step times: a cost model for `cleave plan` from a serving engine's own profile,
// instead of the roofline's estimate.
//
// The file format is DistServe's (simdistserve/estimators/profile_data/profiler-*.json), so its
// published A100 profiles and any profile written the same way can be planned with directly. Per
// model and tensor-parallel degree, milliseconds:
//   {"facebook/opt-66b": {
//      "4": {"prefill": [a, b, c],                      a + b·Σl + c·Σl²
//            "decoding_smallbs": [a, b, c],             a + b·Σcontext + c·B, for B < threshold
//            "decoding_largebs": [a, b, c],             the same form, for B >= threshold
//            "decoding_large_small_bs_threshold": 95},
//      "8": {...}}}
// A model is chosen by its full key or by the part after the last '/' ("opt-66b").
//
// The roofline of the same model and parallelism still supplies what a step-time profile does not
// measure: KV capacity per instance and, with pipeline parallelism, the hand-offs between stages.
// A pipelined step is one round: the largest micro-batch (PipelineMicroBatch) timed by the
// profile at that TP, plus the hand-offs.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "core/status.h"
#include "planner/cost_model.h"
#include "planner/roofline.h"

namespace cleave::planner {

// One TP degree's measured forms, in seconds.
struct GpuStepProfile {
  LinearForm prefill;       // x1 = Σl, x2 = Σl² (Σ(n² + 2ns) for chunks)
  LinearForm decode_small;  // x1 = Σcontext, x2 = B
  LinearForm decode_large;  // the same, for batches of at least large_batch_threshold
  int32_t large_batch_threshold = 0;

  const LinearForm& Decode(int32_t batch) const {
    return batch >= large_batch_threshold ? decode_large : decode_small;
  }
};

// TP degree -> its profile.
using GpuProfile = std::map<int, GpuStepProfile>;

Result<GpuProfile> GpuProfileFromJson(const std::string& text, std::string_view model_name);
Result<GpuProfile> LoadGpuProfile(const std::string& path, std::string_view model_name);

class ProfiledGpuCostModel final : public CostModel {
 public:
  // `roofline` must have the same parallelism the profile was measured at (its TP).
  ProfiledGpuCostModel(GpuStepProfile profile, RooflineCostModel roofline)
      : profile_(profile), roofline_(std::move(roofline)) {}

  // Prefill only: prefill(Σl, Σl²). Decode only: decode(Σcontext, B). Mixed (decodes riding a
  // chunk, as FittedCostModel): prefill(Σl + B, Σl² + B) + the decode form's Σcontext term.
  double StepTime(const StepShape& shape) const override;
  int64_t kv_capacity_tokens() const override { return roofline_.kv_capacity_tokens(); }
  int64_t kv_bytes_per_token() const override { return roofline_.kv_bytes_per_token(); }

 private:
  double WholeModelTime(const StepShape& s) const;  // one TP group through every layer

  GpuStepProfile profile_;
  RooflineCostModel roofline_;
};

}  // namespace cleave::planner
