#include "cluster/worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "cluster/kv_sender.h"
#include "cluster/shm_transport.h"
#include "cluster/transport.h"

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

namespace {

constexpr auto kHeartbeatInterval = std::chrono::milliseconds(100);
// Prefill side: a KV peer hears from us at least this often (see KvSender).
constexpr auto kKvPeerHeartbeat = std::chrono::milliseconds(500);
// Prefill side: a pull for a request this worker has not been sent (the router's AddRequest and
// the decode worker's pull travel on different connections) waits this long for it.
constexpr auto kUnknownPullTimeout = std::chrono::seconds(5);
// Prefill side: ids of prompts that ended here without staging their KV, remembered so that a
// late pull for one fails at once.
constexpr size_t kFinishedIdsKept = 4096;

// A prompt's KV copied out of the cache: [layer][block][K | V], each part block_bytes.
struct StagedKv {
  int32_t num_blocks = 0;
  std::vector<uint8_t> bytes;
  std::vector<TokenId> output_tokens;  // what the prefill sampled (sent with KvDone)

  std::span<const uint8_t> Part(int64_t layer, int32_t block, bool value,
                                uint64_t block_bytes) const {
    const uint64_t index = (uint64_t(layer) * uint64_t(num_blocks) + uint64_t(block)) * 2 + value;
    return {bytes.data() + index * block_bytes, block_bytes};
  }
};

int32_t CeilDiv(int64_t a, int64_t b) {
  return static_cast<int32_t>((a + b - 1) / b);
}

}  // namespace

struct Worker::Impl : public Executor {
  Impl(WorkerConfig c, Executor* executor, KvCache* cache, const Tokenizer* tokenizer)
      : config(std::move(c)),
        inner(executor),
        cache(cache),
        engine(EngineConfigOf(config), this, tokenizer) {
    if (config.max_staged_blocks <= 0) config.max_staged_blocks = config.engine.num_blocks;
    if (config.decode_reserve_blocks < 0)
      config.decode_reserve_blocks = config.engine.num_blocks / 16;
    if (config.role == WorkerRole::kPrefill) {
      inner->SetLayerKvObserver([this](int64_t layer) { OnLayerKv(layer); });
    }
  }
  ~Impl() override { inner->SetLayerKvObserver({}); }

  static EngineConfig EngineConfigOf(const WorkerConfig& c) { return c.engine; }

