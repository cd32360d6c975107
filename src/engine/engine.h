// Engine: one worker's loop. Step() = schedule, execute, update.
//
//   AddRequest ─► Scheduler (waiting) ─► Schedule() ─► ScheduledBatch ─► Executor::Execute()
//                                                                            │ logits
//   PollOutputs ◄─ RequestOutput queue ◄─ stop checks + detokenize ◄─ Sampler ◄┘
//
// Thread-safety: AddRequest, Cancel, PollOutputs, WaitForOutputs and the stats accessors may be
// called from any thread. Step() must be called from one thread at a time (the engine thread);
// it holds the lock while scheduling and updating, not while the executor runs, so a Cancel()
// during execution frees the blocks at once and the step's result for it is dropped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "engine/block_pool.h"
#include "engine/executor.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/stop_checker.h"
#include "model/tokenizer.h"

namespace cleave {

struct EngineConfig {
  int32_t num_blocks = 1024;  // KV capacity = num_blocks * block_size tokens
  int32_t block_size = 16;
  bool enable_prefix_caching = true;
  SchedulerConfig scheduler{};
  int32_t max_model_len = 0;        // prompt + output limit; 0: the KV capacity
  uint64_t seed = 0;                // draws the seeds of requests that bring none
  std::function<double()> clock{};  // seconds; default: steady clock since construction
};

struct Request {
  std::vector<TokenId> prompt;
  SamplingParams params;
  int32_t priority = 0;  // lower is served first
  // The output continues elsewhere after this engine stops at max_tokens (a prefill worker's
  // first token): text held back there (a possible stop string, an incomplete character) is
  // not flushed, because the engine that continues replays the same tokens and owns it.
  bool hold_text_at_length = false;
};

struct TokenLogprobs {
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

// One message of a request's output stream: what is new since the previous one. The last
// message of every request has finished set (after a finish, cancel or failure).
struct RequestOutput {
  RequestId request_id = 0;
  std::vector<TokenId> token_ids;
  std::string text;                     // complete UTF-8; empty without a tokenizer
  std::vector<TokenLogprobs> logprobs;  // one per token when params.logprobs >= 0
  std::vector<double> token_times_s;    // one per token, when it was sampled
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_string;  // the stop string that matched, if any
  TokenId stop_token = -1;  // the stop/EOG token that ended it, if any
  std::string error;        // for kError
  double arrival_time_s = 0;
  double first_scheduled_time_s = -1;  // first put in a batch; -1 until then
  double first_token_time_s = -1;      // -1 until the first token
  int32_t num_prompt_tokens = 0;
  int32_t num_cached_tokens = 0;  // prompt tokens served from the prefix cache
};

class Engine {
 public:
  // executor must outlive the engine; tokenizer may be null (no text, no EOG ids).
  Engine(EngineConfig config, Executor* executor, const Tokenizer* tokenizer);
  ~Engine();

  // Validates and queues a request. output_tokens were generated before it reached this engine
  // (an earlier attempt on a worker that died, or another worker): they are computed with the
  // prompt, count toward max_tokens and min_tokens, continue a seeded request's random stream
  // (draw n depends only on seed and n), and are replayed through the detokenizer and stop
  // checker without being streamed again, so text held back at the hand-over (a possible stop
  // string) is streamed or dropped exactly as in an uninterrupted run. Thread-safe.
  Result<RequestId> AddRequest(Request request, std::vector<TokenId> output_tokens = {});
  // Queues a request whose KV for tokens [0, num_computed_tokens) of prompt + output_tokens is
  // already in block_table (allocated with AllocateBlocks, filled elsewhere, e.g. by a prefill
  // worker). output_tokens are as in AddRequest. Thread-safe.
  Result<RequestId> AddPrefilledRequest(Request request, std::vector<TokenId> output_tokens,
                                        std::vector<BlockId> block_table,
                                        int32_t num_computed_tokens);
  // Reserves n blocks (e.g. to receive shipped KV); nullopt when the pool is short. Thread-safe.
  std::optional<std::vector<BlockId>> AllocateBlocks(int32_t n);
  // Returns blocks from AllocateBlocks that were not handed to AddPrefilledRequest (e.g. a KV
  // transfer failed). Thread-safe.
  void FreeBlocks(const std::vector<BlockId>& blocks);
  // Finishes the request with kCancelled and frees its blocks now. Unknown ids are ignored.
  // Thread-safe.
  void Cancel(RequestId id);

  // One iteration. Returns the executor's error if it failed (the batch's requests are then
  // finished with kError); otherwise OK, also when there was nothing to do.
  Status Step();
  // Steps until no request is unfinished (tests, batch CLI).
  Status RunUntilIdle();

  // Takes all queued outputs, in order. Thread-safe.
  std::vector<RequestOutput> PollOutputs();
  // Blocks until an output is queued or the timeout passes; true if one is. Thread-safe.
  bool WaitForOutputs(std::chrono::milliseconds timeout);

  bool HasUnfinished() const;
  int32_t num_running() const;
  int32_t num_waiting() const;
  BlockPoolStats block_stats() const;
  int64_t num_preemptions() const;
  int32_t max_model_len() const { return max_model_len_; }
  int64_t num_steps() const { return num_steps_; }

 private:
  // Per-request output state that the scheduler does not need.
  struct Stream {
    Stream(const SamplingParams& params, const Tokenizer* tokenizer);
    StopChecker stop;
    std::optional<IncrementalDecoder> decoder;
    double first_token_time_s = -1;
    bool hold_text_at_length = false;  // Request::hold_text_at_length
  };

  Status ValidateRequest(const Request& request, std::span<const TokenId> output_tokens = {}) const;
  // A sequence and its output stream, with output_tokens replayed into both.
  std::unique_ptr<Sequence> NewSequence(Request request,
                                        std::span<const TokenId> output_tokens = {});
  void Update(const ScheduledBatch& batch, Logits& logits);
  void AppendToken(Sequence* seq, Stream& stream, const SampleResult& sample, double now);
  void FinishRequest(RequestId id, FinishReason reason, RequestOutput out);
  RequestOutput NewOutput(const Sequence& seq, const Stream& stream) const;
  void Push(RequestOutput out);

  EngineConfig config_;
  Executor* executor_;
  const Tokenizer* tokenizer_;
  int32_t max_model_len_;
  std::chrono::steady_clock::time_point start_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable outputs_cv_;
  BlockPool pool_;
  Scheduler scheduler_;
  Sampler sampler_;
  Rng seed_rng_;
  RequestId next_id_ = 1;
  uint64_t next_arrival_ = 0;
  std::unordered_map<RequestId, Stream> streams_;
  std::deque<RequestOutput> outputs_;
  int64_t num_steps_ = 0;
};

}  // namespace cleave
