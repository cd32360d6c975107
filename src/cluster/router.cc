#include "cluster/router.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "cluster/transport.h"

namespace cleave::cluster {

namespace {

// Attempts per request (the first included); a request that keeps killing workers, or whose
// KV transfer keeps failing, ends with an error instead of going round forever.
constexpr int32_t kMaxAttempts = 4;
// Upper bounds of the KV transfer latency histogram, seconds.
constexpr std::array<double, 14> kKvTransferBoundsS = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

// The failure reason label of a decode worker's "KV transfer failed: ..." message.
std::string TransferFailureReason(const std::string& error) {
  if (error.find("stalled") != std::string::npos) return "timeout";
  if (error.find("lost") != std::string::npos || error.find("cannot reach") != std::string::npos)
    return "connection";
  return "transfer_error";
}

uint64_t Mix(uint64_t h) {  // splitmix64's finalizer
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

}  // namespace

int ChoosePrefill(std::span<const WorkerLoad> workers) {
  int best = -1;
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < workers.size(); ++i) {
    const WorkerLoad& w = workers[i];
    if (!w.alive || w.role != WorkerRole::kPrefill) continue;
    const int64_t cost = w.queued_prompt_tokens - w.overlap_tokens;
    if (cost < best_cost) {
      best = int(i);
      best_cost = cost;
    }
  }
  return best;
}

int ChooseDecode(std::span<const WorkerLoad> workers) {
  int best = -1;
  for (size_t i = 0; i < workers.size(); ++i) {
    const WorkerLoad& w = workers[i];
    if (!w.alive || w.role != WorkerRole::kDecode) continue;
    if (best < 0 || w.free_blocks > workers[best].free_blocks ||
        (w.free_blocks == workers[best].free_blocks && w.num_running < workers[best].num_running)) {
      best = int(i);
    }
  }
  return best;
}

std::vector<uint64_t> PrefixBlockHashes(std::span<const TokenId> prompt) {
  std::vector<uint64_t> hashes;
  uint64_t h = 0x6a09e667f3bcc908ULL;
  const size_t num_full = prompt.size() / kRouterBlockTokens;
  for (size_t b = 0; b < num_full; ++b) {
    for (size_t i = 0; i < size_t(kRouterBlockTokens); ++i) {
      h = Mix(h ^ uint64_t(uint32_t(prompt[b * kRouterBlockTokens + i])));
    }
    hashes.push_back(h);
  }
  return hashes;
}

struct Router::Impl {
  struct WorkerState {
    WorkerEndpoint endpoint;
    WorkerRole role = WorkerRole::kMixed;
    KvLayout layout;
    std::shared_ptr<Connection> conn;
    std::thread reader;
    bool alive = true;
    bool forgotten = false;  // dead and replaced: out of /health and the counts
    double last_heard_s = 0;
    WorkerStats stats;
    int64_t queued_prompt_tokens = 0;  // sent for prefill, no first token yet
    int32_t in_flight = 0;             // requests this worker holds
    int32_t blocks_promised = 0;       // decode: sent since its last heartbeat
    // Prefill: block hashes of prompts recently sent to it (FIFO, at most its pool's size).
    std::unordered_set<uint64_t> recent_blocks;
    std::deque<uint64_t> recent_order;

