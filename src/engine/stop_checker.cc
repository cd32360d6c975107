#include "engine/stop_checker.h"

#include <algorithm>

namespace cleave {

StopChecker::StopChecker(const SamplingParams& params, std::vector<TokenId> eog_ids)
    : params_(params), eog_ids_(std::move(eog_ids)) {
  for (const std::string& s : params.stop) {
    if (!s.empty()) stop_strings_.push_back(s);
  }
}

bool StopChecker::IsStopToken(TokenId token) const {
  if (!params_.ignore_eos && std::find(eog_ids_.begin(), eog_ids_.end(), token) != eog_ids_.end()) {
    return true;
  }
  return std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) !=
         params_.stop_token_ids.end();
}

std::optional<FinishReason> StopChecker::CheckToken(TokenId token, int32_t num_output) const {
  // min_tokens is enforced by masking in the sampler; a stop token that still shows up (e.g. in
  // KV shipped from elsewhere) stops only once min_tokens is reached.
  if (num_output >= params_.min_tokens && IsStopToken(token)) return FinishReason::kStop;
  if (num_output >= params_.max_tokens) return FinishReason::kLength;
  return std::nullopt;
}

StopChecker::TextResult StopChecker::PushText(std::string_view delta) {
  TextResult result;
  if (stopped_) return result;
  pending_.append(delta);
  if (stop_strings_.empty()) {
    result.emit = std::move(pending_);
    pending_.clear();
    return result;
  }
  // Everything emitted so far ends with no proper prefix of any stop string (we held those
  // back), so a match lies inside pending_. The stop string completed first while reading left
  // to right wins (ties: the longer one), which makes the result independent of how the text
  // was split into deltas.
  size_t best_pos = std::string::npos;
  size_t best_end = std::string::npos;
  const std::string* best = nullptr;
  for (const std::string& s : stop_strings_) {
    size_t pos = pending_.find(s);
    if (pos == std::string::npos) continue;
    size_t end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_pos)) {
      best_pos = pos;
      best_end = end;
      best = &s;
    }
  }
  if (best != nullptr) {
    result.emit = pending_.substr(0, best_pos);
    result.stopped = true;
    result.stop_string = *best;
    pending_.clear();
    stopped_ = true;
    return result;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string. Such a suffix
  // starts with a stop string's first byte, so the cut falls on a UTF-8 character boundary.
  size_t hold = 0;
  for (const std::string& s : stop_strings_) {
    size_t max_len = std::min(s.size() - 1, pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (std::string_view(pending_).substr(pending_.size() - len) ==
          std::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  result.emit = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopChecker::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace cleave