  // --- Executor: the model's executor, plus a copy of each finished prompt's KV (prefill). ---
  Result<Logits> Execute(const ScheduledBatch& batch) override {
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
  int32_t vocab_size() const override { return inner->vocab_size(); }

  // --- Prefill side: layer-wise push ---
  // A decode worker pulled a prompt that is still queued or being computed here: its blocks go
  // out layer by layer as the forward pass writes them (OnLayerKv), and KvDone follows the
  // first token. A push ends in RouteOutputs (its prompt done, engine thread), at a cancel of a
  // queued prompt, or when its connection closes (reader thread); a copy in progress holds the
  // KvSender (and so the mapped region) until it is done.
  struct Push {
    std::shared_ptr<KvSender> peer;
    uint32_t num_blocks = 0;            // reserved on the decode side
    std::vector<uint32_t> block_ids;    // shared memory: the decode worker's ids; empty: TCP
    std::vector<uint32_t> blocks_sent;  // per layer: blocks [0, n) have gone out
    std::chrono::steady_clock::time_point registered;

    bool complete() const {
      for (uint32_t n : blocks_sent)
        if (n != num_blocks) return false;
      return true;
    }
  };

  // True if the prompt that `s` completes was pushed whole to a decode worker (engine thread).
  bool PushedWhole(const ScheduledSeq& s) {
    std::lock_guard lock(mu);
    auto e = by_engine.find(s.request_id);
    if (e == by_engine.end()) return false;
    auto p = pushes.find(e->second.rid);
    return p != pushes.end() && p->second.complete() &&
           int64_t(p->second.num_blocks) == CeilDiv(s.start + s.num_tokens, cache->block_size());
  }

  // Sends blocks [from, to) of one layer: written into the decode worker's shared cache (ids
  // checked against the layout) or queued as KvBlock frames. part(value, b) is block b's K or V.
  template <typename Part>
  Status PushBlocks(KvSender& peer, uint64_t rid, const std::vector<uint32_t>& dst_ids,
                    uint32_t layer, uint32_t from, uint32_t to, Part part) {
    const KvLayout layout = Layout();
    SharedKvRegion* region = dst_ids.empty() ? nullptr : peer.region();
    if (!dst_ids.empty() && region == nullptr) return FailedPrecondition("no shared KV region");
    for (uint32_t b = from; b < to; ++b) {
      const std::span<const uint8_t> k = part(false, b), v = part(true, b);
      if (region == nullptr) {
        peer.Send(EncodeKvBlock(rid, layer, b, k, v));
        continue;
      }
      std::span<uint8_t> dst = region->bytes();
      for (bool value : {false, true}) {
        CLEAVE_ASSIGN_OR_RETURN(uint64_t offset, KvBlockOffset(layout, layer, value, dst_ids[b]));
        if (offset > dst.size() || dst.size() - offset < layout.block_bytes) {
          return OutOfRange("KV block offset {} outside the shared region", offset);
        }
        std::memcpy(dst.data() + offset, (value ? v : k).data(), layout.block_bytes);
      }
    }
    kv_bytes_sent += uint64_t(to - from) * 2 * layout.block_bytes;
    return Status::Ok();
  }

  // The forward pass wrote layer `layer` of the executing batch (engine thread): push each
  // pulled prompt's blocks that this layer now holds completely (a chunk's partial last block
  // waits for the next chunk, except at the end of the prompt).
  void OnLayerKv(int64_t layer) {
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

  // Ends a push (mu held): sends what the forward pass did not (from the prompt's staged copy,
  // when the pull came after its last chunk or the executor has no layers), then KvDone.
  void FinishPush(uint64_t rid, Push push, const StagedKv* kv, const std::vector<TokenId>& tokens,
                  const std::string& error) {
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
        Status s = PushBlocks(*push.peer, rid, push.block_ids, layer, push.blocks_sent[layer],
                              push.num_blocks, [&](bool value, uint32_t b) {
                                return kv->Part(layer, int32_t(b), value, block_bytes);
                              });
        if (!s.ok()) done = {rid, false, s.ToString(), {}};
      }
    }
    push.peer->Send(Encode(done));
  }

  void RememberFinished(uint64_t rid) {  // mu held
    if (!finished_rids.insert(rid).second) return;
    finished_order.push_back(rid);
    if (finished_order.size() > kFinishedIdsKept) {
      finished_rids.erase(finished_order.front());
      finished_order.pop_front();
    }
  }