    std::string address() const { return fmt::format("{}:{}", endpoint.host, endpoint.port); }
    void Remember(const std::vector<uint64_t>& hashes) {
      const size_t cap = std::max<size_t>(1, layout.num_blocks);
      for (uint64_t h : hashes) {
        if (!recent_blocks.insert(h).second) continue;
        recent_order.push_back(h);
        if (recent_order.size() > cap) {
          recent_blocks.erase(recent_order.front());
          recent_order.pop_front();
        }
      }
    }
    int64_t OverlapTokens(const std::vector<uint64_t>& hashes) const {
      int64_t n = 0;
      for (uint64_t h : hashes) {
        if (!recent_blocks.count(h)) break;
        n += kRouterBlockTokens;
      }
      return n;
    }
  };
  // One client request, across its attempts.
  struct Tracked {
    Request request;                // as the client sent it
    std::vector<TokenId> streamed;  // every token pushed to the client so far
    uint64_t wire_id = 0;           // this attempt's id on the wire; 0: waiting for a worker
    size_t attempt_base = 0;        // streamed.size() when this attempt started
    int prefill = -1, decode = -1, full = -1;  // worker indices of this attempt
    bool decode_started = false;               // the decode worker sent a token, so it holds the KV
    // Layer-wise: the decode worker was chosen at dispatch. Its outputs wait in `held` until the
    // prefill worker's first token has been streamed (the two arrive on different connections).
    bool prefill_done = false;
    std::vector<TokenOutputMsg> held;
    int64_t queued_tokens = 0;  // counted in workers[prefill]->queued_prompt_tokens
    int32_t attempts = 0;
    double arrival_s = 0;
    double first_token_s = -1;
    double wait_deadline_s = -1;  // waiting for a worker until then
    std::string last_failure;     // why the previous attempt ended
  };
  // A frame to send once the lock is released (a send may block on a slow peer).
  using Outbox = std::vector<std::pair<std::shared_ptr<Connection>, Frame>>;

  RouterConfig config;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<WorkerState>> workers;  // append-only: indices stay valid
  KvLayout layout;                                    // of the first worker; all must agree
  std::unordered_map<RequestId, Tracked> tracked;     // by client id
  std::unordered_map<uint64_t, RequestId> by_wire;    // attempt id -> client id
  std::vector<RequestId> waiting;                     // tracked with wire_id 0
  std::deque<RequestOutput> outputs;
  RequestId next_id = 1;
  uint64_t next_wire_id = 1;
  int64_t steps = 0;
  int64_t migrations = 0;
  int64_t restarts = 0;
  std::map<std::string, int64_t> transfer_failures;
  std::array<uint64_t, kKvTransferBoundsS.size() + 1> transfer_buckets{};
  double transfer_sum_s = 0;
  uint64_t transfer_count = 0;
  uint64_t transfers_layerwise = 0;
  std::string last_death;  // "the decode worker at host:port died", for error messages
  bool shut_down = false;
  std::thread watchdog;

  double Now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  static void Flush(Outbox& box) {
    for (auto& [conn, frame] : box) (void)conn->Send(frame);
    box.clear();
  }

  void Push(RequestOutput out) {  // mu held
    outputs.push_back(std::move(out));
    cv.notify_all();
  }

  RequestOutput Finished(RequestId id, const Tracked& t, FinishReason reason, std::string error) {
    RequestOutput out;
    out.request_id = id;
    out.finished = true;
    out.finish_reason = reason;
    out.error = std::move(error);
    out.arrival_time_s = t.arrival_s;
    out.first_token_time_s = t.first_token_s;
    out.num_prompt_tokens = int32_t(t.request.prompt.size());
    return out;
  }

  // Ends the request: queues `out` (its last output) and forgets it (mu held).
  void Finish(RequestId id, RequestOutput out) {
    Tracked& t = tracked.at(id);
    Release(t);
    by_wire.erase(t.wire_id);
    tracked.erase(id);
    Push(std::move(out));
  }

  // Releases the attempt's hold on its workers (mu held).
  void Release(Tracked& t) {
    for (int w : {t.prefill, t.decode, t.full}) {
      if (w >= 0) --workers[w]->in_flight;
    }
    if (t.prefill >= 0) workers[t.prefill]->queued_prompt_tokens -= t.queued_tokens;
    t.queued_tokens = 0;
  }

  std::vector<WorkerLoad> Loads(const std::vector<uint64_t>& hashes) const {  // mu held
    std::vector<WorkerLoad> loads(workers.size());
    for (size_t i = 0; i < workers.size(); ++i) {
      const WorkerState& w = *workers[i];
      WorkerLoad& l = loads[i];
      l.alive = w.alive && !w.forgotten;
      l.role = w.role;
      l.queued_prompt_tokens = w.queued_prompt_tokens;
      if (w.role == WorkerRole::kPrefill) l.overlap_tokens = w.OverlapTokens(hashes);
      l.free_blocks = int64_t(w.stats.num_free_blocks) - w.blocks_promised;
      l.num_running = w.in_flight;
    }
    return loads;
  }

