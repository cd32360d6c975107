#include "cluster/router.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "cluster/transport.h"

namespace cleave::cluster {

namespace {

// A worker that sent nothing (not even a heartbeat, which has its own thread and goes every
// 100 ms) for this long is taken for hung. A crash is seen at once (the connection closes).
constexpr double kWorkerSilenceLimitS = 10.0;

}  // namespace

struct Router::Impl {
  struct WorkerState {
    WorkerEndpoint endpoint;
    WorkerRole role = WorkerRole::kMixed;
    KvLayout layout;
    std::shared_ptr<Connection> conn;
    std::thread reader;
    bool alive = true;
    double last_heard_s = 0;
    WorkerStats stats;
    int64_t queued_prompt_tokens = 0;  // sent for prefill, no first token yet
    int32_t in_flight = 0;             // requests this worker holds
    int32_t blocks_promised = 0;       // decode: sent since its last heartbeat
  };
  struct Tracked {
    Request request;                           // kept to hand the request to a decode worker
    int prefill = -1, decode = -1, full = -1;  // worker indices
    double arrival_s = 0;
    double first_token_s = -1;
  };
  // A frame to send once the lock is released (a send may block on a slow peer).
  using Outbox = std::vector<std::pair<std::shared_ptr<Connection>, Frame>>;

  RouterConfig config;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<WorkerState>> workers;
  std::unordered_map<RequestId, Tracked> tracked;
  std::deque<RequestOutput> outputs;
  RequestId next_id = 1;
  int64_t steps = 0;
  bool shut_down = false;

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

  // Releases the request's hold on its workers (mu held).
  void Release(const Tracked& t) {
    for (int w : {t.prefill, t.decode, t.full}) {
      if (w >= 0) --workers[w]->in_flight;
    }
    if (t.prefill >= 0 && t.decode < 0) {
      workers[t.prefill]->queued_prompt_tokens -= int64_t(t.request.prompt.size());
    }
  }

  int Pick(WorkerRole role, bool by_free_blocks) const {  // mu held; -1 if none alive
    int best = -1;
    int64_t best_score = std::numeric_limits<int64_t>::max();
    for (size_t i = 0; i < workers.size(); ++i) {
      const WorkerState& w = *workers[i];
      if (!w.alive || w.role != role) continue;
      const int64_t score =
          by_free_blocks ? -(int64_t(w.stats.num_free_blocks) - w.blocks_promised)
                         : (role == WorkerRole::kPrefill ? w.queued_prompt_tokens : w.in_flight);
      if (score < best_score) {
        best = int(i);
        best_score = score;
      }
    }
    return best;
  }

  void ReadLoop(int index) {
    WorkerState& w = *workers[index];
    while (true) {
      Result<Frame> frame = w.conn->Recv();
      Status s = frame.ok() ? OnFrame(index, *frame) : frame.status();
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (!shut_down) {
          spdlog::error("{} worker {} at {}:{} lost: {}", WorkerRoleName(w.role), index,
                        w.endpoint.host, w.endpoint.port, s.ToString());
        }
        break;
      }
    }
    WorkerDied(index);
  }

