#include "server/engine_service.h"

#include <spdlog/spdlog.h>

#include "server/openai_protocol.h"

namespace cleave::server {

namespace {

ServiceConfig WithClock(ServiceConfig config, std::chrono::steady_clock::time_point start) {
  config.engine.clock = [start] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  return config;
}

}  // namespace

std::vector<RequestOutput> RequestGroup::Wait(std::chrono::milliseconds timeout) {
  std::vector<RequestOutput> out;
  Wait(timeout, &out);
  return out;
}

void RequestGroup::Wait(std::chrono::milliseconds timeout, std::vector<RequestOutput>* out) {
  out->clear();
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !outputs_.empty() || num_unfinished_ == 0; });
  out->insert(out->end(), std::make_move_iterator(outputs_.begin()),
              std::make_move_iterator(outputs_.end()));
  outputs_.clear();
  for (const RequestOutput& o : *out) {
    if (o.finished && num_unfinished_ > 0) --num_unfinished_;
  }
}

void RequestGroup::WakeOnlyOnFinish() {
  std::lock_guard lock(mu_);
  wake_only_on_finish_ = true;
}

bool RequestGroup::done() const {
  std::lock_guard lock(mu_);
  return num_unfinished_ == 0 && outputs_.empty();
}

EngineService::EngineService(ServiceConfig config, Executor* executor, const Tokenizer* tokenizer,
                             Metrics* metrics)
    : config_(WithClock(std::move(config), std::chrono::steady_clock::now())),
      metrics_(metrics),
      start_(std::chrono::steady_clock::now()),
      owned_(std::make_unique<cluster::LocalBackend>(config_.engine, executor, tokenizer)),
      engine_(owned_.get()) {
  thread_ = std::thread([this] { Loop(); });
}

EngineService::EngineService(ServiceConfig config, cluster::Backend* backend, Metrics* metrics)
    : config_(std::move(config)),
      metrics_(metrics),
      start_(std::chrono::steady_clock::now()),
      engine_(backend) {
  thread_ = std::thread([this] { Loop(); });
}

EngineService::~EngineService() {
  Shutdown();
}

double EngineService::now() const {
  return engine_->now();
}

Result<std::shared_ptr<RequestGroup>> EngineService::Submit(std::vector<Request> requests) {
  if (failed_) return Unavailable("The engine failed; the server cannot take requests.");
  if (!accepting_) return Unavailable("The server is shutting down.");
  int64_t num_tokens = 0;
  for (const Request& r : requests) num_tokens += static_cast<int64_t>(r.prompt.size());
  const int32_t k = static_cast<int32_t>(requests.size());

  auto group = std::make_shared<RequestGroup>();
  std::lock_guard lock(mu_);
  if (queued_requests_ + k > config_.max_queued_requests ||
      (queued_tokens_ > 0 && queued_tokens_ + num_tokens > config_.max_queued_tokens)) {
    if (metrics_) metrics_->AddRejected();
    return ResourceExhausted(
        "The server is overloaded ({} requests with {} prompt tokens are queued); retry later.",
        queued_requests_, queued_tokens_);
  }
  const double arrival = now();
  for (Request& r : requests) {
    const int32_t prompt_len = static_cast<int32_t>(r.prompt.size());
    Result<RequestId> id = engine_->AddRequest(std::move(r));
    if (!id.ok()) {
      for (RequestId added : group->ids_) {
        Dequeue(tracked_.at(added));
        tracked_.erase(added);
        engine_->Cancel(added);
      }
      poll_pending_ = true;
      work_cv_.notify_one();
      return id.status();
    }
    group->ids_.push_back(*id);
    Tracked t;
    t.group = group;
    t.arrival_s = arrival;
    t.num_prompt_tokens = prompt_len;
    tracked_.emplace(*id, t);
    ++queued_requests_;
    queued_tokens_ += prompt_len;
  }
  group->num_unfinished_ = k;
  work_cv_.notify_one();
  return group;
}

void EngineService::Dequeue(Tracked& t) {
  if (!t.queued) return;
  t.queued = false;
  --queued_requests_;
  queued_tokens_ -= t.num_prompt_tokens;
}

void EngineService::Cancel(const std::shared_ptr<RequestGroup>& group) {
  {
    std::lock_guard lock(mu_);
    for (RequestId id : group->ids_) {
      auto it = tracked_.find(id);
      if (it == tracked_.end()) continue;  // already finished
      Tracked& t = it->second;
      Dequeue(t);
      if (metrics_) {
        metrics_->ObserveFinished("abort", now() - t.arrival_s, -1, -1, -1, -1, t.num_prompt_tokens,
                                  t.num_tokens);
      }
      tracked_.erase(it);
      engine_->Cancel(id);  // frees the blocks now
    }
    poll_pending_ = true;
  }
  work_cv_.notify_one();
  std::lock_guard glock(group->mu_);
  group->num_unfinished_ = 0;
  group->cv_.notify_all();
}