  int PickMixed() const {  // mu held; the live mixed worker with the fewest in flight
    int best = -1;
    for (size_t i = 0; i < workers.size(); ++i) {
      const WorkerState& w = *workers[i];
      if (!w.alive || w.role != WorkerRole::kMixed) continue;
      if (best < 0 || w.in_flight < workers[best]->in_flight) best = int(i);
    }
    return best;
  }

  void Promise(int decode, size_t num_tokens) {  // mu held
    const size_t block_size = std::max<size_t>(1, workers[decode]->layout.block_size);
    workers[decode]->blocks_promised += int32_t((num_tokens + block_size - 1) / block_size);
  }

  // Sends the request's next attempt (mu held). False if no live worker can serve it.
  bool Dispatch(RequestId id, Tracked& t, Outbox& box) {
    // The worker continues after the tokens already streamed (Engine::AddRequest replays them).
    AddRequestMsg add;
    add.request = t.request;
    add.output_tokens = t.streamed;
    std::vector<TokenId> kv_tokens = t.request.prompt;  // what a prefill computes
    kv_tokens.insert(kv_tokens.end(), t.streamed.begin(), t.streamed.end());
    const std::vector<uint64_t> hashes = PrefixBlockHashes(kv_tokens);
    const std::vector<WorkerLoad> loads = Loads(hashes);
    const int p = ChoosePrefill(loads);
    const int d = ChooseDecode(loads);
    const bool short_prompt = config.local_prefill_max_tokens > 0 &&
                              int64_t(kv_tokens.size()) < config.local_prefill_max_tokens;
    int target;
    const bool layerwise = p >= 0 && config.layerwise_kv_queue_limit >= 0 &&
                           workers[p]->queued_prompt_tokens <= config.layerwise_kv_queue_limit;
    if (p >= 0 && d >= 0 && !short_prompt) {
      add.mode = RequestMode::kPrefillOnly;
      t.prefill = target = p;
      t.queued_tokens = int64_t(kv_tokens.size());
      workers[p]->queued_prompt_tokens += t.queued_tokens;
      workers[p]->Remember(hashes);
    } else {
      // A decode worker runs a whole request when the prompt is short or no prefill worker is
      // left (its engine is a full one).
      target = PickMixed();
      if (target < 0 && d >= 0) {
        target = d;
        Promise(d, kv_tokens.size());
      }
      if (target < 0) return false;
      add.mode = RequestMode::kFull;
      t.full = target;
    }
    t.wire_id = next_wire_id++;
    t.attempt_base = t.streamed.size();
    t.decode_started = false;
    t.wait_deadline_s = -1;
    if (++t.attempts > 1) {
      ++migrations;
      spdlog::info("request {} migrated ({}; {} tokens streamed so far)", id, t.last_failure,
                   t.streamed.size());
    }
    t.prefill_done = false;
    t.held.clear();
    by_wire[t.wire_id] = id;
    ++workers[target]->in_flight;
    add.request_id = t.wire_id;
    box.emplace_back(workers[target]->conn, Encode(add));
    if (add.mode == RequestMode::kPrefillOnly && layerwise) {
      t.decode = d;
      ++workers[d]->in_flight;
      add.mode = RequestMode::kDecodeLayerwise;  // the prefill's token comes with the KV
      add.source_host = workers[p]->endpoint.host;
      add.source_port = workers[p]->endpoint.port;
      Promise(d, kv_tokens.size());
      box.emplace_back(workers[d]->conn, Encode(add));
    }
    return true;
  }

  // The attempt ended without finishing the request (a worker died, a transfer failed, no
  // decode worker was left): cancels what is left of it and starts the next one, or waits for
  // a worker, or fails the request (mu held).
  void Retry(RequestId id, int dead, const std::string& why, Outbox& box) {
    Tracked& t = tracked.at(id);
    for (int w : {t.prefill, t.decode, t.full}) {
      if (w >= 0 && w != dead && workers[w]->alive) {
        box.emplace_back(workers[w]->conn, Encode(CancelMsg{t.wire_id}));
      }
    }
    Release(t);
    by_wire.erase(t.wire_id);
    t.wire_id = 0;
    t.prefill = t.decode = t.full = -1;
    t.last_failure = why;
    if (int64_t(t.streamed.size()) >= t.request.params.max_tokens) {
      Finish(id, Finished(id, t, FinishReason::kLength, ""));
    } else if (t.attempts >= kMaxAttempts) {
      Finish(id, Finished(id, t, FinishReason::kError,
                          fmt::format("{}; gave up after {} attempts", why, t.attempts)));
    } else if (!Dispatch(id, t, box)) {
      Wait(id, t);
    }
  }

