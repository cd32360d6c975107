// Worker::Impl, shared by the files that implement it: worker.cc (connections, admission,
// the engine loop), worker_prefill.cc (staging and layer-wise pushing of KV to decode workers)
// and worker_decode.cc (pulling KV from prefill workers). Private to src/cluster.
#pragma once

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
#include "cluster/worker.h"

#include "cluster/kv_sender.h"
#include "cluster/shm_transport.h"
#include "cluster/transport.h"

namespace cleave::cluster {

inline constexpr auto kHeartbeatInterval = std::chrono::milliseconds(100);
// Prefill side: a KV peer hears from us at least this often (see KvSender).
inline constexpr auto kKvPeerHeartbeat = std::chrono::milliseconds(500);
// Prefill side: a pull for a request this worker has not been sent (the router's AddRequest and
// the decode worker's pull travel on different connections) waits this long for it.
inline constexpr auto kUnknownPullTimeout = std::chrono::seconds(5);
// Prefill side: ids of prompts that ended here without staging their KV, remembered so that a
// late pull for one fails at once.
inline constexpr size_t kFinishedIdsKept = 4096;

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

inline int32_t CeilDiv(int64_t a, int64_t b) {
  return static_cast<int32_t>((a + b - 1) / b);
}

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
  Result<Logits> Execute(const ScheduledBatch& batch) override;
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
  bool PushedWhole(const ScheduledSeq& s);

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
  void OnLayerKv(int64_t layer);

  // Ends a push (mu held or not: it touches no guarded state): sends what the forward pass did
  // not (from the prompt's staged copy, when the pull came after its last chunk or the executor
  // has no layers), then KvDone.
  void FinishPush(uint64_t rid, Push push, const StagedKv* kv, const std::vector<TokenId>& tokens,
                  const std::string& error);

  // mu held.
  void RememberFinished(uint64_t rid);

  // Fails pushes whose request never arrived here (mu held; heartbeat thread).
  void ExpireUnknownPushes();

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

  // mu held.
  void Wake() {
    wake = true;
    cv.notify_all();
  }

  // mu held or not; router is read under mu.
  void SendToRouter(const Frame& f);

  // kv_transfer_failed: the prompt's KV never arrived; the router may prefill it again.
  void FailToRouter(uint64_t rid, const std::string& error, bool kv_transfer_failed = false);

  // --- connection threads ---
  void AcceptLoop();

  void ServeConnection(std::shared_ptr<Connection> conn);

  Status Dispatch(const Frame& frame, const std::shared_ptr<Connection>& conn,
                  const std::shared_ptr<KvSender>& sender);

  void CancelRequest(uint64_t rid);

  // Prefill side: maps a decode worker's offered KV cache (its size must be what our shared
  // layout implies, so every checked block offset lies inside it).
  Result<std::unique_ptr<SharedKvRegion>> MapOffer(const ShmOfferMsg& m);

  // Prefill side: a decode worker reserved blocks for a prompt. A staged prompt goes out at
  // once; one still queued or computing here (or not yet arrived: the router's AddRequest may be
  // behind the pull) is pushed layer by layer as it is computed. Reader thread.
  void ServePull(KvPullMsg m, const std::shared_ptr<KvSender>& sender);

  // Decode side: reads KV frames from one prefill worker.
  void PeerLoop(std::shared_ptr<Connection> peer, std::string key);

  Status OnPeerFrame(const Frame& frame);

  // Decode: puts the KV cache into a memfd mapping that same-host prefill workers can map.
  Status ShareCache();

  // --- engine thread ---
  Result<std::shared_ptr<Connection>> PeerFor(const std::string& host, uint16_t port);

  // Starts pulls while blocks allow (FIFO: a large request is not overtaken).
  void StartPulls();

  // Aborts pulls whose peer sent nothing for kv_transfer_timeout_s (since the pull, or since
  // its last frame): the requests are reported as transfer failures and the peer connection is
  // closed, failing every pull on it (its frames are ordered, so they are all stuck behind the
  // stalled one; the next pull reconnects). TCP pulls free their blocks; shared-memory pulls
  // quarantine them (the peer may be frozen, not dead, and write them later). Engine thread.
  void AbortStalledTransfers();

  // Adds queued requests to the engine; returns the requests it refused. Engine thread.
  std::vector<std::pair<uint64_t, std::string>> Admit();

  // Sends the engine's outputs to the router under router ids. Engine thread.
  void RouteOutputs();

  // Its own thread, so that a long engine step does not look like a dead worker.
  void HeartbeatLoop();

  void EngineLoop();
};

}  // namespace cleave::cluster
