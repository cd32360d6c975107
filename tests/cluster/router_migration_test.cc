// Migration bookkeeping with scripted in-process workers (real TCP on loopback, real
// handshake, no engine): when a worker dies, its requests are sent again with the prompt
// extended by the tokens the client already has and the budget reduced by them; the client's
// stream has no duplicates and exactly one finish; late messages of an old attempt are ignored;
// a failed KV pull is prefilled again; with nothing left the error names the dead worker; a
// request waits for AddWorker when told to.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "cluster/router.h"
#include "cluster/transport.h"

namespace cleave::cluster {
namespace {

using namespace std::chrono_literals;

const std::string kSecret = "test-secret";
const KvLayout kLayout{2, 16, 64, 1024, 1000, 512};

// A worker that records what the router sends it and sends what the test tells it to.
class FakeWorker {
 public:
  explicit FakeWorker(WorkerRole role) : role_(role) {
    listener_ = std::move(*TcpListener::Listen("127.0.0.1", 0));
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeWorker() {
    Kill();
    thread_.join();
    if (heartbeats_.joinable()) heartbeats_.join();
  }
  // Sends a heartbeat every 50 ms until Kill (a live, idle worker).
  void StartHeartbeats() {
    heartbeats_ = std::thread([this] {
      while (!killed_) {
        std::shared_ptr<Connection> c;
        {
          std::lock_guard lock(mu_);
          c = conn_;
        }
        if (c) (void)c->Send(Encode(HeartbeatMsg{}));
        std::this_thread::sleep_for(50ms);
      }
    });
  }
  WorkerEndpoint endpoint() const { return {"127.0.0.1", listener_->port()}; }

  // The n-th AddRequest (0-based) the router sent, waiting up to 5 s for it.
  std::optional<AddRequestMsg> WaitAdd(size_t n) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 5s, [&] { return adds_.size() > n; })) return std::nullopt;
    return adds_[n];
  }
  bool WaitCancel(uint64_t wire_id) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 5s, [&] {
      return std::find(cancels_.begin(), cancels_.end(), wire_id) != cancels_.end();
    });
  }
  size_t num_adds() {
    std::lock_guard lock(mu_);
    return adds_.size();
  }
  void Send(uint64_t wire_id, std::vector<TokenId> tokens, bool finished = false,
            FinishReason reason = FinishReason::kNone, bool kv_staged = false,
            std::string error = "") {
    TokenOutputMsg m;
    m.request_id = wire_id;
    m.kv_staged = kv_staged;
    m.output.token_ids = std::move(tokens);
    m.output.finished = finished;
    m.output.finish_reason = reason;
    m.output.error = std::move(error);
    std::shared_ptr<Connection> c;
    {
      std::lock_guard lock(mu_);
      c = conn_;
    }
    ASSERT_TRUE(c && c->Send(Encode(m)).ok());
  }
  // As kill -9: the connection and the listener close.
  void Kill() {
    killed_ = true;
    listener_->Close();
    std::lock_guard lock(mu_);
    if (conn_) conn_->Close();
  }

 private:
  void Run() {
    Result<std::unique_ptr<Connection>> c = listener_->Accept();
    if (!c.ok()) return;
    std::shared_ptr<Connection> conn = std::move(*c);
    if (!AcceptHandshake(*conn, kSecret, role_, kLayout).ok()) return;
    {
      std::lock_guard lock(mu_);
      conn_ = conn;
    }
    while (true) {
      Result<Frame> f = conn->Recv();
      if (!f.ok()) return;
      std::lock_guard lock(mu_);
      if (f->type == MessageType::kAddRequest) adds_.push_back(*DecodeAddRequest(*f));
      if (f->type == MessageType::kCancel) cancels_.push_back(DecodeCancel(*f)->request_id);
      cv_.notify_all();
    }
  }

  WorkerRole role_;
  std::unique_ptr<TcpListener> listener_;
  std::thread thread_, heartbeats_;
  std::atomic<bool> killed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Connection> conn_;
  std::vector<AddRequestMsg> adds_;
  std::vector<uint64_t> cancels_;
};