  // No live worker can serve the request: it waits for AddWorker, or fails (mu held).
  void Wait(RequestId id, Tracked& t) {
    if (config.wait_for_worker_s > 0) {
      t.wait_deadline_s = Now() + config.wait_for_worker_s;
      waiting.push_back(id);
      return;
    }
    Finish(id, Finished(id, t, FinishReason::kError,
                        fmt::format("{}; no live worker can serve the request", t.last_failure)));
  }

  void DispatchWaiting(Outbox& box) {  // mu held
    std::vector<RequestId> still;
    for (RequestId id : waiting) {
      auto it = tracked.find(id);
      if (it == tracked.end() || it->second.wire_id != 0) continue;
      if (!Dispatch(id, it->second, box)) still.push_back(id);
    }
    waiting = std::move(still);
  }

  void ExpireWaiting() {  // mu held
    const double now = Now();
    std::vector<RequestId> still;
    for (RequestId id : waiting) {
      auto it = tracked.find(id);
      if (it == tracked.end() || it->second.wire_id != 0) continue;
      if (now < it->second.wait_deadline_s) {
        still.push_back(id);
        continue;
      }
      Finish(id, Finished(id, it->second, FinishReason::kError,
                          fmt::format("{}; no worker that can serve the request came back "
                                      "within {:.0f} s",
                                      it->second.last_failure, config.wait_for_worker_s)));
    }
    waiting = std::move(still);
  }

  Status Add(const WorkerEndpoint& ep) {
    CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, TcpConnect(ep.host, ep.port));
    Result<HelloAckMsg> ack =
        ConnectHandshake(*conn, config.secret, WorkerRole::kRouter, KvLayout{});
    if (!ack.ok()) {
      return Unavailable("worker {}:{} refused the router: {}", ep.host, ep.port,
                         ack.status().ToString());
    }
    if (ack->role == WorkerRole::kRouter) {
      return InvalidArgument("{}:{} is not a worker", ep.host, ep.port);
    }
    Outbox box;
    {
      std::lock_guard lock(mu);
      if (shut_down) return Unavailable("the router is shut down");
      if (!workers.empty()) {
        const KvLayout& a = ack->layout;
        if (a.num_layers != layout.num_layers || a.block_size != layout.block_size ||
            a.block_bytes != layout.block_bytes || a.vocab_size != layout.vocab_size) {
          return FailedPrecondition(
              "worker {}:{} disagrees with the others on the model or KV "
              "layout",
              ep.host, ep.port);
        }
      } else {
        layout = ack->layout;
      }
      auto w = std::make_unique<WorkerState>();
      w->endpoint = ep;
      w->role = ack->role;
      w->layout = ack->layout;
      w->conn = std::move(conn);
      w->stats.num_blocks = ack->layout.num_blocks;
      w->stats.num_free_blocks = ack->layout.num_blocks;
      w->last_heard_s = Now();
      WorkerState* state = w.get();
      const int index = int(workers.size());
      workers.push_back(std::move(w));
      state->reader = std::thread([this, state, index] { ReadLoop(state, index); });
      spdlog::info("router: {} worker {} at {} joined", WorkerRoleName(state->role), index,
                   state->address());
      DispatchWaiting(box);
    }
    Flush(box);
    return Status::Ok();
  }

