// Executor: the engine's one call into the model (or into a cost model, or a test fake).
//
// KV storage is owned by the executor and indexed by the block ids the scheduler assigned
// (see block_pool.h for the layout): position p of a sequence lives in block
// block_table[p / block_size], slot p % block_size. Freeing, sharing (prefix caching) and
// preemption are pure bookkeeping in the block pool, so the executor is never told about them:
// it writes K/V for the positions it is asked to compute and reads the rest through the table.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/status.h"
#include "engine/scheduler.h"

namespace cleave {

// One logits row per sequence that needs logits, in batch order.
struct Logits {
  int32_t vocab_size = 0;
  std::vector<float> data;  // [num_rows, vocab_size]

  int32_t num_rows() const { return vocab_size ? int32_t(data.size() / vocab_size) : 0; }
  std::span<float> row(int32_t i) {
    return std::span<float>(data).subspan(size_t(i) * vocab_size, vocab_size);
  }
};

class Executor {
 public:
  virtual ~Executor() = default;
  // Computes and stores KV for every span in `batch` (attending to earlier positions through
  // each block table), and returns logits for the last token of each span with needs_logits, in
  // batch order. On error no sequence advances; the engine fails the batch's requests.
  virtual Result<Logits> Execute(const ScheduledBatch& batch) = 0;
  // Width of each logits row.
  virtual int32_t vocab_size() const = 0;
  // During later Execute calls, fn(layer) runs on the executing thread as soon as that layer's
  // K and V for the whole batch are in the cache (layer-wise KV transfer). Executors without
  // layers ignore it; callers must then treat a step's KV as complete only when Execute returns.
  virtual void SetLayerKvObserver(std::function<void(int64_t layer)> fn) { (void)fn; }
};

}  // namespace cleave