  Status OnFrame(int index, const Frame& frame) {
    WorkerState& w = *workers[index];
    if (frame.type == MessageType::kHeartbeat) {
      CLEAVE_ASSIGN_OR_RETURN(HeartbeatMsg hb, DecodeHeartbeat(frame));
      std::lock_guard lock(mu);
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
      const double now = Now();
      w.last_heard_s = now;
      auto it = tracked.find(m.request_id);
      if (it == tracked.end()) return Status::Ok();  // cancelled or failed already
      Tracked& t = it->second;
      RequestOutput out = std::move(m.output);
      out.request_id = m.request_id;
      out.arrival_time_s = t.arrival_s;
      out.token_times_s.assign(out.token_ids.size(), now);
      if (t.first_token_s < 0 && !out.token_ids.empty()) t.first_token_s = now;
      out.first_token_time_s = t.first_token_s;
      if (m.kv_staged && index == t.prefill && t.decode < 0) {
        const int d = Pick(WorkerRole::kDecode, /*by_free_blocks=*/true);
        if (d < 0) {  // (Release takes the prompt off the prefill worker's queue)
          box.emplace_back(w.conn, Encode(CancelMsg{m.request_id}));
          Push(std::move(out));
          Push(Finished(m.request_id, t, FinishReason::kError, "no decode worker is alive"));
          Release(t);
          tracked.erase(it);
        } else {
          w.queued_prompt_tokens -= int64_t(t.request.prompt.size());
          t.decode = d;
          ++workers[d]->in_flight;
          const int32_t block_size = int32_t(workers[d]->layout.block_size);
          workers[d]->blocks_promised +=
              (int32_t(t.request.prompt.size()) + block_size - 1) / block_size;
          AddRequestMsg add;
          add.request_id = m.request_id;
          add.mode = RequestMode::kDecode;
          add.request = t.request;
          add.output_tokens = out.token_ids;
          add.source_host = w.endpoint.host;
          add.source_port = w.endpoint.port;
          box.emplace_back(workers[d]->conn, Encode(add));
          Push(std::move(out));
        }
      } else {
        const bool finished = out.finished;
        Push(std::move(out));
        if (finished) {
          // A prefill that ended the request (EOS, max_tokens 1, ...) may have a pull under way
          // nowhere; tell any decode worker anyway (harmless if it has nothing).
          if (t.decode >= 0 && index != t.decode) {
            box.emplace_back(workers[t.decode]->conn, Encode(CancelMsg{m.request_id}));
          }
          Release(t);
          tracked.erase(it);
        }
      }
    }
    Flush(box);
    return Status::Ok();
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
      const std::string why = fmt::format("the {} worker at {}:{} died; the request was lost",
                                          WorkerRoleName(w.role), w.endpoint.host, w.endpoint.port);
      for (auto it = tracked.begin(); it != tracked.end();) {
        Tracked& t = it->second;
        const bool affected =
            t.full == index || t.decode == index || (t.prefill == index && t.decode < 0);
        if (!affected) {
          ++it;
          continue;
        }
        for (int other : {t.prefill, t.decode}) {
          if (other >= 0 && other != index && workers[other]->alive) {
            box.emplace_back(workers[other]->conn, Encode(CancelMsg{it->first}));
          }
        }
        Push(Finished(it->first, t, FinishReason::kError, why));
        Release(t);
        it = tracked.erase(it);
      }
    }
    Flush(box);
  }
};

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Router>> Router::Connect(RouterConfig config) {
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  for (const WorkerEndpoint& ep : impl->config.workers) {
    CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, TcpConnect(ep.host, ep.port));
    Result<HelloAckMsg> ack =
        ConnectHandshake(*conn, impl->config.secret, WorkerRole::kRouter, KvLayout{});
    if (!ack.ok()) {
      return Unavailable("worker {}:{} refused the router: {}", ep.host, ep.port,
                         ack.status().ToString());
    }
    auto w = std::make_unique<Impl::WorkerState>();
    w->endpoint = ep;
    w->role = ack->role;
    w->layout = ack->layout;
    w->conn = std::move(conn);
    w->stats.num_blocks = ack->layout.num_blocks;
    w->stats.num_free_blocks = ack->layout.num_blocks;
    impl->workers.push_back(std::move(w));
  }
  if (impl->workers.empty()) return InvalidArgument("the router needs at least one worker");
  const KvLayout& first = impl->workers[0]->layout;
  for (const auto& w : impl->workers) {
    if (w->layout.num_layers != first.num_layers || w->layout.block_size != first.block_size ||
        w->layout.block_bytes != first.block_bytes || w->layout.vocab_size != first.vocab_size) {
      return FailedPrecondition("workers disagree on the model or KV layout");
    }
  }
  Impl* m = impl.get();
  const double now = m->Now();
  for (size_t i = 0; i < m->workers.size(); ++i) {
    m->workers[i]->last_heard_s = now;
    m->workers[i]->reader = std::thread([m, i] { m->ReadLoop(int(i)); });
  }
  return std::unique_ptr<Router>(new Router(std::move(impl)));
}

Router::~Router() {
  Shutdown();
}

void Router::Shutdown() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    if (m.shut_down) return;
    m.shut_down = true;
    for (auto& w : m.workers) w->conn->Close();
    m.cv.notify_all();
  }
  for (auto& w : m.workers) {
    if (w->reader.joinable()) w->reader.join();
  }
}