  // Its own thread, so that a silent worker is noticed (and /health says so) with no request
  // in flight.
  void Watchdog() {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return shut_down; })) {
      const double now = Now();
      std::vector<int> silent;
      for (size_t i = 0; i < workers.size(); ++i) {
        if (workers[i]->alive && now - workers[i]->last_heard_s > config.worker_silence_limit_s) {
          silent.push_back(int(i));
        }
      }
      if (silent.empty()) continue;
      lock.unlock();
      for (int i : silent) {
        spdlog::error("worker {} sent nothing for {:.1f} s; taking it for dead", i,
                      config.worker_silence_limit_s);
        WorkerDied(i);
      }
      lock.lock();
    }
  }

  void ReadLoop(WorkerState* w, int index) {
    while (true) {
      Result<Frame> frame = w->conn->Recv();
      Status s = frame.ok() ? OnFrame(index, *frame) : frame.status();
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (!shut_down) {
          spdlog::error("{} worker {} at {} lost: {}", WorkerRoleName(w->role), index, w->address(),
                        s.ToString());
        }
        break;
      }
    }
    WorkerDied(index);
  }

  Status OnFrame(int index, const Frame& frame) {
    if (frame.type == MessageType::kHeartbeat) {
      CLEAVE_ASSIGN_OR_RETURN(HeartbeatMsg hb, DecodeHeartbeat(frame));
      std::lock_guard lock(mu);
      WorkerState& w = *workers[index];
      w.stats = hb.stats;
      w.blocks_promised = 0;
      w.last_heard_s = Now();
      return Status::Ok();
    }
    if (frame.type != MessageType::kTokenOutput) {
      return InvalidArgument("unexpected message type {} from a worker", uint16_t(frame.type));
    }
    CLEAVE_ASSIGN_OR_RETURN(TokenOutputMsg m, DecodeTokenOutput(frame));
    Outbox box;
    {
      std::lock_guard lock(mu);
      OnOutput(index, std::move(m), box);
    }
    Flush(box);
    return Status::Ok();
  }

  void OnOutput(int index, TokenOutputMsg m, Outbox& box) {  // mu held
    WorkerState& w = *workers[index];
    const double now = Now();
    w.last_heard_s = now;
    auto wit = by_wire.find(m.request_id);
    if (wit == by_wire.end()) return;  // cancelled, failed, or an earlier attempt
    const RequestId id = wit->second;
    Tracked& t = tracked.at(id);
    if (index != t.prefill && index != t.decode && index != t.full) return;
    if (index == t.decode && t.prefill >= 0 && !t.prefill_done) {
      // Layer-wise: nothing from the decode worker (tokens, or a failed transfer that would
      // send the prompt to prefill again) counts before the prefill worker's first token does.
      t.held.push_back(std::move(m));
      return;
    }
    const bool transfer_failed = index == t.decode && !t.decode_started && m.output.finished &&
                                 m.output.finish_reason == FinishReason::kError &&
                                 m.output.token_ids.empty();
    RequestOutput out = std::move(m.output);
    if (m.kv_transfer_us > 0) {
      const double s = double(m.kv_transfer_us) * 1e-6;
      const size_t b =
          size_t(std::lower_bound(kKvTransferBoundsS.begin(), kKvTransferBoundsS.end(), s) -
                 kKvTransferBoundsS.begin());
      ++transfer_buckets[b];
      transfer_sum_s += s;
      ++transfer_count;
      if (m.kv_layerwise) ++transfers_layerwise;
    }
    if (transfer_failed) {
      // The decode worker could not get the KV (the prefill worker died, the transfer broke or
      // stalled; m.kv_transfer_failed says so, but a decode attempt that failed before its
      // first token generated nothing either way): prefill again.
      ++transfer_failures[TransferFailureReason(out.error)];
      Retry(id, -1,
            fmt::format("the KV transfer to the decode worker at {} failed: {}", w.address(),
                        out.error),
            box);
      return;
    }
    if (index == t.decode && !out.token_ids.empty()) t.decode_started = true;
    out.request_id = id;
    out.arrival_time_s = t.arrival_s;
    out.token_times_s.assign(out.token_ids.size(), now);
    if (t.first_token_s < 0 && !out.token_ids.empty()) t.first_token_s = now;
    out.first_token_time_s = t.first_token_s;
    out.num_prompt_tokens = int32_t(t.request.prompt.size());
    out.num_cached_tokens = std::min(out.num_cached_tokens, out.num_prompt_tokens);
    t.streamed.insert(t.streamed.end(), out.token_ids.begin(), out.token_ids.end());
    if (m.kv_staged && index == t.prefill) {
      workers[t.prefill]->queued_prompt_tokens -= t.queued_tokens;
      t.queued_tokens = 0;
      t.prefill_done = true;
      Push(std::move(out));
      if (t.decode < 0) {
        HandOff(id, t, box);
        return;
      }
      // Layer-wise: the decode worker's outputs that came first, in order.
      const uint64_t wire_id = t.wire_id;
      for (TokenOutputMsg& held : std::exchange(t.held, {})) {
        if (!by_wire.count(wire_id)) return;  // finished or retried meanwhile
        OnOutput(t.decode, std::move(held), box);
      }
      return;
    }
    if (!out.finished) {
      Push(std::move(out));
      return;
    }
    // A prefill that ended the request (EOS, max_tokens 1, ...) may have a pull under way
    // nowhere; tell any decode worker anyway (harmless if it has nothing).
    if (t.decode >= 0 && index != t.decode && workers[t.decode]->alive) {
      box.emplace_back(workers[t.decode]->conn, Encode(CancelMsg{t.wire_id}));
    }
    Finish(id, std::move(out));
  }

  // The prefill worker staged the KV: the decode worker with the most room pulls it.
  void HandOff(RequestId id, Tracked& t, Outbox& box) {  // mu held
    const int d = ChooseDecode(Loads({}));
    if (d < 0) {
      Retry(id, -1,
            last_death.empty() ? "no decode worker is alive"
                               : fmt::format("no decode worker is alive ({})", last_death),
            box);
      return;
    }
    WorkerState& p = *workers[t.prefill];
    t.decode = d;
    ++workers[d]->in_flight;
    AddRequestMsg add;
    add.request_id = t.wire_id;
    add.mode = RequestMode::kDecode;
    add.request = t.request;
    // The earlier attempts' tokens; the prefill's own come with its KvDone.
    add.output_tokens.assign(t.streamed.begin(), t.streamed.begin() + ptrdiff_t(t.attempt_base));
    add.source_host = p.endpoint.host;
    add.source_port = p.endpoint.port;
    Promise(d, add.request.prompt.size() + add.output_tokens.size());
    box.emplace_back(workers[d]->conn, Encode(add));
  }

  void WorkerDied(int index) {
    Outbox box;
    {
      std::lock_guard lock(mu);
      WorkerState& w = *workers[index];
      if (!w.alive) return;
      w.alive = false;
      w.conn->Close();
      if (shut_down) return;
      const std::string why =
          fmt::format("the {} worker at {} died", WorkerRoleName(w.role), w.address());
      last_death = why;
      // Requests it ran, or whose KV only it had (a decode worker that sent no token may still
      // be pulling: it is cancelled there and the request prefilled again).
      std::vector<RequestId> affected;
      for (const auto& [id, t] : tracked) {
        if (t.wire_id == 0) continue;
        if (t.full == index || t.decode == index) {
          affected.push_back(id);
        } else if (t.prefill == index && (t.decode < 0 || !t.decode_started)) {
          if (t.decode >= 0) ++transfer_failures["prefill_worker_died"];
          affected.push_back(id);
        }
      }
      for (RequestId id : affected) Retry(id, index, why, box);
    }
    Flush(box);
  }
};

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Router>> Router::Connect(RouterConfig config) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  if (impl->config.workers.empty()) return InvalidArgument("the router needs at least one worker");
  const std::vector<WorkerEndpoint> endpoints = impl->config.workers;
  std::unique_ptr<Router> router(new Router(std::move(impl)));
  Impl* m = router->impl_.get();
  m->watchdog = std::thread([m] { m->Watchdog(); });
  for (const WorkerEndpoint& ep : endpoints) CLEAVE_RETURN_IF_ERROR(m->Add(ep));
  return router;
}

