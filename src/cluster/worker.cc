#include "cluster/worker.h"

#include "cluster/worker_impl.h"

namespace cleave::cluster {

std::span<uint8_t> KvBlockBytes(KvCache& cache, bool value, int64_t layer, int64_t block) {
  return cache.BlockBytes(value, layer, block);
}

uint64_t KvBlockByteSize(const KvCache& cache) {
  return uint64_t(cache.block_bytes());
}

Result<KvTransport> ParseKvTransport(std::string_view name) {
  if (name == "auto") return KvTransport::kAuto;
  if (name == "tcp") return KvTransport::kTcp;
  if (name == "shm") return KvTransport::kShm;
  return InvalidArgument("KV transport '{}': expected auto, tcp or shm", name);
}

Result<Logits> Worker::Impl::Execute(const ScheduledBatch& batch) {
  executing = &batch;
  Result<Logits> logits = inner->Execute(batch);
  executing = nullptr;
  if (!logits.ok() || config.role != WorkerRole::kPrefill) return logits;
  const uint64_t block_bytes = KvBlockByteSize(*cache);
  for (const ScheduledSeq& s : batch.seqs) {
    if (!s.needs_logits) continue;  // a prefill-only request needs logits once: prompt done
    if (PushedWhole(s)) continue;   // streamed layer by layer already: nothing to stage
    StagedKv staged;
    staged.num_blocks = CeilDiv(s.start + s.num_tokens, cache->block_size());
    staged.bytes.resize(size_t(cache->num_layers()) * staged.num_blocks * 2 * block_bytes);
    uint8_t* out = staged.bytes.data();
    for (int64_t layer = 0; layer < cache->num_layers(); ++layer) {
      for (int32_t b = 0; b < staged.num_blocks; ++b) {
        for (bool value : {false, true}) {
          std::span<uint8_t> src = KvBlockBytes(*cache, value, layer, s.block_table[b]);
          std::memcpy(out, src.data(), src.size());
          out += src.size();
        }
      }
    }
    captured[s.request_id] = std::move(staged);  // engine thread only
  }
  return logits;
}

void Worker::Impl::SendToRouter(const Frame& f) {
  std::shared_ptr<Connection> r;
  {
    std::lock_guard lock(mu);
    r = router;
  }
  if (r) (void)r->Send(f);
}

void Worker::Impl::FailToRouter(uint64_t rid, const std::string& error, bool kv_transfer_failed) {
  TokenOutputMsg m;
  m.request_id = rid;
  m.kv_transfer_failed = kv_transfer_failed;
  m.output.finished = true;
  m.output.finish_reason = FinishReason::kError;
  m.output.error = error;
  SendToRouter(Encode(m));
}

void Worker::Impl::AcceptLoop() {
  while (true) {
    Result<std::unique_ptr<Connection>> conn = listener->Accept();
    if (!conn.ok()) return;
    std::shared_ptr<Connection> c = std::move(*conn);
    std::lock_guard lock(mu);
    if (stop) return;
    conns.push_back(c);
    conn_threads.emplace_back([this, c] { ServeConnection(c); });
  }
}

void Worker::Impl::ServeConnection(std::shared_ptr<Connection> conn) {
  Result<HelloMsg> hello = AcceptHandshake(*conn, config.secret, config.role, Layout());
  if (!hello.ok()) {
    spdlog::warn("refused {}: {}", conn->peer(), hello.status().ToString());
    conn->Close();
    return;
  }
  if (hello->role == WorkerRole::kRouter) {
    std::lock_guard lock(mu);
    router = conn;
  } else if (!(hello->layout == Layout())) {
    spdlog::warn("refused {}: its KV layout differs from ours", conn->peer());
    conn->Close();
    return;
  } else {
    std::lock_guard lock(mu);
    if (kv_fault_armed) {  // test only
      kv_fault_armed = false;
      auto faulty = std::make_shared<FaultyConnection>(conn, config.kv_fault);
      std::replace(conns.begin(), conns.end(), conn, std::shared_ptr<Connection>(faulty));
      conn = faulty;
      spdlog::warn("fault injection armed on the KV connection from {}", conn->peer());
    }
  }
  // A decode worker: everything we send it goes through its KvSender.
  std::shared_ptr<KvSender> sender;
  if (hello->role != WorkerRole::kRouter) {
    sender = std::make_shared<KvSender>(conn, kKvPeerHeartbeat);
  }
  while (true) {
    Result<Frame> frame = conn->Recv();
    if (!frame.ok()) break;
    Status s = Dispatch(*frame, conn, sender);
    if (!s.ok()) {
      spdlog::warn("dropping {}: {}", conn->peer(), s.ToString());
      break;
    }
  }
  conn->Close();
  if (sender) {
    sender->Stop();
    std::lock_guard lock(mu);
    std::erase_if(pushes, [&](const auto& p) { return p.second.peer == sender; });
  }
  std::lock_guard lock(mu);
  if (router == conn) {
    // The router is gone: nobody will read these requests' outputs; free their KV.
    router.reset();
    for (const auto& [eid, t] : by_engine) engine.Cancel(eid);
    pending.clear();
    pulls.clear();
    staged.clear();
    // Pushes of running prompts end with their (cancelled) requests; the others now.
    std::erase_if(pushes, [&](auto& p) {
      if (by_rid.count(p.first)) return false;
      p.second.peer->Send(Encode(KvDoneMsg{p.first, false, "the router is gone", {}}));
      return true;
    });
    staged_blocks = 0;
    for (auto& [rid, t] : transfers) t.cancelled = true;
    Wake();
  }
}

Status Worker::Impl::Dispatch(const Frame& frame, const std::shared_ptr<Connection>& conn,
                              const std::shared_ptr<KvSender>& sender) {
  switch (frame.type) {
    case MessageType::kAddRequest: {
      CLEAVE_ASSIGN_OR_RETURN(AddRequestMsg m, DecodeAddRequest(frame));
      std::lock_guard lock(mu);
      if (IsDecodeMode(m.mode)) {
        pulls.push_back(std::move(m));
      } else {
        queued_prefill_tokens += KvTokens(m);
        pending.push_back(std::move(m));
      }
      Wake();
      return Status::Ok();
    }
    case MessageType::kCancel: {
      CLEAVE_ASSIGN_OR_RETURN(CancelMsg m, DecodeCancel(frame));
      CancelRequest(m.request_id);
      return Status::Ok();
    }
    case MessageType::kKvPull: {
      CLEAVE_ASSIGN_OR_RETURN(KvPullMsg m, DecodeKvPull(frame));
      if (!sender) return InvalidArgument("KV pull from the router");
      ServePull(std::move(m), sender);
      return Status::Ok();
    }
    case MessageType::kShmOffer: {
      CLEAVE_ASSIGN_OR_RETURN(ShmOfferMsg m, DecodeShmOffer(frame));
      if (!sender) return InvalidArgument("shared-memory offer from the router");
      Result<std::unique_ptr<SharedKvRegion>> region = MapOffer(m);
      if (!region.ok()) return conn->Send(Encode(ShmAcceptMsg{false, region.status().ToString()}));
      sender->set_region(std::move(*region));
      spdlog::info("KV to {} goes through shared memory", conn->peer());
      return conn->Send(Encode(ShmAcceptMsg{true, ""}));
    }
    case MessageType::kHeartbeat:
      return Status::Ok();
    default:
      return InvalidArgument("unexpected message type {}", uint16_t(frame.type));
  }
}

void Worker::Impl::CancelRequest(uint64_t rid) {
  std::lock_guard lock(mu);
  auto erase_from = [&](std::deque<AddRequestMsg>& q) {
    for (auto it = q.begin(); it != q.end(); ++it) {
      if (it->request_id == rid) {
        if (&q == &pending) queued_prefill_tokens -= KvTokens(*it);
        q.erase(it);
        return true;
      }
    }
    return false;
  };
  if (erase_from(pending)) {
    RememberFinished(rid);
    if (auto push = pushes.find(rid); push != pushes.end()) {
      push->second.peer->Send(Encode(KvDoneMsg{rid, false, "cancelled", {}}));
      pushes.erase(push);
    }
    return;
  }
  if (erase_from(pulls)) return;
  if (auto it = staged.find(rid); it != staged.end()) {
    staged_blocks -= it->second.num_blocks;
    staged.erase(it);
    RememberFinished(rid);
    Wake();
    return;
  }
  if (auto it = transfers.find(rid); it != transfers.end()) {
    it->second.cancelled = true;  // the blocks are freed when the transfer ends
    return;
  }
  if (auto it = by_rid.find(rid); it != by_rid.end()) engine.Cancel(it->second);
}

std::vector<std::pair<uint64_t, std::string>> Worker::Impl::Admit() {
  std::vector<std::pair<uint64_t, std::string>> failed;
  std::lock_guard lock(mu);
  while (!ready.empty()) {
    const uint64_t rid = ready.front();
    ready.pop_front();
    auto it = transfers.find(rid);
    if (it == transfers.end()) continue;
    Transfer t = std::move(it->second);
    transfers.erase(it);
    if (t.cancelled) {
      engine.FreeBlocks(t.blocks);
      continue;
    }
    const int32_t prompt_len = int32_t(t.msg.request.prompt.size());
    const int32_t max_tokens = t.msg.request.params.max_tokens;
    std::vector<BlockId> blocks = t.blocks;
    Result<RequestId> eid = engine.AddPrefilledRequest(
        std::move(t.msg.request), std::move(t.msg.output_tokens), std::move(t.blocks), t.kv_tokens);
    if (!eid.ok()) {
      engine.FreeBlocks(blocks);
      failed.emplace_back(rid, eid.status().ToString());
      continue;
    }
    const auto transfer_us = std::chrono::duration_cast<std::chrono::microseconds>(
        t.last_progress - (t.early ? *t.first_frame : t.pull_sent));
    Tracked tracked{rid, RequestMode::kDecode, max_tokens, prompt_len};
    tracked.kv_transfer_us = uint32_t(std::clamp<int64_t>(transfer_us.count(), 1, 1 << 30));
    tracked.kv_layerwise = t.early;
    by_engine[*eid] = tracked;
    by_rid[rid] = *eid;
  }
  while (!pending.empty()) {
    AddRequestMsg& m = pending.front();
    const int32_t prompt_len = KvTokens(m);
    int32_t blocks = 0;
    if (m.mode == RequestMode::kPrefillOnly) {
      blocks = CeilDiv(prompt_len, cache->block_size());
      const int64_t used = staged_blocks + inflight_prefill_blocks;
      if (used > 0 && used + blocks > config.max_staged_blocks) break;  // full: wait for pulls
    }
    AddRequestMsg msg = std::move(m);
    pending.pop_front();
    queued_prefill_tokens -= prompt_len;
    const int32_t max_tokens = msg.request.params.max_tokens;
    const int32_t num_prior = int32_t(msg.output_tokens.size());
    if (msg.mode == RequestMode::kPrefillOnly) {
      // One more token; its text may be held back for the decode worker, which replays it.
      msg.request.params.max_tokens = num_prior + 1;
      msg.request.params.min_tokens = std::min(msg.request.params.min_tokens, num_prior + 1);
      msg.request.hold_text_at_length = HandsOff(max_tokens, num_prior, prompt_len);
    }
    Result<RequestId> eid = engine.AddRequest(std::move(msg.request), std::move(msg.output_tokens));
    if (!eid.ok()) {
      failed.emplace_back(msg.request_id, eid.status().ToString());
      continue;
    }
    inflight_prefill_blocks += blocks;
    by_engine[*eid] = Tracked{msg.request_id, msg.mode, max_tokens, prompt_len, num_prior, blocks};
    by_rid[msg.request_id] = *eid;
  }
  return failed;
}

void Worker::Impl::RouteOutputs() {
  std::vector<Frame> frames;
  {
    std::lock_guard lock(mu);
    for (RequestOutput& out : engine.PollOutputs()) {
      auto it = by_engine.find(out.request_id);
      if (it == by_engine.end()) continue;
      const Tracked t = it->second;
      TokenOutputMsg m;
      m.request_id = t.rid;
      m.kv_transfer_us = std::exchange(it->second.kv_transfer_us, 0);
      m.kv_layerwise = m.kv_transfer_us > 0 && it->second.kv_layerwise;
      if (t.mode == RequestMode::kPrefillOnly && out.finished) {
        inflight_prefill_blocks -= t.prefill_blocks;
        auto kv = captured.find(out.request_id);
        const bool more = out.finish_reason == FinishReason::kLength &&
                          HandsOff(t.max_tokens, t.num_prior, t.prompt_len) &&
                          !out.token_ids.empty();
        const bool hand_off = more && router;
        if (auto push = pushes.find(t.rid); push != pushes.end()) {
          // A decode worker has (most of) the KV already: finish the push.
          FinishPush(t.rid, std::move(push->second), kv != captured.end() ? &kv->second : nullptr,
                     out.token_ids, hand_off ? "" : "the request ended at its first token");
          pushes.erase(push);
          m.kv_staged = hand_off;
        } else if (hand_off && kv != captured.end()) {
          kv->second.output_tokens = out.token_ids;
          staged_blocks += kv->second.num_blocks;
          staged[t.rid] = std::move(kv->second);
          m.kv_staged = true;
        }
        if (m.kv_staged) {
          out.finished = false;
          out.finish_reason = FinishReason::kNone;
        } else {
          RememberFinished(t.rid);
        }
        if (kv != captured.end()) captured.erase(kv);
      }
      if (out.finished) {
        by_rid.erase(t.rid);
        by_engine.erase(it);
      }
      m.output = std::move(out);
      frames.push_back(Encode(m));
    }
  }
  for (const Frame& f : frames) SendToRouter(f);
}

void Worker::Impl::HeartbeatLoop() {
  while (true) {
    HeartbeatMsg hb;
    {
      std::unique_lock lock(mu);
      if (cv.wait_for(lock, kHeartbeatInterval, [&] { return stop; })) return;
      hb.stats = Stats();
      ExpireUnknownPushes();
    }
    SendToRouter(Encode(hb));
  }
}

void Worker::Impl::EngineLoop() {
  while (true) {
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(20),
                  [&] { return stop || wake || engine.HasUnfinished(); });
      if (stop) return;
      wake = false;
    }
    AbortStalledTransfers();
    StartPulls();
    for (const auto& [rid, error] : Admit()) FailToRouter(rid, error);
    if (engine.HasUnfinished()) {
      Status s = engine.Step();
      if (!s.ok()) spdlog::error("engine step failed: {}", s.ToString());
    }
    RouteOutputs();
  }
}

