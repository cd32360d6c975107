// Worker::Impl, prefill side: stages a finished prompt's KV, or pushes it layer by layer
// to the decode worker that pulled it while it was computed (see worker_impl.h).
#include "cluster/worker_impl.h"

namespace cleave::cluster {

bool Worker::Impl::PushedWhole(const ScheduledSeq& s) {
  std::lock_guard lock(mu);
  auto e = by_engine.find(s.request_id);
  if (e == by_engine.end()) return false;
  auto p = pushes.find(e->second.rid);
  return p != pushes.end() && p->second.complete() &&
         int64_t(p->second.num_blocks) == CeilDiv(s.start + s.num_tokens, cache->block_size());
}

void Worker::Impl::OnLayerKv(int64_t layer) {
  if (executing == nullptr) return;
  for (const ScheduledSeq& s : executing->seqs) {
    std::shared_ptr<KvSender> peer;
    std::vector<uint32_t> dst_ids;
    uint64_t rid = 0;
    uint32_t from = 0, to = 0;
    {
      std::lock_guard lock(mu);
      auto e = by_engine.find(s.request_id);
      if (e == by_engine.end()) continue;
      auto p = pushes.find(e->second.rid);
      if (p == pushes.end()) continue;
      Push& push = p->second;
      const int64_t end = s.start + s.num_tokens;
      const int64_t ready =
          s.needs_logits ? CeilDiv(end, cache->block_size()) : end / cache->block_size();
      from = push.blocks_sent[layer];
      to = uint32_t(std::min<int64_t>(ready, push.num_blocks));
      if (to <= from) continue;
      push.blocks_sent[layer] = to;
      peer = push.peer;
      dst_ids = push.block_ids;
      rid = e->second.rid;
    }
    Status pushed = PushBlocks(*peer, rid, dst_ids, uint32_t(layer), from, to,
                               [&](bool value, uint32_t b) -> std::span<const uint8_t> {
                                 return KvBlockBytes(*cache, value, layer, s.block_table[b]);
                               });
    if (!pushed.ok()) spdlog::warn("KV push of request {} failed: {}", rid, pushed.ToString());
  }
}

void Worker::Impl::FinishPush(uint64_t rid, Push push, const StagedKv* kv,
                              const std::vector<TokenId>& tokens, const std::string& error) {
  KvDoneMsg done{rid, error.empty(), error, tokens};
  spdlog::debug("request {}: KV of {} layers streamed during the prefill, {} left to send", rid,
                std::count(push.blocks_sent.begin(), push.blocks_sent.end(), push.num_blocks),
                std::count_if(push.blocks_sent.begin(), push.blocks_sent.end(),
                              [&](uint32_t n) { return n != push.num_blocks; }));
  if (done.ok && (kv == nullptr || uint32_t(kv->num_blocks) != push.num_blocks) &&
      !push.complete()) {
    done = {rid, false, "the prompt's KV is incomplete", {}};
  }
  if (done.ok && !push.complete()) {
    const uint64_t block_bytes = KvBlockByteSize(*cache);
    for (uint32_t layer = 0; layer < push.blocks_sent.size() && done.ok; ++layer) {
      Status s = PushBlocks(
          *push.peer, rid, push.block_ids, layer, push.blocks_sent[layer], push.num_blocks,
          [&](bool value, uint32_t b) { return kv->Part(layer, int32_t(b), value, block_bytes); });
      if (!s.ok()) done = {rid, false, s.ToString(), {}};
    }
  }
  push.peer->Send(Encode(done));
}

void Worker::Impl::RememberFinished(uint64_t rid) {
  if (!finished_rids.insert(rid).second) return;
  finished_order.push_back(rid);
  if (finished_order.size() > kFinishedIdsKept) {
    finished_rids.erase(finished_order.front());
    finished_order.pop_front();
  }
}

void Worker::Impl::ExpireUnknownPushes() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = pushes.begin(); it != pushes.end();) {
    const uint64_t rid = it->first;
    const bool known = by_rid.count(rid) > 0 ||
                       std::any_of(pending.begin(), pending.end(),
                                   [&](const AddRequestMsg& m) { return m.request_id == rid; });
    if (known || now - it->second.registered < kUnknownPullTimeout) {
      ++it;
      continue;
    }
    it->second.peer->Send(
        Encode(KvDoneMsg{rid, false, "no such request on the prefill worker", {}}));
    it = pushes.erase(it);
  }
}

Result<std::unique_ptr<SharedKvRegion>> Worker::Impl::MapOffer(const ShmOfferMsg& m) {
  if (config.kv_transport == KvTransport::kTcp) return FailedPrecondition("TCP only here");
  CLEAVE_ASSIGN_OR_RETURN(uint64_t expected, KvRegionBytes(Layout()));
  if (m.region_bytes != expected) {
    return FailedPrecondition("offered {} bytes of KV, the layout has {}", m.region_bytes,
                              expected);
  }
  CLEAVE_ASSIGN_OR_RETURN(int fd, FetchShmFd(m.socket_name, m.token));
  return SharedKvRegion::Map(fd, expected);
}

void Worker::Impl::ServePull(KvPullMsg m, const std::shared_ptr<KvSender>& sender) {
  const uint64_t rid = m.request_id;
  auto refuse = [&](const std::string& error) {
    sender->Send(Encode(KvDoneMsg{rid, false, error, {}}));
  };
  if (!m.block_ids.empty()) {
    if (sender->region() == nullptr) return refuse("no shared KV region mapped");
    for (uint32_t id : m.block_ids) {
      if (id >= uint32_t(config.engine.num_blocks)) {
        return refuse(fmt::format("block id {} outside the shared region", id));
      }
    }
  }
  const uint32_t num_layers = uint32_t(cache->num_layers());
  Push push{sender, m.num_blocks, std::move(m.block_ids), std::vector<uint32_t>(num_layers, 0),
            std::chrono::steady_clock::now()};
  std::unique_lock lock(mu);
  if (auto it = staged.find(rid); it != staged.end()) {
    // Staged: the copy out of the engine's cache is ours now; send it without holding mu.
    StagedKv kv = std::move(it->second);
    staged.erase(it);
    staged_blocks -= kv.num_blocks;
    Wake();
    lock.unlock();
    if (uint32_t(kv.num_blocks) != push.num_blocks) {
      return refuse(fmt::format("{} blocks reserved for {} staged", m.num_blocks, kv.num_blocks));
    }
    return FinishPush(rid, std::move(push), &kv, kv.output_tokens, "");
  }
  int64_t prompt_len = -1;  // -1: not known here (yet)
  if (auto it = by_rid.find(rid); it != by_rid.end()) {
    prompt_len = by_engine.at(it->second).prompt_len;
  }
  for (const AddRequestMsg& p : pending) {
    if (p.request_id == rid) prompt_len = KvTokens(p);
  }
  if (finished_rids.count(rid)) return refuse("the request ended at its first token here");
  if (pushes.count(rid)) return refuse("a second pull for the same request");
  if (prompt_len >= 0 && CeilDiv(prompt_len, cache->block_size()) != int64_t(m.num_blocks)) {
    return refuse(
        fmt::format("{} blocks reserved for a {}-token prompt", m.num_blocks, prompt_len));
  }
  pushes.emplace(rid, std::move(push));
}

}  // namespace cleave::cluster