Router::~Router() {
  Shutdown();
}

Status Router::AddWorker(const WorkerEndpoint& endpoint) {
  return impl_->Add(endpoint);
}

Status Router::ReplaceWorker(const WorkerEndpoint& dead, const WorkerEndpoint& fresh) {
  CLEAVE_RETURN_IF_ERROR(impl_->Add(fresh));
  std::lock_guard lock(impl_->mu);
  for (auto& w : impl_->workers) {
    if (!w->alive && !w->forgotten && w->endpoint == dead) w->forgotten = true;
  }
  ++impl_->restarts;
  return Status::Ok();
}

bool Router::alive(const WorkerEndpoint& endpoint) const {
  std::lock_guard lock(impl_->mu);
  for (const auto& w : impl_->workers) {
    if (w->endpoint == endpoint && w->alive) return true;
  }
  return false;
}

void Router::StopWaitingForWorkers(const std::string& reason) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  m.config.wait_for_worker_s = 0;
  for (RequestId id : m.waiting) {
    auto it = m.tracked.find(id);
    if (it == m.tracked.end() || it->second.wire_id != 0) continue;
    m.Finish(id, m.Finished(id, it->second, FinishReason::kError,
                            fmt::format("{}; {}", it->second.last_failure, reason)));
  }
  m.waiting.clear();
}