// What the client of one request saw.
struct Stream {
  std::vector<TokenId> tokens;
  int num_finished = 0;
  FinishReason reason = FinishReason::kNone;
  std::string error;
};

// Steps the router and collects request `id`'s outputs until `want` tokens arrived or it
// finished (or 5 s passed).
void Collect(Router& router, RequestId id, Stream& s, size_t want = SIZE_MAX) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline && s.num_finished == 0 &&
         s.tokens.size() < want) {
    ASSERT_TRUE(router.Step().ok());
    for (const RequestOutput& out : router.PollOutputs()) {
      if (out.request_id != id) continue;
      s.tokens.insert(s.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      if (out.finished) {
        ++s.num_finished;
        s.reason = out.finish_reason;
        s.error = out.error;
      }
    }
  }
}

Request Greedy(std::vector<TokenId> prompt, int32_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  return r;
}

// layerwise_limit -1: decode workers are chosen after the first token (the pull flow most tests
// script); see RouterLayerwiseTest for the other.
std::unique_ptr<Router> Connect(std::vector<FakeWorker*> workers, double wait_s = 0,
                                double silence_limit_s = 30, int64_t layerwise_limit = -1) {
  RouterConfig rc;
  rc.secret = kSecret;
  rc.layerwise_kv_queue_limit = layerwise_limit;
  rc.wait_for_worker_s = wait_s;
  rc.worker_silence_limit_s = silence_limit_s;
  for (FakeWorker* w : workers) rc.workers.push_back(w->endpoint());
  Result<std::unique_ptr<Router>> r = Router::Connect(rc);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

// The start of a split request: the router sends `request` to prefill worker p (its first
// request), p reports token `first` with the KV staged, and decode worker d (its first request)
// is asked to pull it. nullopt (with a test failure) if any step does not happen.
struct Split {
  RequestId id = 0;
  AddRequestMsg pre, dec;
};
std::optional<Split> StartSplit(Router& router, FakeWorker& p, FakeWorker& d, Request request,
                                TokenId first) {
  Result<RequestId> id = router.AddRequest(std::move(request));
  EXPECT_TRUE(id.ok());
  if (!id.ok()) return std::nullopt;
  std::optional<AddRequestMsg> pre = p.WaitAdd(0);
  EXPECT_TRUE(pre);
  if (!pre) return std::nullopt;
  p.Send(pre->request_id, {first}, false, FinishReason::kNone, /*kv_staged=*/true);
  std::optional<AddRequestMsg> dec = d.WaitAdd(0);
  EXPECT_TRUE(dec);
  if (!dec) return std::nullopt;
  return Split{*id, *pre, *dec};
}

// The start of a layer-wise split: the router sends `request` to prefill worker p and, at the
// same time, to decode worker d (their first requests). nullopt (with a failure) otherwise.
std::optional<Split> StartLayerwise(Router& router, FakeWorker& p, FakeWorker& d, Request request) {
  Result<RequestId> id = router.AddRequest(std::move(request));
  EXPECT_TRUE(id.ok());
  if (!id.ok()) return std::nullopt;
  std::optional<AddRequestMsg> pre = p.WaitAdd(0);
  std::optional<AddRequestMsg> dec = d.WaitAdd(0);
  EXPECT_TRUE(pre && dec);
  if (!pre || !dec) return std::nullopt;
  return Split{*id, *pre, *dec};
}

TEST(RouterMigrationTest, MixedWorkerDiesRequestContinuesOnAnother) {
  FakeWorker a(WorkerRole::kMixed), b(WorkerRole::kMixed);
  auto router = Connect({&a, &b});
  ASSERT_TRUE(router);
  Result<RequestId> id = router->AddRequest(Greedy({1, 2, 3}, 6));
  ASSERT_TRUE(id.ok());
  std::optional<AddRequestMsg> first = a.WaitAdd(0);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->mode, RequestMode::kFull);
  a.Send(first->request_id, {10});
  a.Send(first->request_id, {11});
  Stream s;
  Collect(*router, *id, s, 2);
  ASSERT_EQ(s.tokens, (std::vector<TokenId>{10, 11}));
  a.Kill();
  std::optional<AddRequestMsg> second = b.WaitAdd(0);
  ASSERT_TRUE(second);
  EXPECT_NE(second->request_id, first->request_id);
  EXPECT_EQ(second->mode, RequestMode::kFull);
  // The client's request, continued after the streamed tokens.
  EXPECT_EQ(second->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(second->output_tokens, (std::vector<TokenId>{10, 11}));
  EXPECT_EQ(second->request.params.max_tokens, 6);
  // A late message under the old attempt's id is ignored.
  b.Send(first->request_id, {99}, true, FinishReason::kLength);
  b.Send(second->request_id, {12, 13});
  b.Send(second->request_id, {14, 15}, true, FinishReason::kLength);
  Collect(*router, *id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(s.reason, FinishReason::kLength);
  EXPECT_EQ(router->num_migrations(), 1);
  EXPECT_FALSE(router->HasUnfinished());
}

TEST(RouterMigrationTest, DecodeWorkerDiesRequestIsPrefilledAgainWithStreamedTokens) {
  FakeWorker p(WorkerRole::kPrefill), d1(WorkerRole::kDecode), d2(WorkerRole::kDecode);
  auto router = Connect({&p, &d1, &d2});
  ASSERT_TRUE(router);
  Result<RequestId> id = router->AddRequest(Greedy({1, 2, 3}, 6));
  ASSERT_TRUE(id.ok());
  std::optional<AddRequestMsg> pre = p.WaitAdd(0);
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->mode, RequestMode::kPrefillOnly);
  p.Send(pre->request_id, {10}, false, FinishReason::kNone, /*kv_staged=*/true);
  std::optional<AddRequestMsg> dec = d1.WaitAdd(0);  // equal room: the first decode worker
  ASSERT_TRUE(dec);
  EXPECT_EQ(dec->mode, RequestMode::kDecode);
  EXPECT_EQ(dec->request_id, pre->request_id);
  EXPECT_EQ(dec->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_TRUE(dec->output_tokens.empty());  // the prefill's token comes with its KV
  EXPECT_EQ(dec->source_port, p.endpoint().port);
  d1.Send(dec->request_id, {11, 12});
  Stream s;
  Collect(*router, *id, s, 3);
  ASSERT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12}));
  d1.Kill();
  std::optional<AddRequestMsg> pre2 = p.WaitAdd(1);
  ASSERT_TRUE(pre2);
  EXPECT_EQ(pre2->mode, RequestMode::kPrefillOnly);
  EXPECT_EQ(pre2->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(pre2->output_tokens, (std::vector<TokenId>{10, 11, 12}));
  EXPECT_EQ(pre2->request.params.max_tokens, 6);
  p.Send(pre2->request_id, {13}, false, FinishReason::kNone, true);
  std::optional<AddRequestMsg> dec2 = d2.WaitAdd(0);
  ASSERT_TRUE(dec2);
  EXPECT_EQ(dec2->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(dec2->request.params.max_tokens, 6);
  EXPECT_EQ(dec2->output_tokens, (std::vector<TokenId>{10, 11, 12}));  // 13 comes with the KV
  d2.Send(dec2->request_id, {14, 15}, true, FinishReason::kLength);
  Collect(*router, *id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(router->num_migrations(), 1);
  const ClusterStatus cs = router->cluster_status();
  ASSERT_EQ(cs.workers.size(), 3u);
  EXPECT_FALSE(cs.workers[1].alive);
  EXPECT_TRUE(cs.can_serve);
}

TEST(RouterMigrationTest, FailedPullIsPrefilledAgain) {
  FakeWorker p(WorkerRole::kPrefill), d(WorkerRole::kDecode);
  auto router = Connect({&p, &d});
  ASSERT_TRUE(router);
  std::optional<Split> split = StartSplit(*router, p, d, Greedy({1, 2, 3}, 4), 10);
  ASSERT_TRUE(split);
  d.Send(split->dec.request_id, {}, true, FinishReason::kError, false, "transfer cut");
  std::optional<AddRequestMsg> pre2 = p.WaitAdd(1);
  ASSERT_TRUE(pre2);
  EXPECT_TRUE(p.WaitCancel(split->pre.request_id));  // the staged KV of the old attempt is dropped
  EXPECT_EQ(pre2->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(pre2->output_tokens, (std::vector<TokenId>{10}));
  EXPECT_EQ(pre2->request.params.max_tokens, 4);
  p.Send(pre2->request_id, {11}, false, FinishReason::kNone, true);
  std::optional<AddRequestMsg> dec2 = d.WaitAdd(1);
  ASSERT_TRUE(dec2);
  d.Send(dec2->request_id, {12, 13}, true, FinishReason::kLength);
  Stream s;
  Collect(*router, split->id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12, 13}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(router->cluster_status().kv_transfer_failures.at("transfer_error"), 1);
}

TEST(RouterMigrationTest, PrefillWorkerDiesBeforeThePullDecodeWorkerRunsItWhole) {
  FakeWorker p(WorkerRole::kPrefill), d(WorkerRole::kDecode);
  auto router = Connect({&p, &d});
  ASSERT_TRUE(router);
  std::optional<Split> split = StartSplit(*router, p, d, Greedy({1, 2, 3}, 4), 10);
  ASSERT_TRUE(split);
  p.Kill();  // the decode worker sent no token yet: it may not have the KV
  EXPECT_TRUE(d.WaitCancel(split->dec.request_id));
  std::optional<AddRequestMsg> full = d.WaitAdd(1);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->mode, RequestMode::kFull);
  EXPECT_EQ(full->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(full->output_tokens, (std::vector<TokenId>{10}));
  d.Send(full->request_id, {11, 12, 13}, true, FinishReason::kLength);
  Stream s;
  Collect(*router, split->id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12, 13}));
  EXPECT_EQ(router->cluster_status().kv_transfer_failures.at("prefill_worker_died"), 1);
  // Degraded but serving: new requests go to the decode worker whole.
  Result<RequestId> id2 = router->AddRequest(Greedy({5}, 2));
  ASSERT_TRUE(id2.ok());
  std::optional<AddRequestMsg> full2 = d.WaitAdd(2);
  ASSERT_TRUE(full2);
  EXPECT_EQ(full2->mode, RequestMode::kFull);
}

// A worker that stays connected but sends nothing (hung, SIGSTOPped) is taken for dead after
// the silence limit, with no request needed to notice it, and its request moves on.
TEST(RouterMigrationTest, SilentWorkerIsTakenForDead) {
  FakeWorker hung(WorkerRole::kMixed), b(WorkerRole::kMixed);
  b.StartHeartbeats();
  auto router = Connect({&hung, &b}, 0, /*silence_limit_s=*/0.5);
  ASSERT_TRUE(router);
  Result<RequestId> id = router->AddRequest(Greedy({1, 2}, 3));
  ASSERT_TRUE(id.ok());
  std::optional<AddRequestMsg> first = hung.WaitAdd(0);
  ASSERT_TRUE(first);
  hung.Send(first->request_id, {10});
  Stream s;
  Collect(*router, *id, s, 1);
  const auto start = std::chrono::steady_clock::now();
  std::optional<AddRequestMsg> moved = b.WaitAdd(0);  // no Step() call in between
  ASSERT_TRUE(moved);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_EQ(moved->request.prompt, (std::vector<TokenId>{1, 2}));
  EXPECT_EQ(moved->output_tokens, (std::vector<TokenId>{10}));
  b.Send(moved->request_id, {11, 12}, true, FinishReason::kLength);
  Collect(*router, *id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12}));
  const ClusterStatus cs = router->cluster_status();
  EXPECT_FALSE(cs.workers[0].alive);
  EXPECT_TRUE(cs.workers[1].alive);
}