Result<RequestId> Router::AddRequest(Request request) {
  Impl& m = *impl_;
  const int64_t vocab = m.workers[0]->layout.vocab_size;
  const SamplingParams& p = request.params;
  if (request.prompt.empty()) return InvalidArgument("prompt is empty");
  for (TokenId id : request.prompt) {
    if (id < 0 || id >= vocab)
      return InvalidArgument("prompt token {} outside vocab {}", id, vocab);
  }
  if (int64_t(request.prompt.size()) >= max_model_len()) {
    return InvalidArgument("prompt of {} tokens leaves no room in the context of {} tokens",
                           request.prompt.size(), max_model_len());
  }
  if (p.max_tokens < 1) return InvalidArgument("max_tokens must be >= 1, got {}", p.max_tokens);
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return InvalidArgument("min_tokens {} must be in [0, max_tokens]", p.min_tokens);
  }

  Impl::Outbox box;
  RequestId id;
  {
    std::lock_guard lock(m.mu);
    if (m.shut_down) return Unavailable("the router is shut down");
    id = m.next_id++;
    Impl::Tracked t;
    t.arrival_s = m.Now();
    AddRequestMsg add;
    add.request_id = id;
    const int p_worker = m.Pick(WorkerRole::kPrefill, false);
    const bool any_decode = m.Pick(WorkerRole::kDecode, true) >= 0;
    if (p_worker >= 0 && any_decode) {
      add.mode = RequestMode::kPrefillOnly;
      t.prefill = p_worker;
      m.workers[p_worker]->queued_prompt_tokens += int64_t(request.prompt.size());
    } else {
      int w = m.Pick(WorkerRole::kMixed, false);
      if (w < 0) w = m.Pick(WorkerRole::kDecode, false);  // a decode worker can run it all
      if (w < 0) return Unavailable("no worker that can run the request is alive");
      add.mode = RequestMode::kFull;
      t.full = w;
    }
    const int target = t.prefill >= 0 ? t.prefill : t.full;
    ++m.workers[target]->in_flight;
    add.request = request;
    t.request = std::move(request);
    box.emplace_back(m.workers[target]->conn, Encode(add));
    m.tracked.emplace(id, std::move(t));
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
        box.emplace_back(m.workers[w]->conn, Encode(CancelMsg{id}));
      }
    }
    m.Push(m.Finished(id, t, FinishReason::kCancelled, ""));
    m.Release(t);
    m.tracked.erase(it);
  }
  Impl::Flush(box);
}

Status Router::Step() {
  Impl& m = *impl_;
  std::vector<int> silent;
  {
    std::unique_lock lock(m.mu);
    m.cv.wait_for(lock, std::chrono::milliseconds(10),
                  [&] { return !m.outputs.empty() || m.shut_down; });
    ++m.steps;
    const double now = m.Now();
    for (size_t i = 0; i < m.workers.size(); ++i) {
      if (m.workers[i]->alive && now - m.workers[i]->last_heard_s > kWorkerSilenceLimitS) {
        silent.push_back(int(i));
      }
    }
  }
  for (int i : silent) {
    spdlog::error("worker {} sent nothing for {:.0f} s; taking it for dead", i,
                  kWorkerSilenceLimitS);
    m.WorkerDied(i);
  }
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
  int32_t len = std::numeric_limits<int32_t>::max();
  for (const auto& w : impl_->workers) len = std::min(len, int32_t(w->layout.max_model_len));
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
  int32_t n = 0;
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

int32_t Router::num_alive(WorkerRole role) const {
  std::lock_guard lock(impl_->mu);
  int32_t n = 0;
  for (const auto& w : impl_->workers) n += w->role == role && w->alive;
  return n;
}

int32_t Router::num_workers(WorkerRole role) const {
  int32_t n = 0;
  for (const auto& w : impl_->workers) n += w->role == role;
  return n;
}

uint64_t Router::kv_bytes_transferred() const {
  std::lock_guard lock(impl_->mu);
  uint64_t n = 0;
  for (const auto& w : impl_->workers) n += w->stats.kv_bytes_received;
  return n;
}

}  // namespace cleave::cluster