void Router::Shutdown() {
  Impl& m = *impl_;
  std::vector<std::thread> readers;
  {
    std::lock_guard lock(m.mu);
    m.shut_down = true;
    for (auto& w : m.workers) {
      w->conn->Close();
      if (w->reader.joinable()) readers.push_back(std::move(w->reader));
    }
    m.cv.notify_all();
  }
  for (std::thread& t : readers) t.join();
  if (m.watchdog.joinable()) m.watchdog.join();
}

Result<RequestId> Router::AddRequest(Request request) {
  Impl& m = *impl_;
  const SamplingParams& p = request.params;
  if (request.prompt.empty()) return InvalidArgument("prompt is empty");
  if (p.max_tokens < 1) return InvalidArgument("max_tokens must be >= 1, got {}", p.max_tokens);
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return InvalidArgument("min_tokens {} must be in [0, max_tokens]", p.min_tokens);
  }
  const int32_t max_len = max_model_len();
  Impl::Outbox box;
  RequestId id;
  {
    std::lock_guard lock(m.mu);
    if (m.shut_down) return Unavailable("the router is shut down");
    const int64_t vocab = m.layout.vocab_size;
    for (TokenId t : request.prompt) {
      if (t < 0 || t >= vocab) return InvalidArgument("prompt token {} outside vocab {}", t, vocab);
    }
    if (int64_t(request.prompt.size()) >= max_len) {
      return InvalidArgument("prompt of {} tokens leaves no room in the context of {} tokens",
                             request.prompt.size(), max_len);
    }
    id = m.next_id++;
    Impl::Tracked& t = m.tracked[id];
    t.arrival_s = m.Now();
    t.request = std::move(request);
    if (!m.Dispatch(id, t, box)) {
      if (m.config.wait_for_worker_s <= 0) {
        m.tracked.erase(id);
        if (m.last_death.empty()) return Unavailable("no worker that can run the request is alive");
        return Unavailable("no worker that can run the request is alive ({})", m.last_death);
      }
      t.last_failure = "no worker that can run the request was alive at its arrival";
      m.Wait(id, t);
    }
  }
  Impl::Flush(box);
  return id;
}

void Router::Cancel(RequestId id) {
  Impl& m = *impl_;
  Impl::Outbox box;
  {
    std::lock_guard lock(m.mu);
    auto it = m.tracked.find(id);
    if (it == m.tracked.end()) return;
    const Impl::Tracked& t = it->second;
    for (int w : {t.prefill, t.decode, t.full}) {
      if (w >= 0 && m.workers[w]->alive) {
        box.emplace_back(m.workers[w]->conn, Encode(CancelMsg{t.wire_id}));
      }
    }
    m.Finish(id, m.Finished(id, t, FinishReason::kCancelled, ""));
  }
  Impl::Flush(box);
}

Status Router::Step() {
  Impl& m = *impl_;
  std::unique_lock lock(m.mu);
  m.cv.wait_for(lock, std::chrono::milliseconds(10),
                [&] { return !m.outputs.empty() || m.shut_down; });
  ++m.steps;
  if (!m.waiting.empty()) m.ExpireWaiting();
  return Status::Ok();
}

std::vector<RequestOutput> Router::PollOutputs() {
  std::lock_guard lock(impl_->mu);
  std::vector<RequestOutput> out(std::make_move_iterator(impl_->outputs.begin()),
                                 std::make_move_iterator(impl_->outputs.end()));
  impl_->outputs.clear();
  return out;
}