TEST(RouterMigrationTest, NothingLeftFailsWithTheDeadWorkersName) {
  FakeWorker a(WorkerRole::kMixed);
  auto router = Connect({&a});
  ASSERT_TRUE(router);
  Result<RequestId> id = router->AddRequest(Greedy({1, 2}, 8));
  ASSERT_TRUE(id.ok());
  std::optional<AddRequestMsg> add = a.WaitAdd(0);
  ASSERT_TRUE(add);
  a.Send(add->request_id, {10});
  Stream s;
  Collect(*router, *id, s, 1);
  a.Kill();
  Collect(*router, *id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(s.reason, FinishReason::kError);
  EXPECT_NE(
      s.error.find("mixed worker at 127.0.0.1:" + std::to_string(a.endpoint().port) + " died"),
      std::string::npos)
      << s.error;
  EXPECT_FALSE(router->cluster_status().can_serve);
  EXPECT_EQ(router->AddRequest(Greedy({1}, 2)).status().code(), StatusCode::kUnavailable);
}

TEST(RouterMigrationTest, WaitingRequestMovesToAReplacementWorker) {
  FakeWorker a(WorkerRole::kMixed);
  auto router = Connect({&a}, /*wait_s=*/10);
  ASSERT_TRUE(router);
  Result<RequestId> id = router->AddRequest(Greedy({1, 2}, 3));
  ASSERT_TRUE(id.ok());
  std::optional<AddRequestMsg> add = a.WaitAdd(0);
  ASSERT_TRUE(add);
  a.Send(add->request_id, {10});
  Stream s;
  Collect(*router, *id, s, 1);
  a.Kill();
  // Arrives while nothing can serve it: waits too.
  Result<RequestId> id2 = router->AddRequest(Greedy({4}, 1));
  ASSERT_TRUE(id2.ok());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(router->cluster_status().workers.size(), 1u);
  FakeWorker b(WorkerRole::kMixed);
  ASSERT_TRUE(router->ReplaceWorker(a.endpoint(), b.endpoint()).ok());
  std::optional<AddRequestMsg> moved = b.WaitAdd(0);
  std::optional<AddRequestMsg> fresh = b.WaitAdd(1);
  ASSERT_TRUE(moved && fresh);
  if (moved->request.prompt.size() == 1) std::swap(moved, fresh);
  EXPECT_EQ(moved->request.prompt, (std::vector<TokenId>{1, 2}));
  EXPECT_EQ(moved->output_tokens, (std::vector<TokenId>{10}));
  EXPECT_EQ(moved->request.params.max_tokens, 3);
  b.Send(moved->request_id, {11, 12}, true, FinishReason::kLength);
  Collect(*router, *id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12}));
  const ClusterStatus cs = router->cluster_status();
  ASSERT_EQ(cs.workers.size(), 1u);  // the dead one is forgotten
  EXPECT_TRUE(cs.workers[0].alive);
  EXPECT_EQ(cs.worker_restarts, 1);
  router->Cancel(*id2);
}

