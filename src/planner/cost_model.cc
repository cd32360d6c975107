#include "planner/cost_model.h"

#include <array>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace cleave::planner {

using json = nlohmann::json;

const ThreadFit* ProfileFit::ForThreads(int threads) const {
  for (const ThreadFit& f : fits) {
    if (f.threads == threads) return &f;
  }
  return nullptr;
}

namespace {

json FormJson(const LinearForm& f) {
  return {{"a", f.a}, {"b", f.b}, {"c", f.c}};
}

Result<LinearForm> FormFromJson(const json& j, const char* what) {
  if (!j.is_object()) return InvalidArgument("profile fit: '{}' must be an object", what);
  LinearForm f;
  for (auto [key, dst] : {std::pair{"a", &f.a}, {"b", &f.b}, {"c", &f.c}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) {
      return InvalidArgument("profile fit: '{}.{}' must be a number", what, key);
    }
    *dst = it->get<double>();
  }
  return f;
}

}  // namespace

std::string ProfileFit::ToJson() const {
  json out = {{"model", model},
              {"isa", isa},
              {"kv_bytes_per_token", kv_bytes_per_token},
              {"units",
               "seconds; prefill x1 = sum of prompt tokens, x2 = sum of squares; "
               "decode x1 = batch size, x2 = sum of context lengths"},
              {"fits", json::array()}};
  for (const ThreadFit& f : fits) {
    out["fits"].push_back({{"threads", f.threads},
                           {"prefill", FormJson(f.prefill)},
                           {"decode", FormJson(f.decode)},
                           {"prefill_rms_rel_error", f.prefill_rms_rel_error},
                           {"decode_rms_rel_error", f.decode_rms_rel_error}});
  }
  return out.dump(2);
}

Result<ProfileFit> ProfileFit::FromJson(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("profile fit: not a JSON object");
  }
  ProfileFit p;
  p.model = doc.value("model", "");
  p.isa = doc.value("isa", "");
  if (auto it = doc.find("kv_bytes_per_token"); it != doc.end() && it->is_number_integer()) {
    p.kv_bytes_per_token = it->get<int64_t>();
  }
  auto fits = doc.find("fits");
  if (fits == doc.end() || !fits->is_array() || fits->empty()) {
    return InvalidArgument("profile fit: 'fits' must be a non-empty array");
  }
  for (const json& f : *fits) {
    if (!f.is_object() || !f.contains("threads") || !f["threads"].is_number_integer()) {
      return InvalidArgument("profile fit: each fit needs an integer 'threads'");
    }
    ThreadFit t;
    t.threads = f["threads"].get<int>();
    if (t.threads < 1) return InvalidArgument("profile fit: threads must be >= 1");
    CLEAVE_ASSIGN_OR_RETURN(t.prefill, FormFromJson(f.value("prefill", json()), "prefill"));
    CLEAVE_ASSIGN_OR_RETURN(t.decode, FormFromJson(f.value("decode", json()), "decode"));
    t.prefill_rms_rel_error = f.value("prefill_rms_rel_error", 0.0);
    t.decode_rms_rel_error = f.value("decode_rms_rel_error", 0.0);
    p.fits.push_back(t);
  }
  return p;
}

Result<ProfileFit> ProfileFit::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read profile fit {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto fit = FromJson(ss.str());
  if (!fit.ok()) return fit.status().WithContext(path);
  return fit;
}

Status ProfileFit::Save(const std::string& path) const {
  std::ofstream out(path);
  if (!out) return InvalidArgument("cannot write {}", path);
  out << ToJson() << "\n";
  if (!out) return InvalidArgument("write to {} failed", path);
  return Status::Ok();
}

Result<LinearForm> FitLinearForm(const std::vector<FitSample>& samples) {
  if (samples.size() < 3) return InvalidArgument("a fit needs at least 3 samples");
  // Rows [1, x1, x2] / y against 1: least squares on relative error. Columns are scaled to a
  // maximum of 1 so that Σl² (~1e6) and 1 do not wreck the normal equations' conditioning.
  std::array<double, 3> scale = {1, 0, 0};
  for (const FitSample& s : samples) {
    if (!(s.seconds > 0)) return InvalidArgument("fit samples need positive times");
    scale[1] = std::max(scale[1], std::abs(s.x1));
    scale[2] = std::max(scale[2], std::abs(s.x2));
  }
  if (scale[1] == 0 || scale[2] == 0) {
    return InvalidArgument("fit samples do not vary both variables");
  }
  double ata[3][3] = {}, atb[3] = {};
  for (const FitSample& s : samples) {
    const double row[3] = {1 / s.seconds, s.x1 / scale[1] / s.seconds, s.x2 / scale[2] / s.seconds};
    for (int i = 0; i < 3; ++i) {
      atb[i] += row[i];
      for (int j = 0; j < 3; ++j) ata[i][j] += row[i] * row[j];
    }
  }
  // Gaussian elimination with partial pivoting on the 3x3 system.
  const double norm = ata[0][0] + ata[1][1] + ata[2][2];
  for (int col = 0; col < 3; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 3; ++r) {
      if (std::abs(ata[r][col]) > std::abs(ata[pivot][col])) pivot = r;
    }
    if (std::abs(ata[pivot][col]) < 1e-12 * norm) {
      return InvalidArgument("fit samples are degenerate (variables not independent)");
    }
    std::swap(ata[col], ata[pivot]);
    std::swap(atb[col], atb[pivot]);
    for (int r = 0; r < 3; ++r) {
      if (r == col) continue;
      const double f = ata[r][col] / ata[col][col];
      for (int c = col; c < 3; ++c) ata[r][c] -= f * ata[col][c];
      atb[r] -= f * atb[col];
    }
  }
  return LinearForm{atb[0] / ata[0][0], atb[1] / ata[1][1] / scale[1],
                    atb[2] / ata[2][2] / scale[2]};
}

double RmsRelativeError(const LinearForm& form, const std::vector<FitSample>& samples) {
  if (samples.empty()) return 0;
  double sum = 0;
  for (const FitSample& s : samples) {
    const double e = (form.Eval(s.x1, s.x2) - s.seconds) / s.seconds;
    sum += e * e;
  }
  return std::sqrt(sum / static_cast<double>(samples.size()));
}

double DistServeFormsStepTime(const StepShape& shape, const LinearForm& prefill, double decode_s,
                              double context_s_per_token) {
  if (shape.prefill_tokens == 0) return decode_s;
  return prefill.Eval(double(shape.prefill_tokens + shape.decode_seqs),
                      shape.prefill_sq + shape.decode_seqs) +
         context_s_per_token * double(shape.decode_context);
}

double FittedCostModel::StepTime(const StepShape& shape) const {
  if (shape.empty()) return 0;
  const double decode_s = shape.prefill_tokens == 0
                              ? fit_.decode.Eval(shape.decode_seqs, double(shape.decode_context))
                              : 0.0;
  return std::max(0.0, DistServeFormsStepTime(shape, fit_.prefill, decode_s, fit_.decode.c));
}

}  // namespace cleave::planner
