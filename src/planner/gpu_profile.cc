#include "planner/gpu_profile.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace cleave::planner {

using json = nlohmann::json;

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

bool KeyNamesModel(std::string_view key, std::string_view model) {
  const std::string k = Lower(key), m = Lower(model);
  if (k == m) return true;
  const size_t slash = k.rfind('/');
  return slash != std::string::npos && k.substr(slash + 1) == m;
}

// [a, b, c] in milliseconds -> a LinearForm in seconds.
Result<LinearForm> FormMs(const json& entry, const char* key, std::string_view where) {
  auto it = entry.find(key);
  if (it == entry.end()) return InvalidArgument("{}: missing '{}'", where, key);
  if (!it->is_array() || it->size() != 3 ||
      !std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_number(); })) {
    return InvalidArgument("{}: '{}' must be three numbers [a, b, c] (ms)", where, key);
  }
  return LinearForm{(*it)[0].get<double>() * 1e-3, (*it)[1].get<double>() * 1e-3,
                    (*it)[2].get<double>() * 1e-3};
}

}  // namespace

Result<GpuProfile> GpuProfileFromJson(const std::string& text, std::string_view model_name) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("GPU profile: not a JSON object of models");
  }
  const json* model = nullptr;
  std::string keys;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    keys += (keys.empty() ? "" : ", ") + it.key();
    if (KeyNamesModel(it.key(), model_name)) model = &it.value();
  }
  if (model == nullptr) {
    return NotFound("GPU profile has no entry for model '{}' (it has: {})", model_name, keys);
  }
  if (!model->is_object() || model->empty()) {
    return InvalidArgument("GPU profile: '{}' must map TP degrees to profiles", model_name);
  }
  GpuProfile profile;
  for (auto it = model->begin(); it != model->end(); ++it) {
    const std::string& tp_text = it.key();
    int tp = 0;
    auto [end, ec] = std::from_chars(tp_text.data(), tp_text.data() + tp_text.size(), tp);
    if (ec != std::errc() || end != tp_text.data() + tp_text.size() || tp < 1) {
      return InvalidArgument("GPU profile '{}': key '{}' is not a TP degree", model_name, tp_text);
    }
    const std::string where = fmt::format("GPU profile '{}' TP{}", model_name, tp);
    if (!it->is_object()) return InvalidArgument("{}: not an object", where);
    GpuStepProfile p;
    CLEAVE_ASSIGN_OR_RETURN(p.prefill, FormMs(*it, "prefill", where));
    CLEAVE_ASSIGN_OR_RETURN(p.decode_small, FormMs(*it, "decoding_smallbs", where));
    if (it->contains("decoding_largebs")) {
      CLEAVE_ASSIGN_OR_RETURN(p.decode_large, FormMs(*it, "decoding_largebs", where));
      auto threshold = it->find("decoding_large_small_bs_threshold");
      if (threshold == it->end() || !threshold->is_number_integer() ||
          threshold->get<int64_t>() < 1) {
        return InvalidArgument("{}: 'decoding_large_small_bs_threshold' must be a positive integer",
                               where);
      }
      p.large_batch_threshold = int32_t(threshold->get<int64_t>());
    } else {
      p.decode_large = p.decode_small;
      p.large_batch_threshold = 1;
    }
    profile[tp] = p;
  }
  return profile;
}

Result<GpuProfile> LoadGpuProfile(const std::string& path, std::string_view model_name) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read GPU profile {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto profile = GpuProfileFromJson(ss.str(), model_name);
  if (!profile.ok()) return profile.status().WithContext(path);
  return profile;
}

double ProfiledGpuCostModel::WholeModelTime(const StepShape& s) const {
  const LinearForm& decode = profile_.Decode(s.decode_seqs);
  return DistServeFormsStepTime(
      s, profile_.prefill, decode.Eval(double(s.decode_context), double(s.decode_seqs)), decode.b);
}

double ProfiledGpuCostModel::StepTime(const StepShape& s) const {
  if (s.empty()) return 0;
  const int pp = roofline_.parallelism().pp;
  if (pp == 1) return WholeModelTime(s);
  const StepShape mb = PipelineMicroBatch(s, pp);
  return WholeModelTime(mb) + roofline_.HandoffTime(mb);
}

}  // namespace cleave::planner