TEST(RouterMigrationTest, AddWorkerRejectsAnotherModel) {
  FakeWorker a(WorkerRole::kMixed);
  auto router = Connect({&a});
  ASSERT_TRUE(router);
  // A listener that speaks the handshake with another layout.
  std::unique_ptr<TcpListener> other = std::move(*TcpListener::Listen("127.0.0.1", 0));
  std::thread t([&] {
    auto c = other->Accept();
    if (!c.ok()) return;
    KvLayout l = kLayout;
    l.num_layers = 3;
    (void)AcceptHandshake(**c, kSecret, WorkerRole::kMixed, l);
    (void)(*c)->Recv();
  });
  Status s = router->AddWorker({"127.0.0.1", other->port()});
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  other->Close();
  router->Shutdown();
  t.join();
}

// Routing through the router, with fakes: a prompt whose prefix was just sent to a prefill
// worker goes there even with more queued, and short prompts skip the prefill workers.
TEST(RouterRoutingTest, PrefixOverlapAndLocalPrefillThreshold) {
  FakeWorker p0(WorkerRole::kPrefill), p1(WorkerRole::kPrefill), d(WorkerRole::kDecode);
  RouterConfig rc;
  rc.secret = kSecret;
  rc.local_prefill_max_tokens = 8;
  rc.layerwise_kv_queue_limit = -1;
  rc.workers = {p0.endpoint(), p1.endpoint(), d.endpoint()};
  Result<std::unique_ptr<Router>> router = Router::Connect(rc);
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  std::vector<TokenId> x(64), y(32);
  for (int i = 0; i < 64; ++i) x[i] = TokenId(i + 1);
  for (int i = 0; i < 32; ++i) y[i] = TokenId(500 + i);
  ASSERT_TRUE((*router)->AddRequest(Greedy(x, 4)).ok());  // tie: p0, which now queues 64
  ASSERT_TRUE(p0.WaitAdd(0));
  ASSERT_TRUE((*router)->AddRequest(Greedy(y, 4)).ok());  // p0 costs 64, p1 0
  ASSERT_TRUE(p1.WaitAdd(0));
  std::vector<TokenId> x_longer = x;
  for (int i = 0; i < 16; ++i) x_longer.push_back(TokenId(900 + i));
  // p0: 64 queued - 64 cached = 0 against p1: 32 queued - 0 = 32.
  ASSERT_TRUE((*router)->AddRequest(Greedy(x_longer, 4)).ok());
  std::optional<AddRequestMsg> third = p0.WaitAdd(1);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->request.prompt, x_longer);
  EXPECT_EQ(p1.num_adds(), 1u);
  // 7 tokens < 8: whole request on the decode worker; 8 tokens: disaggregated.
  ASSERT_TRUE((*router)->AddRequest(Greedy({1, 2, 3, 4, 5, 6, 7}, 4)).ok());
  std::optional<AddRequestMsg> local = d.WaitAdd(0);
  ASSERT_TRUE(local);
  EXPECT_EQ(local->mode, RequestMode::kFull);
  ASSERT_TRUE((*router)->AddRequest(Greedy({1, 2, 3, 4, 5, 6, 7, 8}, 4)).ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(d.num_adds(), 1u);
  EXPECT_EQ(p0.num_adds() + p1.num_adds(), 4u);
}