bool Router::HasUnfinished() const {
  std::lock_guard lock(impl_->mu);
  return !impl_->tracked.empty() || !impl_->outputs.empty();
}

int32_t Router::max_model_len() const {
  std::lock_guard lock(impl_->mu);
  int32_t len = std::numeric_limits<int32_t>::max();
  for (const auto& w : impl_->workers) {
    if (!w->forgotten) len = std::min(len, int32_t(w->layout.max_model_len));
  }
  return len;
}

int32_t Router::num_running() const {
  std::lock_guard lock(impl_->mu);
  int32_t n = 0;
  for (const auto& w : impl_->workers) {
    if (w->alive) n += int32_t(w->stats.num_running);
  }
  return n;
}

int32_t Router::num_waiting() const {
  std::lock_guard lock(impl_->mu);
  int32_t n = int32_t(impl_->waiting.size());
  for (const auto& w : impl_->workers) {
    if (w->alive) n += int32_t(w->stats.num_waiting);
  }
  return n;
}

BlockPoolStats Router::block_stats() const {
  std::lock_guard lock(impl_->mu);
  BlockPoolStats s;
  for (const auto& w : impl_->workers) {
    if (!w->alive) continue;
    s.num_blocks += int32_t(w->stats.num_blocks);
    // KV staged on a prefill worker for a decode worker counts as in use.
    s.num_free_blocks +=
        std::max(0, int32_t(w->stats.num_free_blocks) - int32_t(w->stats.num_staged_blocks));
  }
  return s;
}

int64_t Router::num_steps() const {
  std::lock_guard lock(impl_->mu);
  return impl_->steps;
}

double Router::now() const {
  return impl_->Now();
}

ClusterStatus Router::cluster_status() const {
  std::lock_guard lock(impl_->mu);
  ClusterStatus s;
  s.is_cluster = true;
  s.can_serve = false;
  for (const auto& w : impl_->workers) {
    s.kv_transfer_bytes += w->stats.kv_bytes_received;
    if (w->forgotten) continue;
    if (w->alive && (w->role == WorkerRole::kMixed || w->role == WorkerRole::kDecode)) {
      s.can_serve = true;
    }
    WorkerStatus ws;
    ws.address = w->address();
    ws.role = std::string(WorkerRoleName(w->role));
    ws.alive = w->alive;
    if (w->alive) {  // a dead worker's last report no longer means anything
      ws.queue_length = int32_t(w->stats.num_running + w->stats.num_waiting);
      const double total = w->stats.num_blocks;
      const double used = total - double(w->stats.num_free_blocks) + w->stats.num_staged_blocks;
      ws.kv_usage_perc = total > 0 ? std::clamp(used / total, 0.0, 1.0) : 0.0;
    }
    s.workers.push_back(std::move(ws));
  }
  s.migrations = impl_->migrations;
  s.worker_restarts = impl_->restarts;
  s.kv_transfer_failures = impl_->transfer_failures;
  s.kv_transfer_bounds_s.assign(kKvTransferBoundsS.begin(), kKvTransferBoundsS.end());
  s.kv_transfer_bucket_counts.assign(impl_->transfer_buckets.begin(),
                                     impl_->transfer_buckets.end());
  s.kv_transfer_sum_s = impl_->transfer_sum_s;
  s.kv_transfer_count = impl_->transfer_count;
  s.kv_transfers_layerwise = impl_->transfers_layerwise;
  return s;
}

int32_t Router::num_alive(WorkerRole role) const {
  std::lock_guard lock(impl_->mu);
  int32_t n = 0;
  for (const auto& w : impl_->workers) n += w->role == role && w->alive;
  return n;
}

int32_t Router::num_workers(WorkerRole role) const {
  std::lock_guard lock(impl_->mu);
  int32_t n = 0;
  for (const auto& w : impl_->workers) n += w->role == role && !w->forgotten;
  return n;
}

uint64_t Router::kv_bytes_transferred() const {
  std::lock_guard lock(impl_->mu);
  uint64_t n = 0;
  for (const auto& w : impl_->workers) n += w->stats.kv_bytes_received;
  return n;
}

int64_t Router::num_migrations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->migrations;
}

}  // namespace cleave::cluster