void EngineService::CancelAll() {
  {
    std::lock_guard lock(mu_);
    // The cancelled outputs are routed as usual, so waiting handlers see finish_reason "abort".
    for (const auto& [id, t] : tracked_) engine_->Cancel(id);
    poll_pending_ = true;
  }
  work_cv_.notify_one();
}

void EngineService::Shutdown() {
  if (!thread_.joinable()) return;
  accepting_ = false;
  CancelAll();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
  Route(engine_->PollOutputs());
}

int32_t EngineService::num_in_flight() const {
  std::lock_guard lock(mu_);
  return static_cast<int32_t>(tracked_.size());
}

EngineGauges EngineService::gauges() const {
  EngineGauges g;
  g.num_running = engine_->num_running();
  g.num_waiting = engine_->num_waiting();
  g.blocks = engine_->block_stats();
  g.num_preemptions = engine_->num_preemptions();
  g.healthy = !failed_;
  g.cluster = engine_->cluster_status();
  return g;
}

void EngineService::Loop() {
  while (true) {
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || poll_pending_ || engine_->HasUnfinished(); });
      if (stop_) break;
      poll_pending_ = false;
    }
    const int64_t steps_before = engine_->num_steps();
    Status status = engine_->Step();
    if (!status.ok()) {
      // The executor failed: the batch's requests were finished with an error. Treat the
      // engine as dead (health 503, no new requests) rather than fail request after request.
      spdlog::error("engine step failed: {}", status.ToString());
      failed_ = true;
    }
    Route(engine_->PollOutputs());
    if (status.ok() && engine_->num_steps() == steps_before && engine_->HasUnfinished()) {
      // Nothing was schedulable (should not last); do not spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

void EngineService::Observe(Tracked& t, const RequestOutput& out) {
  if (!metrics_) return;
  if (t.first_scheduled_s < 0 && out.first_scheduled_time_s >= 0) {
    t.first_scheduled_s = out.first_scheduled_time_s;
  }
  if (!out.token_ids.empty()) {
    if (t.queued) metrics_->AddPromptTokens(t.num_prompt_tokens);
    for (double time : out.token_times_s) {
      if (t.first_token_s < 0) {
        t.first_token_s = time;
        metrics_->ObserveTtft(time - t.arrival_s);
      } else {
        metrics_->ObserveInterToken(time - t.last_token_s);
      }
      t.last_token_s = time;
    }
    t.num_tokens += static_cast<int64_t>(out.token_ids.size());
    metrics_->AddGenerationTokens(static_cast<int64_t>(out.token_ids.size()));
  }
  if (out.finished) {
    const double decode_s = t.first_token_s >= 0 ? t.last_token_s - t.first_token_s : -1;
    const double tpot_s = t.num_tokens > 1 ? decode_s / double(t.num_tokens - 1) : -1;
    const double queue_s = t.first_scheduled_s >= 0 ? t.first_scheduled_s - t.arrival_s : -1;
    const double prefill_s = t.first_token_s >= 0 && t.first_scheduled_s >= 0
                                 ? t.first_token_s - t.first_scheduled_s
                                 : -1;
    metrics_->ObserveFinished(ApiFinishReason(out.finish_reason), now() - t.arrival_s, queue_s,
                              prefill_s, decode_s, tpot_s, t.num_prompt_tokens, t.num_tokens);
  }
}

void EngineService::Route(std::vector<RequestOutput> outputs) {
  if (outputs.empty()) return;
  std::lock_guard lock(mu_);
  for (RequestOutput& out : outputs) {
    auto it = tracked_.find(out.request_id);
    if (it == tracked_.end()) continue;  // cancelled by its handler
    Tracked& t = it->second;
    Observe(t, out);
    if (!out.token_ids.empty() || out.finished) Dequeue(t);
    std::shared_ptr<RequestGroup> group = t.group.lock();
    const bool finished = out.finished;
    if (group) {
      bool wake;
      {
        std::lock_guard glock(group->mu_);
        wake = finished || !group->wake_only_on_finish_;
        group->outputs_.push_back(std::move(out));
      }
      // Notified unlocked: a waiter woken under the lock would block on it at once and need a
      // second wake-up (two context switches per token instead of one).
      if (wake) group->cv_.notify_all();
    }
    if (finished) tracked_.erase(it);
  }
}

}  // namespace cleave::server