// Layer-wise KV transfer: behind a short prefill queue the decode worker gets the request at
// dispatch (no tokens yet: they come with the KV), and what it sends waits until the prefill
// worker's first token has been streamed; behind a long queue the pull flow is kept.
TEST(RouterLayerwiseTest, DecodeWorkerChosenAtDispatchAndItsTokensFollowTheFirst) {
  FakeWorker p(WorkerRole::kPrefill), d(WorkerRole::kDecode);
  auto router = Connect({&p, &d}, 0, 30, /*layerwise_limit=*/2);
  ASSERT_TRUE(router);
  std::optional<Split> split = StartLayerwise(*router, p, d, Greedy({1, 2, 3}, 4));
  ASSERT_TRUE(split);
  const AddRequestMsg& pre = split->pre;
  const AddRequestMsg& dec = split->dec;
  EXPECT_EQ(pre.mode, RequestMode::kPrefillOnly);
  EXPECT_EQ(dec.mode, RequestMode::kDecodeLayerwise);
  EXPECT_EQ(dec.request_id, pre.request_id);
  EXPECT_EQ(dec.request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_TRUE(dec.output_tokens.empty());
  EXPECT_EQ(dec.source_port, p.endpoint().port);
  // The decode worker's token overtakes the prefill's first one on the wire: it is held.
  d.Send(dec.request_id, {11});
  Stream s;
  Collect(*router, split->id, s, 1);
  EXPECT_TRUE(s.tokens.empty());
  p.Send(pre.request_id, {10}, false, FinishReason::kNone, /*kv_staged=*/true);
  Collect(*router, split->id, s, 2);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11}));
  d.Send(dec.request_id, {12, 13}, true, FinishReason::kLength);
  Collect(*router, split->id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 11, 12, 13}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(d.num_adds(), 1u);  // no second hand-off after the first token

  // Nothing queued on p: layer-wise again; then 3 prompt tokens queued (limit 2): pull flow.
  Result<RequestId> a = router->AddRequest(Greedy({4, 5, 6}, 4));
  Result<RequestId> b = router->AddRequest(Greedy({7, 8, 9}, 4));
  ASSERT_TRUE(a.ok() && b.ok());
  std::optional<AddRequestMsg> pre_b = p.WaitAdd(2);
  ASSERT_TRUE(pre_b);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(d.num_adds(), 2u);  // the request of b waits for its first token
  p.Send(pre_b->request_id, {20}, false, FinishReason::kNone, true);
  std::optional<AddRequestMsg> dec_b = d.WaitAdd(2);
  ASSERT_TRUE(dec_b);
  EXPECT_EQ(dec_b->mode, RequestMode::kDecode);
  EXPECT_TRUE(dec_b->output_tokens.empty());
}

