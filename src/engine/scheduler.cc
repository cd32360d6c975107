#include "engine/scheduler.h"

#include <algorithm>

#include "core/status.h"

namespace cleave {

namespace {

// Serving order: lower priority value first, then earlier arrival.
bool ServedBefore(const Sequence* a, const Sequence* b) {
  if (a->priority() != b->priority()) return a->priority() < b->priority();
  return a->arrival_order() < b->arrival_order();
}

}  // namespace

int32_t ScheduledBatch::num_logits() const {
  int32_t n = 0;
  for (const ScheduledSeq& s : seqs) n += s.needs_logits ? 1 : 0;
  return n;
}

Scheduler::Scheduler(SchedulerConfig config, BlockPool* pool) : config_(config), pool_(pool) {
  CLEAVE_CHECK(config_.max_batch_tokens > 0 && config_.max_seqs > 0);
}

Scheduler::~Scheduler() {
  // Return every block so a pool that outlives us is left whole.
  for (auto& [id, seq] : seqs_) ReleaseBlocks(seq.get());
}

void Scheduler::Add(std::unique_ptr<Sequence> seq) {
  CLEAVE_CHECK(seq->num_tokens() > 0 && seq->block_table.empty() && seq->num_computed_tokens == 0);
  Sequence* raw = seq.get();
  CLEAVE_CHECK(seqs_.emplace(raw->id(), std::move(seq)).second, "duplicate id {}", raw->id());
  raw->status = SequenceStatus::kWaiting;
  InsertWaiting(raw);
}

void Scheduler::AddPrefilled(std::unique_ptr<Sequence> seq) {
  CLEAVE_CHECK(seq->num_tokens() > 0 && seq->num_computed_tokens > 0);
  CLEAVE_CHECK(
      static_cast<int32_t>(seq->block_table.size()) >= pool_->BlocksFor(seq->num_computed_tokens),
      "block table too short for {} computed tokens", seq->num_computed_tokens);
  // Logits come from computing a token, so at least the last one is recomputed. The blocks are
  // this sequence's own, so rewriting that slot disturbs nobody.
  seq->num_computed_tokens = std::min(seq->num_computed_tokens, seq->num_tokens() - 1);
  Sequence* raw = seq.get();
  CLEAVE_CHECK(seqs_.emplace(raw->id(), std::move(seq)).second, "duplicate id {}", raw->id());
  raw->block_hashes.clear();
  RegisterFullBlocks(raw);
  raw->status = SequenceStatus::kWaiting;
  InsertWaiting(raw);
}

int32_t Scheduler::ChunkSize(const Sequence& seq, int32_t num_computed, int32_t budget) const {
  int32_t n = std::min(seq.num_tokens() - num_computed, budget);
  if (config_.max_chunk_tokens > 0) n = std::min(n, config_.max_chunk_tokens);
  return n;
}

void Scheduler::Emit(Sequence* seq, int32_t n, ScheduledBatch* batch) {
  ScheduledSeq& s = batch->seqs.emplace_back();
  s.request_id = seq->id();
  s.start = seq->num_computed_tokens;
  s.num_tokens = n;
  auto span = seq->tokens().subspan(s.start, n);
  s.token_ids.assign(span.begin(), span.end());
  s.block_table = seq->block_table;
  s.needs_logits = s.start + n == seq->num_tokens();
  batch->num_tokens += n;
}

bool Scheduler::GrowTable(Sequence* seq, int32_t num_tokens_needed) {
  int32_t missing =
      pool_->BlocksFor(num_tokens_needed) - static_cast<int32_t>(seq->block_table.size());
  return missing <= 0 || pool_->Allocate(missing, &seq->block_table);
}

ScheduledBatch Scheduler::Schedule() {
  ScheduledBatch batch;
  int32_t budget = config_.max_batch_tokens;
  if (config_.prefill_first) {
    AdmitWaiting(&budget, &batch);
    if (!batch.empty()) return batch;
  }
  ScheduleRunning(&budget, &batch);
  // A step that had to preempt is short of blocks already, so it admits nobody (avoids
  // thrashing). With prefill_first, whoever could be admitted was admitted above.
  if (!config_.prefill_first && batch.preempted.empty()) AdmitWaiting(&budget, &batch);
  return batch;
}

void Scheduler::ScheduleRunning(int32_t* budget, ScheduledBatch* batch) {
  // Most important first; make room by preempting from the back.
  for (size_t i = 0; i < running_.size() && *budget > 0;) {
    Sequence* seq = running_[i];
    if (pool_->BlocksFor(seq->num_tokens()) > pool_->num_blocks()) {
      Fail(seq, FinishReason::kCapacity, batch);  // removes running_[i]
      continue;
    }
    int32_t n = ChunkSize(*seq, seq->num_computed_tokens, *budget);
    if (n <= 0) {
      ++i;
      continue;
    }
    bool self_preempted = false;
    while (!GrowTable(seq, seq->num_computed_tokens + n)) {
      // The back is never already in the batch: everything before index i is, and i <= back.
      Sequence* victim = running_.back();
      Preempt(victim, batch);
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;
    Emit(seq, n, batch);
    *budget -= n;
    ++i;
  }
}

void Scheduler::AdmitWaiting(int32_t* budget, ScheduledBatch* batch) {
  // In order while budget, sequence cap and blocks last.
  while (!waiting_.empty() && *budget > 0 && num_running() < config_.max_seqs) {
    Sequence* seq = waiting_.front();
    if (pool_->BlocksFor(seq->num_tokens()) > pool_->num_blocks()) {
      Fail(seq, FinishReason::kCapacity, batch);
      continue;
    }
    // Whole prompts only: the next one waits for a step with room for all of it.
    if (config_.prefill_first && !batch->empty() &&
        seq->num_tokens() - seq->num_computed_tokens > *budget) {
      break;
    }
    if (TryAdmit(seq, *budget, batch)) {
      *budget -= batch->seqs.back().num_tokens;
      continue;
    }
    // Head-of-line blocking keeps FCFS order. If nothing runs, only waiting sequences holding
    // blocks (prefilled ones) can be in the way: take theirs and retry.
    if (running_.empty() && ReclaimFromWaiting(seq)) continue;
    break;
  }
}

bool Scheduler::TryAdmit(Sequence* seq, int32_t budget, ScheduledBatch* batch) {
  std::vector<BlockId> hit;
  std::vector<BlockHash> hit_hashes;
  if (seq->block_table.empty()) {
    CLEAVE_CHECK(seq->num_computed_tokens == 0);
    // Never take the block holding the last known token from the cache: it must be computed
    // for logits, and recomputing inside a shared block would write where others read.
    int32_t max_blocks = (seq->num_tokens() - 1) / pool_->block_size();
    hit = pool_->FindCachedPrefix(seq->tokens(), max_blocks, &hit_hashes);
    // Take the references before allocating, so allocation cannot evict the hits.
    pool_->Acquire(hit);
  }
  const int32_t num_computed =
      seq->num_computed_tokens + static_cast<int32_t>(hit.size()) * pool_->block_size();
  const int32_t n = ChunkSize(*seq, num_computed, budget);
  std::vector<BlockId> table = seq->block_table;
  table.insert(table.end(), hit.begin(), hit.end());
  int32_t missing = pool_->BlocksFor(num_computed + n) - static_cast<int32_t>(table.size());
  if (missing > 0 && !pool_->Allocate(missing, &table)) {
    std::reverse(hit.begin(), hit.end());
    pool_->Free(hit);
    return false;
  }
  if (!hit.empty()) {
    seq->block_hashes = std::move(hit_hashes);
  }
  if (seq->status == SequenceStatus::kWaiting && seq->num_preemptions == 0) {
    seq->num_cached_prompt_tokens = static_cast<int32_t>(hit.size()) * pool_->block_size();
  }
  seq->block_table = std::move(table);
  seq->num_computed_tokens = num_computed;
  waiting_.pop_front();
  seq->status = SequenceStatus::kRunning;
  InsertRunning(seq);
  Emit(seq, n, batch);
  return true;
}

void Scheduler::ReleaseBlocks(Sequence* seq) {
  // Reversed, so a sequence's tail blocks are evicted before its (more shareable) head blocks.
  std::reverse(seq->block_table.begin(), seq->block_table.end());
  pool_->Free(seq->block_table);
  seq->block_table.clear();
  seq->block_hashes.clear();
  seq->num_computed_tokens = 0;
}

void Scheduler::Preempt(Sequence* seq, ScheduledBatch* batch) {
  RemoveFromQueues(seq);
  ReleaseBlocks(seq);
  seq->status = SequenceStatus::kPreempted;
  ++seq->num_preemptions;
  ++num_preemptions_;
  InsertWaiting(seq);
  batch->preempted.push_back(seq->id());
}

void Scheduler::Fail(Sequence* seq, FinishReason reason, ScheduledBatch* batch) {
  RemoveFromQueues(seq);
  ReleaseBlocks(seq);
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
  batch->failed.push_back(seq->id());
}

bool Scheduler::ReclaimFromWaiting(const Sequence* keep) {
  for (auto it = waiting_.rbegin(); it != waiting_.rend(); ++it) {
    Sequence* seq = *it;
    if (seq == keep || seq->block_table.empty()) continue;
    ReleaseBlocks(seq);
    seq->status = SequenceStatus::kPreempted;
    ++seq->num_preemptions;
    ++num_preemptions_;
    return true;
  }
  return false;
}

void Scheduler::OnBatchComputed(const ScheduledBatch& batch) {
  for (const ScheduledSeq& s : batch.seqs) {
    Sequence* seq = Find(s.request_id);
    if (seq == nullptr || seq->status != SequenceStatus::kRunning) continue;
    CLEAVE_CHECK(seq->num_computed_tokens == s.start, "seq {} computed {} vs span start {}",
                 s.request_id, seq->num_computed_tokens, s.start);
    seq->num_computed_tokens += s.num_tokens;
    RegisterFullBlocks(seq);
  }
}

void Scheduler::RegisterFullBlocks(Sequence* seq) {
  const int32_t bs = pool_->block_size();
  const size_t num_full = seq->num_computed_tokens / bs;
  for (size_t i = seq->block_hashes.size(); i < num_full; ++i) {
    BlockHash parent = i == 0 ? kRootBlockHash : seq->block_hashes[i - 1];
    seq->block_hashes.push_back(
        pool_->CacheFullBlock(seq->block_table[i], parent, seq->tokens().subspan(i * bs, bs)));
  }
}

std::unique_ptr<Sequence> Scheduler::Finish(RequestId id, FinishReason reason) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return nullptr;
  std::unique_ptr<Sequence> seq = std::move(it->second);
  seqs_.erase(it);
  if (seq->status != SequenceStatus::kFinished) {
    RemoveFromQueues(seq.get());
    ReleaseBlocks(seq.get());
    seq->status = SequenceStatus::kFinished;
    seq->finish_reason = reason;
  }
  return seq;
}

Sequence* Scheduler::Find(RequestId id) {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

void Scheduler::InsertWaiting(Sequence* seq) {
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, ServedBefore), seq);
}

void Scheduler::InsertRunning(Sequence* seq) {
  running_.insert(std::upper_bound(running_.begin(), running_.end(), seq, ServedBefore), seq);
}

void Scheduler::RemoveFromQueues(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) {
    running_.erase(it);
  } else if (auto wit = std::find(waiting_.begin(), waiting_.end(), seq); wit != waiting_.end()) {
    waiting_.erase(wit);
  }
}

}  // namespace cleave
