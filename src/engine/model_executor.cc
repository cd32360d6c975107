#include "engine/model_executor.h"

namespace cleave {

ModelExecutor::ModelExecutor(Model& model, int32_t num_blocks, int32_t block_size, int num_threads,
                             DType kv_dtype)
    : model_(model),
      cache_(model.MakeKvCache(num_blocks, block_size, kv_dtype)),
      pool_(num_threads) {}

Result<Logits> ModelExecutor::Execute(const ScheduledBatch& batch) {
  items_.clear();
  for (const ScheduledSeq& seq : batch.seqs) {
    items_.push_back(ForwardItem{seq.token_ids, seq.start, seq.block_table,
                                 seq.needs_logits ? LogitsMode::kLast : LogitsMode::kNone});
  }
  Logits logits;
  logits.vocab_size = vocab_size();
  CLEAVE_RETURN_IF_ERROR(model_.Forward(items_, cache_, pool_, &logits.data, on_layer_kv_));
  return logits;
}

}  // namespace cleave