Worker::Worker(WorkerConfig config, Executor* executor, KvCache* cache, const Tokenizer* tokenizer)
    : impl_(std::make_unique<Impl>(std::move(config), executor, cache, tokenizer)) {}

Worker::~Worker() {
  Stop();
}

Status Worker::Start() {
  Impl& m = *impl_;
  if (m.config.role == WorkerRole::kDecode && m.config.kv_transport != KvTransport::kTcp) {
    // The cache moves into shared memory before the engine thread starts using it.
    Status shared = m.ShareCache();
    if (!shared.ok()) {
      if (m.config.kv_transport == KvTransport::kShm) return shared;
      spdlog::warn("KV cache stays private (TCP transfers only): {}", shared.ToString());
    }
  }
  CLEAVE_ASSIGN_OR_RETURN(m.listener, TcpListener::Listen(m.config.host, m.config.port));
  m.kv_fault_armed = m.config.kv_fault.kind != KvFault::Kind::kNone;
  m.accept_thread = std::thread([&m] { m.AcceptLoop(); });
  m.engine_thread = std::thread([&m] { m.EngineLoop(); });
  m.heartbeat_thread = std::thread([&m] { m.HeartbeatLoop(); });
  return Status::Ok();
}

uint16_t Worker::port() const {
  return impl_->listener ? impl_->listener->port() : 0;
}

void Worker::Stop() {
  Impl& m = *impl_;
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(m.mu);
    if (m.stop) return;
    m.stop = true;
    m.Wake();
    for (auto& c : m.conns) c->Close();
  }
  if (m.listener) m.listener->Close();
  if (m.accept_thread.joinable()) m.accept_thread.join();
  if (m.engine_thread.joinable()) m.engine_thread.join();
  if (m.heartbeat_thread.joinable()) m.heartbeat_thread.join();
  {
    std::lock_guard lock(m.mu);
    threads = std::move(m.conn_threads);
  }
  for (std::thread& t : threads) t.join();
}

WorkerStats Worker::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->Stats();
}

KvLayout Worker::layout() const {
  return impl_->Layout();
}

}  // namespace cleave::cluster
