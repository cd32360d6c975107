#include "engine/engine.h"

#include <algorithm>
#include <cmath>

namespace cleave {

namespace {

std::vector<TokenId> EogIds(const Tokenizer* tokenizer) {
  return tokenizer ? tokenizer->eog_ids() : std::vector<TokenId>{};
}

}  // namespace

Engine::Stream::Stream(const SamplingParams& params, const Tokenizer* tokenizer)
    : stop(params, EogIds(tokenizer)) {
  if (tokenizer) decoder.emplace(*tokenizer, params.skip_special_tokens);
}

Engine::Engine(EngineConfig config, Executor* executor, const Tokenizer* tokenizer)
    : config_(std::move(config)),
      executor_(executor),
      tokenizer_(tokenizer),
      max_model_len_(config_.max_model_len > 0 ? config_.max_model_len
                                               : config_.num_blocks * config_.block_size),
      start_(std::chrono::steady_clock::now()),
      pool_(config_.num_blocks, config_.block_size, config_.enable_prefix_caching),
      scheduler_(config_.scheduler, &pool_),
      sampler_(EogIds(tokenizer)),
      seed_rng_(config_.seed) {
  if (!config_.clock) {
    config_.clock = [start = start_] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
  }
}

Engine::~Engine() = default;

Status Engine::ValidateRequest(const Request& r, std::span<const TokenId> output_tokens) const {
  const SamplingParams& p = r.params;
  const int32_t vocab = executor_->vocab_size();
  if (r.prompt.empty()) return InvalidArgument("prompt is empty");
  for (TokenId id : r.prompt) {
    if (id < 0 || id >= vocab)
      return InvalidArgument("prompt token {} outside vocab {}", id, vocab);
  }
  for (TokenId id : output_tokens) {
    if (id < 0 || id >= vocab)
      return InvalidArgument("output token {} outside vocab {}", id, vocab);
  }
  if (static_cast<int64_t>(r.prompt.size() + output_tokens.size()) >= max_model_len_) {
    return InvalidArgument("prompt of {} tokens leaves no room in the context of {} tokens",
                           r.prompt.size() + output_tokens.size(), max_model_len_);
  }
  if (static_cast<int64_t>(output_tokens.size()) >= p.max_tokens) {
    return InvalidArgument("{} tokens already generated leave none of max_tokens {}",
                           output_tokens.size(), p.max_tokens);
  }
  if (p.max_tokens < 1) return InvalidArgument("max_tokens must be >= 1, got {}", p.max_tokens);
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return InvalidArgument("min_tokens {} must be in [0, max_tokens]", p.min_tokens);
  }
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return InvalidArgument("temperature must be >= 0");
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return InvalidArgument("top_p must be in (0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return InvalidArgument("min_p must be in [0, 1]");
  if (!(p.repetition_penalty > 0.0f)) return InvalidArgument("repetition_penalty must be > 0");
  if (p.logprobs > vocab) return InvalidArgument("logprobs {} exceeds vocab {}", p.logprobs, vocab);
  return Status::Ok();
}

std::unique_ptr<Sequence> Engine::NewSequence(Request request,
                                              std::span<const TokenId> output_tokens) {
  const RequestId id = next_id_++;
  const bool hold_text_at_length = request.hold_text_at_length;
  auto seq = std::make_unique<Sequence>(id, std::move(request.prompt), std::move(request.params),
                                        request.priority, next_arrival_++, config_.clock());
  if (!seq->params().seed) seq->rng = Rng(seed_rng_.Next());
  Stream& stream = streams_
                       .emplace(std::piecewise_construct, std::forward_as_tuple(id),
                                std::forward_as_tuple(seq->params(), tokenizer_))
                       .first->second;
  stream.hold_text_at_length = hold_text_at_length;
  // Replay: the text these tokens made was streamed by whoever sampled them (or is held back
  // in the stop checker, exactly as it was there).
  for (TokenId t : output_tokens) {
    seq->AppendToken(t);
    if (stream.decoder && !stream.stop.IsStopToken(t)) {
      (void)stream.stop.PushText(stream.decoder->Push(t));
    }
  }
  return seq;
}

Result<RequestId> Engine::AddRequest(Request request, std::vector<TokenId> output_tokens) {
  std::lock_guard lock(mu_);
  CLEAVE_RETURN_IF_ERROR(ValidateRequest(request, output_tokens));
  std::unique_ptr<Sequence> seq = NewSequence(std::move(request), output_tokens);
  RequestId id = seq->id();
  scheduler_.Add(std::move(seq));
  return id;
}

Result<RequestId> Engine::AddPrefilledRequest(Request request, std::vector<TokenId> output_tokens,
                                              std::vector<BlockId> block_table,
                                              int32_t num_computed_tokens) {
  std::lock_guard lock(mu_);
  CLEAVE_RETURN_IF_ERROR(ValidateRequest(request, output_tokens));
  const int64_t num_tokens = int64_t(request.prompt.size()) + int64_t(output_tokens.size());
  if (num_computed_tokens < 1 || num_computed_tokens > num_tokens ||
      int64_t(block_table.size()) < pool_.BlocksFor(num_computed_tokens)) {
    return InvalidArgument("{} computed tokens do not fit {} tokens in {} blocks",
                           num_computed_tokens, num_tokens, block_table.size());
  }
  for (BlockId b : block_table) {
    if (b < 0 || b >= pool_.num_blocks() || pool_.ref_count(b) < 1) {
      return InvalidArgument("block {} was not allocated", b);
    }
  }
  std::unique_ptr<Sequence> seq = NewSequence(std::move(request), output_tokens);
  seq->block_table = std::move(block_table);
  seq->num_computed_tokens = num_computed_tokens;
  RequestId id = seq->id();
  scheduler_.AddPrefilled(std::move(seq));
  return id;
}

std::optional<std::vector<BlockId>> Engine::AllocateBlocks(int32_t n) {
  std::lock_guard lock(mu_);
  std::vector<BlockId> blocks;
  if (!pool_.Allocate(n, &blocks)) return std::nullopt;
  return blocks;
}

void Engine::FreeBlocks(const std::vector<BlockId>& blocks) {
  std::lock_guard lock(mu_);
  pool_.Free(blocks);
}

void Engine::Cancel(RequestId id) {
  std::lock_guard lock(mu_);
  Sequence* seq = scheduler_.Find(id);
  if (seq == nullptr) return;
  FinishRequest(id, FinishReason::kCancelled, NewOutput(*seq, streams_.at(id)));
}

Status Engine::Step() {
  ScheduledBatch batch;
  {
    std::lock_guard lock(mu_);
    batch = scheduler_.Schedule();
    const double now = config_.clock();
    for (const ScheduledSeq& s : batch.seqs) {
      Sequence* seq = scheduler_.Find(s.request_id);
      if (seq != nullptr && seq->first_scheduled_time_s < 0) seq->first_scheduled_time_s = now;
    }
    for (RequestId id : batch.failed) {
      RequestOutput out = NewOutput(*scheduler_.Find(id), streams_.at(id));
      out.error = "request needs more KV cache than this worker has";
      FinishRequest(id, FinishReason::kCapacity, std::move(out));
    }
    if (batch.empty()) return Status::Ok();
    ++num_steps_;
  }
  Result<Logits> logits = executor_->Execute(batch);  // unlocked: Add/Cancel may run meanwhile
  std::lock_guard lock(mu_);
  if (!logits.ok()) {
    for (const ScheduledSeq& s : batch.seqs) {
      if (Sequence* seq = scheduler_.Find(s.request_id)) {
        RequestOutput out = NewOutput(*seq, streams_.at(s.request_id));
        out.error = logits.status().ToString();
        FinishRequest(s.request_id, FinishReason::kError, std::move(out));
      }
    }
    return logits.status();
  }
  CLEAVE_CHECK(logits->num_rows() == batch.num_logits(), "executor returned {} rows for {}",
               logits->num_rows(), batch.num_logits());
  scheduler_.OnBatchComputed(batch);
  Update(batch, *logits);
  return Status::Ok();
}

void Engine::Update(const ScheduledBatch& batch, Logits& logits) {
  const double now = config_.clock();
  int32_t row = 0;
  for (const ScheduledSeq& s : batch.seqs) {
    if (!s.needs_logits) continue;
    std::span<float> logits_row = logits.row(row++);
    Sequence* seq = scheduler_.Find(s.request_id);
    if (seq == nullptr || seq->status != SequenceStatus::kRunning) continue;  // cancelled
    SampleResult sample =
        sampler_.Sample(logits_row, seq->params(), seq->prompt(), seq->output(), seq->rng);
    AppendToken(seq, streams_.at(seq->id()), sample, now);
  }
}

void Engine::AppendToken(Sequence* seq, Stream& stream, const SampleResult& sample, double now) {
  const TokenId token = sample.token;
  seq->AppendToken(token);
  seq->token_times_s.push_back(now);
  if (stream.first_token_time_s < 0) stream.first_token_time_s = now;

  RequestOutput out = NewOutput(*seq, stream);
  out.token_ids.push_back(token);
  out.token_times_s.push_back(now);
  if (seq->params().logprobs >= 0) out.logprobs.push_back({sample.logprob, sample.top});

  std::optional<FinishReason> reason = stream.stop.CheckToken(token, seq->num_output_tokens());
  const bool stop_token = reason == FinishReason::kStop;
  if (stop_token) out.stop_token = token;
  if (!stop_token && stream.decoder) {
    StopChecker::TextResult text = stream.stop.PushText(stream.decoder->Push(token));
    out.text += text.emit;
    if (text.stopped) {
      reason = FinishReason::kStop;
      out.stop_string = text.stop_string;
    }
  }
  if (!reason && seq->num_tokens() >= max_model_len_) reason = FinishReason::kLength;
  if (!reason) {
    Push(std::move(out));
    return;
  }
  const bool continues_elsewhere = *reason == FinishReason::kLength && stream.hold_text_at_length;
  if (out.stop_string.empty() && stream.decoder && !continues_elsewhere) {
    // Whatever the decoder and the stop checker still hold is final now (a stop string could
    // still complete inside the decoder's tail).
    StopChecker::TextResult text = stream.stop.PushText(stream.decoder->Flush());
    out.text += text.emit;
    if (text.stopped) {
      reason = FinishReason::kStop;
      out.stop_string = text.stop_string;
    } else {
      out.text += stream.stop.Flush();
    }
  }
  FinishRequest(seq->id(), *reason, std::move(out));
}

RequestOutput Engine::NewOutput(const Sequence& seq, const Stream& stream) const {
  RequestOutput out;
  out.request_id = seq.id();
  out.arrival_time_s = seq.arrival_time_s();
  out.first_token_time_s = stream.first_token_time_s;
  out.num_prompt_tokens = seq.num_prompt_tokens();
  out.num_cached_tokens = seq.num_cached_prompt_tokens;
  out.first_scheduled_time_s = seq.first_scheduled_time_s;
  return out;
}

void Engine::FinishRequest(RequestId id, FinishReason reason, RequestOutput out) {
  std::unique_ptr<Sequence> seq = scheduler_.Finish(id, reason);
  CLEAVE_CHECK(seq != nullptr);
  out.finished = true;
  out.finish_reason = seq->finish_reason;
  out.num_cached_tokens = seq->num_cached_prompt_tokens;
  streams_.erase(id);
  Push(std::move(out));
}

void Engine::Push(RequestOutput out) {
  outputs_.push_back(std::move(out));
  outputs_cv_.notify_all();
}

Status Engine::RunUntilIdle() {
  while (HasUnfinished()) CLEAVE_RETURN_IF_ERROR(Step());
  return Status::Ok();
}

std::vector<RequestOutput> Engine::PollOutputs() {
  std::lock_guard lock(mu_);
  std::vector<RequestOutput> out(std::make_move_iterator(outputs_.begin()),
                                 std::make_move_iterator(outputs_.end()));
  outputs_.clear();
  return out;
}

bool Engine::WaitForOutputs(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return outputs_cv_.wait_for(lock, timeout, [&] { return !outputs_.empty(); });
}

bool Engine::HasUnfinished() const {
  std::lock_guard lock(mu_);
  return scheduler_.has_unfinished();
}

int32_t Engine::num_running() const {
  std::lock_guard lock(mu_);
  return scheduler_.num_running();
}

int32_t Engine::num_waiting() const {
  std::lock_guard lock(mu_);
  return scheduler_.num_waiting();
}

BlockPoolStats Engine::block_stats() const {
  std::lock_guard lock(mu_);
  return pool_.stats();
}

int64_t Engine::num_preemptions() const {
  std::lock_guard lock(mu_);
  return scheduler_.num_preemptions();
}

}  // namespace cleave
