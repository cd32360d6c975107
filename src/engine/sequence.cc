#include "engine/sequence.h"

namespace cleave {

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kCapacity:
      return "kv_capacity";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

std::string_view SequenceStatusName(SequenceStatus status) {
  switch (status) {
    case SequenceStatus::kWaiting:
      return "waiting";
    case SequenceStatus::kRunning:
      return "running";
    case SequenceStatus::kPreempted:
      return "preempted";
    case SequenceStatus::kFinished:
      return "finished";
  }
  return "unknown";
}

Sequence::Sequence(RequestId id, std::vector<TokenId> prompt, SamplingParams params,
                   int32_t priority, uint64_t arrival_order, double arrival_time_s)
    : rng(params.seed.value_or(id)),
      id_(id),
      params_(std::move(params)),
      priority_(priority),
      arrival_order_(arrival_order),
      arrival_time_s_(arrival_time_s),
      tokens_(std::move(prompt)),
      num_prompt_tokens_(static_cast<int32_t>(tokens_.size())) {}

}  // namespace cleave