// A failed layer-wise transfer reported before the first token is acted on after it: the
// request is prefilled again with that token, and the prefill's end cancels the decode side.
TEST(RouterLayerwiseTest, EarlyTransferFailureRetriesAfterTheFirstToken) {
  FakeWorker p(WorkerRole::kPrefill), d(WorkerRole::kDecode);
  auto router = Connect({&p, &d}, 0, 30, /*layerwise_limit=*/1024);
  ASSERT_TRUE(router);
  std::optional<Split> split = StartLayerwise(*router, p, d, Greedy({1, 2, 3}, 4));
  ASSERT_TRUE(split);
  const AddRequestMsg& pre = split->pre;
  const AddRequestMsg& dec = split->dec;
  d.Send(dec.request_id, {}, true, FinishReason::kError, false, "KV transfer failed: cut");
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(p.num_adds(), 1u);  // nothing happens before the first token
  p.Send(pre.request_id, {10}, false, FinishReason::kNone, true);
  std::optional<AddRequestMsg> pre2 = p.WaitAdd(1);
  ASSERT_TRUE(pre2);
  EXPECT_EQ(pre2->request.prompt, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(pre2->output_tokens, (std::vector<TokenId>{10}));
  std::optional<AddRequestMsg> dec2 = d.WaitAdd(1);  // layer-wise again (queue is short)
  ASSERT_TRUE(dec2);
  EXPECT_EQ(dec2->request_id, pre2->request_id);
  // This time the prompt ends at its first token: the decode side is cancelled.
  p.Send(pre2->request_id, {2}, true, FinishReason::kStop);
  EXPECT_TRUE(d.WaitCancel(dec2->request_id));
  Stream s;
  Collect(*router, split->id, s);
  EXPECT_EQ(s.tokens, (std::vector<TokenId>{10, 2}));
  EXPECT_EQ(s.num_finished, 1);
  EXPECT_EQ(s.reason, FinishReason::kStop);
}

}  // namespace
}  // namespace cleave::cluster
