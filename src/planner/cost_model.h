// Cost models: how long one engine step takes on one instance, and how much KV it holds.
//
// A step computes a batch of spans (see engine/scheduler.h). The planner describes it by the
// sums DistServe's latency model uses (paper Appendix A):
//   prefill part: t = Σ n_i tokens in multi-token spans, and the attention work Σ (n_i² + 2 n_i
//   s_i)
//                 for a span of n_i tokens starting at position s_i (= Σ l_i² for whole prompts);
//   decode part:  B one-token spans and their Σ context lengths.
//
// Two implementations:
//   FittedCostModel  DistServe's step-time forms with measured coefficients
//                    (prefill a + b·Σl + c·Σl², decode a + b·B + c·Σcontext), one set per thread
//                    count, fitted by least squares from `cleave profile --fit` and stored as JSON.
//   RooflineCostModel an analytic GPU estimate from the model shape and a hardware table, with
//                    tensor- and pipeline-parallel communication (roofline.h).
// Thread-safety: const methods only; safe to share between simulator threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace cleave::planner {

struct StepShape {
  int64_t prefill_tokens = 0;  // Σ n_i over multi-token spans
  double prefill_sq = 0;       // Σ (n_i² + 2 n_i s_i): twice the causal attention pairs
  int32_t prefill_seqs = 0;
  int64_t prefill_context = 0;  // Σ s_i: cached tokens before the spans (chunks), whose K/V
                                // the spans' attention reads
  int32_t decode_seqs = 0;      // one-token spans (B)
  int64_t decode_context = 0;   // Σ context lengths of those spans
  // The largest single prefill span (tokens, and its share of prefill_sq): a pipeline cannot
  // split one span across micro-batches.
  int64_t largest_prefill_tokens = 0;
  double largest_prefill_sq = 0;

  bool empty() const { return prefill_tokens == 0 && decode_seqs == 0; }
};

class CostModel {
 public:
  virtual ~CostModel() = default;
  // Seconds for one step computing `shape` (prefill spans, decode spans or both).
  virtual double StepTime(const StepShape& shape) const = 0;
  // KV slots (tokens) the instance holds after weights and activations.
  virtual int64_t kv_capacity_tokens() const = 0;
  // Bytes of K and V per token over all layers (what a KV transfer moves).
  virtual int64_t kv_bytes_per_token() const = 0;

  double PrefillTime(int64_t sum_tokens, double sum_sq) const {
    return StepTime({.prefill_tokens = sum_tokens,
                     .prefill_sq = sum_sq,
                     .prefill_seqs = 1,
                     .largest_prefill_tokens = sum_tokens,
                     .largest_prefill_sq = sum_sq});
  }
  double DecodeTime(int32_t batch, int64_t sum_context) const {
    return StepTime({.decode_seqs = batch, .decode_context = sum_context});
  }
};

// y = a + b·x1 + c·x2, times in seconds.
struct LinearForm {
  double a = 0, b = 0, c = 0;
  double Eval(double x1, double x2) const { return a + b * x1 + c * x2; }
};

// One thread count's coefficients: prefill (x1 = Σl, x2 = Σl²), decode (x1 = B, x2 = Σcontext).
struct ThreadFit {
  int threads = 1;
  LinearForm prefill;
  LinearForm decode;
  double prefill_rms_rel_error = 0;  // of the fit on its own samples
  double decode_rms_rel_error = 0;
};

// The JSON `cleave profile --fit` writes.
struct ProfileFit {
  std::string model;  // general.name
  std::string isa;
  int64_t kv_bytes_per_token = 0;
  std::vector<ThreadFit> fits;

  const ThreadFit* ForThreads(int threads) const;  // nullptr when not profiled
  std::string ToJson() const;
  static Result<ProfileFit> FromJson(const std::string& text);
  static Result<ProfileFit> Load(const std::string& path);
  Status Save(const std::string& path) const;
};

// One timed sample for a fit.
struct FitSample {
  double x1 = 0, x2 = 0;  // prefill: Σl, Σl²; decode: B, Σcontext
  double seconds = 0;
};

// Least squares for seconds ≈ a + b·x1 + c·x2, minimising relative error (each row weighted by
// 1/seconds, as DistServe's fit does), so short and long steps count alike. Needs >= 3 samples
// with independent x's; coefficients may come out negative when the data says so.
Result<LinearForm> FitLinearForm(const std::vector<FitSample>& samples);
// Root mean square of (predicted - measured) / measured.
double RmsRelativeError(const LinearForm& form, const std::vector<FitSample>& samples);

// A step under DistServe's forms: a decode-only step takes `decode_s`; a step with prefill spans
// runs its decode tokens through the same GEMMs, prefill(Σl + B, Σsq + B), plus
// `context_s_per_token`·Σcontext for their attention.
double DistServeFormsStepTime(const StepShape& shape, const LinearForm& prefill, double decode_s,
                              double context_s_per_token);

// DistServe's forms with fitted coefficients. A mixed step (chunked prefill with decodes) runs
// the decode tokens through the same GEMMs as the prefill tokens, so it costs
// prefill(Σl + B, Σsq + B) + decode.c·Σcontext.
class FittedCostModel final : public CostModel {
 public:
  FittedCostModel(ThreadFit fit, int64_t kv_capacity_tokens, int64_t kv_bytes_per_token)
      : fit_(fit),
        kv_capacity_tokens_(kv_capacity_tokens),
        kv_bytes_per_token_(kv_bytes_per_token) {}

  double StepTime(const StepShape& shape) const override;
  int64_t kv_capacity_tokens() const override { return kv_capacity_tokens_; }
  int64_t kv_bytes_per_token() const override { return kv_bytes_per_token_; }
  const ThreadFit& fit() const { return fit_; }

 private:
  ThreadFit fit_;
  int64_t kv_capacity_tokens_;
  int64_t kv_bytes_per_token_;
};

}  // namespace cleave::planner
