// Scheduler: decides, each step, which sequences compute which tokens.
//
// One rule (see sequence.h): each sequence has tokens known and tokens computed, and each step
// hands out a token budget to close the gaps. Running sequences come first, in priority order
// (a sequence that just sampled needs 1 token: a decode; one still mid-prompt gets the next
// chunk), then waiting sequences are admitted in priority/arrival order while budget, the
// sequence cap and free blocks last. Admission reuses the longest prefix-cache hit.
//
// Out of blocks is not an error: the lowest-priority (then latest-arrived) running sequence is
// preempted, its blocks freed and its KV recomputed later from prompt + output, so nothing
// deadlocks. A step that preempted admits nobody new. A sequence whose known tokens could not
// fit even in an empty cache is finished with FinishReason::kCapacity instead of waiting forever.
//
// The scheduler owns its sequences and never touches tensors; its output is a plain struct.
// Thread-safety: none (the engine serialises calls).
#pragma once

#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/block_pool.h"
#include "engine/sequence.h"

namespace cleave {

struct SchedulerConfig {
  int32_t max_batch_tokens = 2048;  // tokens computed per step, over all sequences
  int32_t max_seqs = 256;           // running sequences at once
  int32_t max_chunk_tokens = 0;     // per sequence per step; 0: only the budget limits
  // vLLM <= 0.3's order (no chunked prefill), kept as a baseline for the planner: a step that
  // can admit waiting sequences runs only their whole prompts, and decodes wait for the next
  // step. A prompt is split only when it alone exceeds max_batch_tokens.
  bool prefill_first = false;
};

// One sequence's work for one step: compute KV for tokens [start, start + num_tokens).
struct ScheduledSeq {
  RequestId request_id = 0;
  int32_t start = 0;
  int32_t num_tokens = 0;
  std::vector<TokenId> token_ids;    // the tokens at positions [start, start + num_tokens)
  std::vector<BlockId> block_table;  // covers positions [0, start + num_tokens)
  bool needs_logits = false;  // the span ends at the last known token: sample after this step
};

struct ScheduledBatch {
  std::vector<ScheduledSeq> seqs;
  std::vector<RequestId> preempted;  // lost their blocks this step (will recompute)
  std::vector<RequestId> failed;     // finished by the scheduler (kCapacity); collect via Finish
  int32_t num_tokens = 0;            // sum of seqs[i].num_tokens, <= max_batch_tokens

  bool empty() const { return seqs.empty(); }
  int32_t num_logits() const;
};

class Scheduler {
 public:
  // pool must outlive the scheduler.
  Scheduler(SchedulerConfig config, BlockPool* pool);
  ~Scheduler();

  const SchedulerConfig& config() const { return config_; }
  BlockPool& pool() { return *pool_; }

  // Queues a new sequence (no blocks, nothing computed).
  void Add(std::unique_ptr<Sequence> seq);
  // Queues a sequence whose KV for tokens [0, num_computed_tokens) already sits in its
  // block_table (blocks allocated from this pool, one reference each, e.g. filled by a prefill
  // worker). If everything is computed, the last token is recomputed to get logits.
  void AddPrefilled(std::unique_ptr<Sequence> seq);

  // Plans one step. Preemptions and kCapacity failures happen here.
  ScheduledBatch Schedule();
  // Records that the executor computed `batch`: advances num_computed_tokens and registers newly
  // full blocks with the prefix cache. Sequences finished since Schedule() are skipped.
  void OnBatchComputed(const ScheduledBatch& batch);
  // Frees the sequence's blocks at once, removes it and hands it back (status kFinished, its
  // finish_reason set to `reason` unless already finished). nullptr if the id is unknown.
  std::unique_ptr<Sequence> Finish(RequestId id, FinishReason reason);

  Sequence* Find(RequestId id);
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  // Number of unfinished sequences (running, waiting or preempted).
  int32_t num_unfinished() const { return num_running() + num_waiting(); }
  bool has_unfinished() const { return num_unfinished() > 0; }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  int32_t ChunkSize(const Sequence& seq, int32_t num_computed, int32_t budget) const;
  void Emit(Sequence* seq, int32_t n, ScheduledBatch* batch);
  bool GrowTable(Sequence* seq, int32_t num_tokens_needed);
  void ScheduleRunning(int32_t* budget, ScheduledBatch* batch);
  void AdmitWaiting(int32_t* budget, ScheduledBatch* batch);
  bool TryAdmit(Sequence* seq, int32_t budget, ScheduledBatch* batch);
  void ReleaseBlocks(Sequence* seq);
  void Preempt(Sequence* seq, ScheduledBatch* batch);
  void Fail(Sequence* seq, FinishReason reason, ScheduledBatch* batch);
  bool ReclaimFromWaiting(const Sequence* keep);
  void RegisterFullBlocks(Sequence* seq);
  void InsertWaiting(Sequence* seq);
  void InsertRunning(Sequence* seq);
  void RemoveFromQueues(Sequence* seq);

  SchedulerConfig config_;
  BlockPool* pool_;
  std::unordered_map<RequestId, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;  // sorted: priority, then arrival
  std::deque<Sequence*> waiting_;   // sorted the same way; includes preempted sequences
  int64_t num_preemptions_ = 0;
};

}  // namespace cleave