  // Fails pushes whose request never arrived here (mu held; heartbeat thread).
  void ExpireUnknownPushes() {
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

  // What the engine thread knows about an engine request.
  struct Tracked {
    uint64_t rid = 0;
    RequestMode mode = RequestMode::kFull;
    int32_t max_tokens = 0;      // as the router asked
    int32_t prompt_len = 0;      // prompt + earlier attempts' output: the tokens a prefill computes
    int32_t num_prior = 0;       // earlier attempts' output tokens
    int32_t prefill_blocks = 0;  // prefill: counted in inflight_prefill_blocks
    uint32_t kv_transfer_us = 0;  // decode: the pull's duration, sent with the first output
    bool kv_layerwise = false;    // decode: that pull streamed during the prefill
  };
  // Tokens whose KV a prefill computes (and a decode worker receives): the prompt and the
  // earlier attempts' output.
  static int32_t KvTokens(const AddRequestMsg& m) {
    return int32_t(m.request.prompt.size() + m.output_tokens.size());
  }
  // Prefill: whether a prompt of kv_tokens, after num_prior earlier tokens and the one sampled
  // here, goes on to a decode worker (the client asked for more and the context has room).
  bool HandsOff(int32_t max_tokens, int32_t num_prior, int32_t kv_tokens) const {
    return max_tokens > num_prior + 1 && kv_tokens + 1 < engine.max_model_len();
  }

  // A decode worker's pull in progress.
  struct Transfer {
    AddRequestMsg msg;
    int32_t kv_tokens = 0;  // prompt + earlier output: what the pulled KV covers
    std::vector<BlockId> blocks;
    int64_t num_received = 0;
    bool cancelled = false;
    std::shared_ptr<Connection> peer;
    std::chrono::steady_clock::time_point last_progress;  // pull sent or last block received
    std::chrono::steady_clock::time_point pull_sent;
    // Layer-wise (kDecodeLayerwise): pulled while the prompt was still being prefilled; its
    // transfer time is measured from the first frame for it, not the pull.
    bool early = false;
    std::optional<std::chrono::steady_clock::time_point> first_frame;
    bool shm = false;  // the prefill worker writes into our shared cache; only KvDone comes
  };

  WorkerConfig config;
  Executor* inner;
  KvCache* cache;
  Engine engine;
  std::unordered_map<RequestId, StagedKv> captured;  // engine thread only

  std::unique_ptr<TcpListener> listener;
  std::thread accept_thread, engine_thread, heartbeat_thread;
  std::vector<std::thread> conn_threads;

  mutable std::mutex mu;  // guards everything below
  std::condition_variable cv;
  bool stop = false;
  bool wake = false;  // set with every notify: new work or freed room
  std::shared_ptr<Connection> router;
  std::vector<std::shared_ptr<Connection>> conns;  // all, to close at Stop
  std::deque<AddRequestMsg> pending;               // kFull / kPrefillOnly, not yet admitted
  std::deque<AddRequestMsg> pulls;                 // kDecode, waiting for blocks
  std::unordered_map<uint64_t, Transfer> transfers;
  std::deque<uint64_t> ready;  // transfers complete: add to the engine
  std::unordered_map<RequestId, Tracked> by_engine;
  std::unordered_map<uint64_t, RequestId> by_rid;
  std::unordered_map<uint64_t, StagedKv> staged;  // prefill: waiting to be pulled
  std::unordered_map<std::string, std::shared_ptr<Connection>> peers;  // decode: "host:port"
  int64_t staged_blocks = 0;
  int64_t inflight_prefill_blocks = 0;
  uint64_t queued_prefill_tokens = 0;
  std::atomic<uint64_t> kv_bytes_sent{0};  // also counted outside mu (KV pushes)
  uint64_t kv_bytes_received = 0;
  // prefill: pulls of prompts not yet staged (layer-wise push), by router id.
  std::unordered_map<uint64_t, Push> pushes;
  std::unordered_set<uint64_t> finished_rids;  // prefill-only requests that ended unstaged
  std::deque<uint64_t> finished_order;
  const ScheduledBatch* executing = nullptr;  // engine thread only: the batch in Execute
  bool kv_fault_armed = false;  // test only: the next KV-serving connection gets the fault
  // decode with shared memory: the cache's storage, and the socket that hands it out.
  std::unique_ptr<SharedKvRegion> shm_region;
  std::unique_ptr<ShmOfferServer> shm_server;
  std::unordered_set<const Connection*> shm_peers;  // decode: peers that accepted the region
  // decode: last frame from each KV peer (pulls queued behind a busy one are not stalled).
  std::unordered_map<const Connection*, std::chrono::steady_clock::time_point> peer_progress;
  // decode: blocks of shared-memory pulls aborted on timeout. A frozen prefill worker could
  // still write them when it resumes, so they never return to the pool (logged).
  int64_t quarantined_blocks = 0;

  KvLayout Layout() const {
    KvLayout l;
    l.num_layers = uint32_t(cache->num_layers());
    l.block_size = uint32_t(cache->block_size());
    l.num_blocks = uint32_t(config.engine.num_blocks);
    l.block_bytes = KvBlockByteSize(*cache);
    l.vocab_size = uint32_t(inner->vocab_size());
    l.max_model_len = uint32_t(engine.max_model_len());
    return l;
  }

  WorkerStats Stats() const {  // mu held
    WorkerStats s;
    const BlockPoolStats b = engine.block_stats();
    s.num_blocks = uint32_t(b.num_blocks);
    s.num_free_blocks = uint32_t(b.num_free_blocks);
    s.num_running = uint32_t(engine.num_running());
    s.num_waiting = uint32_t(engine.num_waiting() + pending.size() + pulls.size());
    s.num_staged_blocks = uint32_t(staged_blocks);
    s.num_queued_prefill_tokens = queued_prefill_tokens;
    s.kv_bytes_sent = kv_bytes_sent.load();
    s.kv_bytes_received = kv_bytes_received;
    return s;
  }

  void Wake() {  // mu held
    wake = true;
    cv.notify_all();
  }

  void SendToRouter(const Frame& f) {  // mu held or not; router is read under mu
    std::shared_ptr<Connection> r;
    {
      std::lock_guard lock(mu);
      r = router;
    }
    if (r) (void)r->Send(f);
  }

  // kv_transfer_failed: the prompt's KV never arrived; the router may prefill it again.
  void FailToRouter(uint64_t rid, const std::string& error, bool kv_transfer_failed = false) {
    TokenOutputMsg m;
    m.request_id = rid;
    m.kv_transfer_failed = kv_transfer_failed;
    m.output.finished = true;
    m.output.finish_reason = FinishReason::kError;
    m.output.error = error;
    SendToRouter(Encode(m));
  }

  // --- connection threads ---
  void AcceptLoop() {
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

  void ServeConnection(std::shared_ptr<Connection> conn) {
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

  Status Dispatch(const Frame& frame, const std::shared_ptr<Connection>& conn,
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
        if (!region.ok())
          return conn->Send(Encode(ShmAcceptMsg{false, region.status().ToString()}));
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

  void CancelRequest(uint64_t rid) {
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

  // Prefill side: maps a decode worker's offered KV cache (its size must be what our shared
  // layout implies, so every checked block offset lies inside it).
  Result<std::unique_ptr<SharedKvRegion>> MapOffer(const ShmOfferMsg& m) {
    if (config.kv_transport == KvTransport::kTcp) return FailedPrecondition("TCP only here");
    CLEAVE_ASSIGN_OR_RETURN(uint64_t expected, KvRegionBytes(Layout()));
    if (m.region_bytes != expected) {
      return FailedPrecondition("offered {} bytes of KV, the layout has {}", m.region_bytes,
                                expected);
    }
    CLEAVE_ASSIGN_OR_RETURN(int fd, FetchShmFd(m.socket_name, m.token));
    return SharedKvRegion::Map(fd, expected);
  }

  // Prefill side: a decode worker reserved blocks for a prompt. A staged prompt goes out at
  // once; one still queued or computing here (or not yet arrived: the router's AddRequest may be
  // behind the pull) is pushed layer by layer as it is computed. Reader thread.
  void ServePull(KvPullMsg m, const std::shared_ptr<KvSender>& sender) {
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
    std::lock_guard lock(mu);
    int64_t prompt_len = -1;  // -1: not known here (yet)
    if (auto it = by_rid.find(rid); it != by_rid.end()) {
      prompt_len = by_engine.at(it->second).prompt_len;
    }
    for (const AddRequestMsg& p : pending) {
      if (p.request_id == rid) prompt_len = KvTokens(p);
    }
    if (auto it = staged.find(rid); it != staged.end()) {
      StagedKv kv = std::move(it->second);
      staged.erase(it);
      staged_blocks -= kv.num_blocks;
      Wake();
      Push push{
          sender, m.num_blocks, std::move(m.block_ids), std::vector<uint32_t>(num_layers, 0), {}};
      if (uint32_t(kv.num_blocks) != push.num_blocks) {
        return refuse(fmt::format("{} blocks reserved for {} staged", m.num_blocks, kv.num_blocks));
      }
      return FinishPush(rid, std::move(push), &kv, kv.output_tokens, "");
    }
    if (finished_rids.count(rid)) return refuse("the request ended at its first token here");
    if (pushes.count(rid)) return refuse("a second pull for the same request");
    if (prompt_len >= 0 && CeilDiv(prompt_len, cache->block_size()) != int64_t(m.num_blocks)) {
      return refuse(
          fmt::format("{} blocks reserved for a {}-token prompt", m.num_blocks, prompt_len));
    }
    pushes.emplace(rid,
                   Push{sender, m.num_blocks, std::move(m.block_ids),
                        std::vector<uint32_t>(num_layers, 0), std::chrono::steady_clock::now()});
  }

  // Decode side: reads KV frames from one prefill worker.
  void PeerLoop(std::shared_ptr<Connection> peer, std::string key) {
    while (true) {
      Result<Frame> frame = peer->Recv();
      if (frame.ok()) {
        std::lock_guard lock(mu);
        peer_progress[peer.get()] = std::chrono::steady_clock::now();
      }
      Status s = frame.ok() ? OnPeerFrame(*frame) : frame.status();
      if (!s.ok()) {
        spdlog::warn("KV peer {} lost: {}", key, s.ToString());
        break;
      }
    }
    peer->Close();
    std::vector<std::pair<uint64_t, bool>> failed;
    {
      std::lock_guard lock(mu);
      if (auto it = peers.find(key); it != peers.end() && it->second == peer) peers.erase(it);
      shm_peers.erase(peer.get());
      peer_progress.erase(peer.get());
      for (auto it = transfers.begin(); it != transfers.end();) {
        if (it->second.peer != peer) {
          ++it;
          continue;
        }
        engine.FreeBlocks(it->second.blocks);
        failed.emplace_back(it->first, it->second.cancelled);
        it = transfers.erase(it);
      }
    }
    for (auto [rid, cancelled] : failed) {
      if (!cancelled) {
        FailToRouter(
            rid, fmt::format("KV transfer failed: connection to the prefill worker {} lost", key),
            true);
      }
    }
  }

  Status OnPeerFrame(const Frame& frame) {
    if (frame.type == MessageType::kKvBlock) {
      CLEAVE_ASSIGN_OR_RETURN(KvBlockMsg m, DecodeKvBlock(frame));
      std::lock_guard lock(mu);  // held while writing: a cancel cannot free the blocks meanwhile
      auto it = transfers.find(m.request_id);
      if (it == transfers.end()) return DataLoss("KV block for unknown request {}", m.request_id);
      Transfer& t = it->second;
      const uint64_t block_bytes = KvBlockByteSize(*cache);
      if (m.layer >= cache->num_layers() || m.block_index >= t.blocks.size() ||
          m.bytes.size() != 2 * block_bytes) {
        return DataLoss("KV block (layer {}, block {}, {} bytes) does not fit the reservation",
                        m.layer, m.block_index, m.bytes.size());
      }
      const BlockId block = t.blocks[m.block_index];
      t.last_progress = std::chrono::steady_clock::now();
      if (!t.first_frame) t.first_frame = t.last_progress;
      std::memcpy(KvBlockBytes(*cache, false, m.layer, block).data(), m.bytes.data(), block_bytes);
      std::memcpy(KvBlockBytes(*cache, true, m.layer, block).data(), m.bytes.data() + block_bytes,
                  block_bytes);
      ++t.num_received;
      kv_bytes_received += m.bytes.size();
      return Status::Ok();
    }
    if (frame.type == MessageType::kKvDone) {
      CLEAVE_ASSIGN_OR_RETURN(KvDoneMsg m, DecodeKvDone(frame));
      std::string error;
      {
        std::lock_guard lock(mu);
        auto it = transfers.find(m.request_id);
        if (it == transfers.end()) return Status::Ok();
        Transfer& t = it->second;
        const bool complete =
            t.shm || t.num_received == cache->num_layers() * int64_t(t.blocks.size());
        if (m.ok && t.shm) {
          kv_bytes_received +=
              uint64_t(cache->num_layers()) * t.blocks.size() * 2 * KvBlockByteSize(*cache);
          t.last_progress = std::chrono::steady_clock::now();
        }
        if (!t.first_frame) t.first_frame = std::chrono::steady_clock::now();
        // The prefill's sampled tokens follow the earlier attempts' output.
        t.msg.output_tokens.insert(t.msg.output_tokens.end(), m.output_tokens.begin(),
                                   m.output_tokens.end());
        if (m.ok && m.output_tokens.empty()) {
          m.ok = false;
          m.error = "the prefill worker sent no first token";
        }
        if (m.ok && complete && !t.cancelled) {
          ready.push_back(m.request_id);
          Wake();
          return Status::Ok();
        }
        if (!t.cancelled)
          error = m.ok ? "KV transfer incomplete" : "KV transfer failed: " + m.error;
        engine.FreeBlocks(t.blocks);
        transfers.erase(it);
      }
      if (!error.empty()) FailToRouter(m.request_id, error, true);
      return Status::Ok();
    }
    if (frame.type == MessageType::kHeartbeat) return Status::Ok();
    return InvalidArgument("unexpected message type {} from a KV peer", uint16_t(frame.type));
  }

  // Decode: puts the KV cache into a memfd mapping that same-host prefill workers can map.
  Status ShareCache() {
    CLEAVE_ASSIGN_OR_RETURN(uint64_t bytes, KvRegionBytes(Layout()));
    if (bytes != uint64_t(cache->bytes())) {
      return FailedPrecondition("the KV cache ({} bytes) is not the layout's {}", cache->bytes(),
                                bytes);
    }
    CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<SharedKvRegion> region, SharedKvRegion::Create(bytes));
    CLEAVE_ASSIGN_OR_RETURN(shm_server, ShmOfferServer::Start(region->fd()));
    cache->UseExternalStorage(region->bytes(), /*keep_contents=*/false);
    shm_region = std::move(region);
    return Status::Ok();
  }

  // --- engine thread ---
  Result<std::shared_ptr<Connection>> PeerFor(const std::string& host, uint16_t port) {
    const std::string key = fmt::format("{}:{}", host, port);
    {
      std::lock_guard lock(mu);
      if (auto it = peers.find(key); it != peers.end()) return it->second;
    }
    CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, TcpConnect(host, port));
    std::shared_ptr<Connection> conn = std::move(c);
    CLEAVE_ASSIGN_OR_RETURN(HelloAckMsg ack,
                            ConnectHandshake(*conn, config.secret, config.role, Layout()));
    if (!(ack.layout == Layout())) return FailedPrecondition("{} has another KV layout", key);
    bool shm = false;
    if (shm_server) {  // offer our cache; the peer maps it if it is on this host
      ShmOfferMsg offer{shm_server->name(), shm_server->NewToken(), uint64_t(cache->bytes())};
      CLEAVE_RETURN_IF_ERROR(conn->Send(Encode(offer)));
      CLEAVE_ASSIGN_OR_RETURN(Frame f, conn->Recv());
      CLEAVE_ASSIGN_OR_RETURN(ShmAcceptMsg accept, DecodeShmAccept(f));
      shm = accept.ok;
      if (!shm && config.kv_transport == KvTransport::kShm) {
        return FailedPrecondition("{} cannot map our KV cache: {}", key, accept.error);
      }
      spdlog::info("KV from {} over {}{}", key, shm ? "shared memory" : "TCP",
                   shm ? "" : " (" + accept.error + ")");
    }
    std::lock_guard lock(mu);
    if (shm) shm_peers.insert(conn.get());
    peers[key] = conn;
    conns.push_back(conn);
    conn_threads.emplace_back([this, conn, key] { PeerLoop(conn, key); });
    return conn;
  }

  // Starts pulls while blocks allow (FIFO: a large request is not overtaken).
  void StartPulls() {
    while (true) {
      AddRequestMsg m;
      std::vector<BlockId> blocks;
      {
        std::lock_guard lock(mu);
        if (pulls.empty()) return;
        const int32_t n = CeilDiv(KvTokens(pulls.front()), cache->block_size());
        const int32_t free_blocks = engine.block_stats().num_free_blocks;
        const bool idle = engine.num_running() == 0 && transfers.empty();
        if (free_blocks - n < config.decode_reserve_blocks && !(idle && free_blocks >= n)) return;
        std::optional<std::vector<BlockId>> got = engine.AllocateBlocks(n);
        if (!got) return;
        blocks = std::move(*got);
        m = std::move(pulls.front());
        pulls.pop_front();
      }
      Result<std::shared_ptr<Connection>> peer = PeerFor(m.source_host, m.source_port);
      const uint64_t rid = m.request_id;
      const uint32_t n = uint32_t(blocks.size());
      KvPullMsg pull{rid, n, {}};
      if (!peer.ok()) {
        engine.FreeBlocks(blocks);
        FailToRouter(
            rid, "KV transfer failed: cannot reach the prefill worker: " + peer.status().message(),
            true);
        continue;
      }
      {
        std::lock_guard lock(mu);
        Transfer t;
        t.msg = std::move(m);
        t.blocks = std::move(blocks);
        t.peer = *peer;
        t.last_progress = t.pull_sent = std::chrono::steady_clock::now();
        t.kv_tokens = KvTokens(t.msg);
        t.early = t.msg.mode == RequestMode::kDecodeLayerwise;
        t.shm = shm_peers.count(peer->get()) > 0;
        if (t.shm) pull.block_ids.assign(t.blocks.begin(), t.blocks.end());
        transfers.emplace(rid, std::move(t));
      }
      if (!(*peer)->Send(Encode(pull)).ok()) {
        // PeerLoop sees the broken connection and fails the transfer.
        (*peer)->Close();
      }
    }
  }

  // Aborts pulls whose peer sent nothing for kv_transfer_timeout_s (since the pull, or since
  // its last frame): the requests are reported as transfer failures and the peer connection is
  // closed, failing every pull on it (its frames are ordered, so they are all stuck behind the
  // stalled one; the next pull reconnects). TCP pulls free their blocks; shared-memory pulls
  // quarantine them (the peer may be frozen, not dead, and write them later). Engine thread.
  void AbortStalledTransfers() {
    const auto now = std::chrono::steady_clock::now();
    const auto limit = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(config.kv_transfer_timeout_s));
    std::vector<uint64_t> failed;
    std::vector<std::shared_ptr<Connection>> stuck;
    {
      std::lock_guard lock(mu);
      for (const auto& [rid, t] : transfers) {
        auto heard = peer_progress.find(t.peer.get());
        const auto last = heard == peer_progress.end() ? t.last_progress
                                                       : std::max(t.last_progress, heard->second);
        if (now - last >= limit && std::find(stuck.begin(), stuck.end(), t.peer) == stuck.end()) {
          stuck.push_back(t.peer);
        }
      }
      int64_t quarantined = 0;
      for (auto it = transfers.begin(); it != transfers.end();) {
        Transfer& t = it->second;
        if (std::find(stuck.begin(), stuck.end(), t.peer) == stuck.end()) {
          ++it;
          continue;
        }
        if (t.shm) {
          quarantined += int64_t(t.blocks.size());
        } else {
          engine.FreeBlocks(t.blocks);
        }
        if (!t.cancelled) failed.push_back(it->first);
        it = transfers.erase(it);
      }
      if (quarantined > 0) {
        quarantined_blocks += quarantined;
        spdlog::warn("{} KV blocks of stalled shared-memory pulls quarantined ({} in all)",
                     quarantined, quarantined_blocks);
      }
    }
    for (const auto& peer : stuck) {
      spdlog::warn("KV transfer from {} stalled for {} s: aborted", peer->peer(),
                   config.kv_transfer_timeout_s);
      peer->Close();
    }
    for (uint64_t rid : failed) {
      FailToRouter(rid,
                   fmt::format("KV transfer failed: no progress for {} s (stalled)",
                               config.kv_transfer_timeout_s),
                   true);
    }
  }

  // Adds queued requests to the engine; returns the requests it refused. Engine thread.
  std::vector<std::pair<uint64_t, std::string>> Admit() {
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
      Result<RequestId> eid =
          engine.AddPrefilledRequest(std::move(t.msg.request), std::move(t.msg.output_tokens),
                                     std::move(t.blocks), t.kv_tokens);
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
      Result<RequestId> eid =
          engine.AddRequest(std::move(msg.request), std::move(msg.output_tokens));
      if (!eid.ok()) {
        failed.emplace_back(msg.request_id, eid.status().ToString());
        continue;
      }
      inflight_prefill_blocks += blocks;
      by_engine[*eid] =
          Tracked{msg.request_id, msg.mode, max_tokens, prompt_len, num_prior, blocks};
      by_rid[msg.request_id] = *eid;
    }
    return failed;
  }

  // Sends the engine's outputs to the router under router ids. Engine thread.
  void RouteOutputs() {
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

  // Its own thread, so that a long engine step does not look like a dead worker.
  void HeartbeatLoop() {
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

  void EngineLoop() {
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
};

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
