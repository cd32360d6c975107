// The executor that runs the real model: turns the scheduler's plan into one batched forward
// pass over the paged KV cache it owns.
#pragma once

#include <memory>
#include <utility>

#include "core/thread_pool.h"
#include "engine/executor.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace cleave {

class ModelExecutor : public Executor {
 public:
  // `model` must outlive the executor. KV storage for num_blocks blocks of kv_dtype is allocated
  // here (KvCache::CheckSupported(kv_dtype, head_dim) must pass).
  ModelExecutor(Model& model, int32_t num_blocks, int32_t block_size, int num_threads,
                DType kv_dtype = DType::kF16);

  Result<Logits> Execute(const ScheduledBatch& batch) override;
  int32_t vocab_size() const override { return static_cast<int32_t>(model_.config().vocab_size); }
  void SetLayerKvObserver(std::function<void(int64_t layer)> fn) override {
    on_layer_kv_ = std::move(fn);
  }

  const KvCache& kv_cache() const { return cache_; }
  // For KV transfer: writes into blocks the engine reserved with AllocateBlocks, or reads blocks
  // of sequences between steps.
  KvCache& mutable_kv_cache() { return cache_; }
  int num_threads() const { return pool_.num_threads(); }

 private:
  Model& model_;
  KvCache cache_;
  ThreadPool pool_;
  std::vector<ForwardItem> items_;  // reused across steps
  Model::LayerKvFn on_layer_kv_;
};

}  // namespace cleave
