// Failover end to end: the real `cleave serve` with 1 prefill + 1 decode worker under steady
// streaming load (12 greedy requests of 48 tokens). kill -9 of the decode worker, later of the
// prefill worker: every stream completes with exactly the colocated greedy text (requests are
// migrated: prompt + streamed tokens, re-prefilled), the supervisor restarts the dead worker,
// /health goes from 503 (no decode worker) or "degraded" (no prefill worker; decode workers
// then run whole requests) back to "ok", /metrics counts migrations and restarts, and at the
// end every KV block on the workers is free.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/testing/completions.h"
#include "tests/testing/paths.h"
#include "tests/testing/server_process.h"

namespace cleave::cluster {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using cleave::testing::CleaveServer;
using cleave::testing::Completion;
using cleave::testing::MetricValue;

constexpr int kMaxTokens = 48;
constexpr int kNumRequests = 12;

// The most tokens a request had streamed when it was migrated (router log lines), or -1.
int MaxStreamedAtMigration(const CleaveServer& server) {
  std::istringstream in(server.LogText());
  int most = -1;
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find(" tokens streamed so far");
    if (at == std::string::npos || line.find("migrated") == std::string::npos) continue;
    const size_t start = line.rfind(' ', at - 1) + 1;
    most = std::max(most, std::stoi(line.substr(start, at - start)));
  }
  return most;
}

// A streaming completion, greedy or (seed >= 0) sampled with that seed; `tokens_seen` counts
// the tokens as they arrive.
Completion Stream(int port, const std::string& prompt, std::atomic<int>* tokens_seen,
                  int seed = -1) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  json body = {{"prompt", prompt},
               {"max_tokens", kMaxTokens},
               {"temperature", 0},
               {"logprobs", 0},
               {"stream", true}};
  if (seed >= 0) {
    body["temperature"] = 0.8;
    body["seed"] = seed;
  }
  Completion out;
  std::string buffer;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const json j = json::parse(event.substr(6), nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("error")) {
        out.error = j.dump();
        continue;
      }
      for (const json& choice : j["choices"]) {
        out.text += choice["text"].get<std::string>();
        if (choice["logprobs"].is_object()) {
          for (const json& t : choice["logprobs"]["tokens"]) {
            out.tokens.push_back(t.get<std::string>());
            if (tokens_seen) ++*tokens_seen;
          }
        }
        if (!choice["finish_reason"].is_null()) out.finish_reason = choice["finish_reason"];
      }
    }
    return true;
  };
  auto res = c.send(req);
  if (!res) {
    out.error = "no response";
    return out;
  }
  out.status = res->status;
  if (res->status != 200) out.error = buffer + res->body;
  return out;
}

std::vector<std::string> Prompts() {
  const std::vector<std::string> seeds = {
      "The capital of France is",
      "Write a short poem about the sea.",
      "List three uses of a paperclip:",
      "def fibonacci(n):",
      "In 1969, the first humans landed on the Moon. The mission was called",
      "Explain in simple words why the sky is blue, as if talking to a curious child who keeps "
      "asking why after every answer you give, and make it fun.",
  };
  std::vector<std::string> prompts;
  for (int i = 0; i < kNumRequests; ++i) {
    prompts.push_back(i < int(seeds.size())
                          ? seeds[i]
                          : seeds[i % seeds.size()] + " (" + std::to_string(i) + ")");
  }
  return prompts;
}

// Runs the load (every third request sampled with a fixed seed, the others greedy); calls
// `fault` once `kill_after_tokens` tokens were streamed in total. A migrated seeded request must
// continue its random stream where it was, so its text matches an uninterrupted run too.
std::vector<Completion> RunLoad(int port, int kill_after_tokens,
                                const std::function<void()>& fault) {
  const std::vector<std::string> prompts = Prompts();
  std::atomic<int> tokens_seen{0};
  std::vector<Completion> out(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      out[i] = Stream(port, prompts[i], &tokens_seen, i % 3 == 2 ? int(500 + i) : -1);
    });
  }
  if (fault) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (tokens_seen < kill_after_tokens && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    fault();
  }
  for (std::thread& t : threads) t.join();
  return out;
}

// Polls /health every 20 ms in the background, recording each distinct state in order.
class HealthWatch {
 public:
  explicit HealthWatch(int port) : port_(port), thread_([this] { Run(); }) {}
  ~HealthWatch() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::string> states() {
    std::lock_guard lock(mu_);
    return states_;
  }

 private:
  void Run() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(5, 0);
    while (!stop_) {
      std::string state = "no response";
      if (auto res = c.Get("/health")) {
        const json j = json::parse(res->body, nullptr, false);
        state = std::to_string(res->status) + " " +
                (j.is_object() && j.contains("status") ? j["status"].get<std::string>() : "?");
      }
      {
        std::lock_guard lock(mu_);
        if (states_.empty() || states_.back() != state) states_.push_back(state);
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  int port_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> states_;
  std::thread thread_;
};

json Health(int port) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/health");
  if (!res) return json();
  json j = json::parse(res->body, nullptr, false);
  j["http_status"] = res->status;
  return j;
}

bool WaitHealthOk(int port, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const json h = Health(port);
    if (h.is_object() && h.value("status", "") == "ok") return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

class FailoverE2eTest : public cleave::testing::CleaveServeTest {};

TEST_F(FailoverE2eTest, KilledWorkersAreMigratedRestartedAndHealthRecovers) {
  std::vector<Completion> ref;
  {
    CleaveServer colocated("--threads 1");
    ASSERT_TRUE(colocated.ready()) << colocated.LogTail();
    ref = RunLoad(colocated.port(), 0, nullptr);
  }
  int num_long = 0;
  for (const Completion& c : ref) {
    ASSERT_EQ(c.status, 200) << c.error;
    num_long += c.tokens.size() == size_t(kMaxTokens);
  }
  ASSERT_GE(num_long, kNumRequests / 2) << "most references must run many decode steps";

  // A small step budget keeps the prefill worker busy for many steps with the 12 prompts, so
  // that its death in part 2 finds prompts still on it (one step would prefill them all, and
  // with layer-wise transfer their decodes would start before the kill).
  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--max-batch-tokens 32");
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const int port = disagg.port();
  {
    const json h = Health(port);
    EXPECT_EQ(h.value("status", ""), "ok") << h.dump();
    ASSERT_EQ(h["workers"].size(), 2u) << h.dump();
  }

  // 1. The decode worker dies mid-stream (about a quarter of the tokens streamed).
  const pid_t decode_pid = disagg.WorkerPid("decode");
  ASSERT_GT(decode_pid, 0) << disagg.LogTail();
  HealthWatch watch_decode(port);
  std::vector<Completion> got = RunLoad(port, kNumRequests * kMaxTokens / 4, [&] {
    ASSERT_EQ(cleave::testing::SignalPid(decode_pid, SIGKILL), 0);
  });
  cleave::testing::ExpectSameCompletions(ref, got, "decode worker killed");
  ASSERT_TRUE(WaitHealthOk(port, 60s)) << disagg.LogTail();
  watch_decode.Stop();
  {
    const std::vector<std::string> states = watch_decode.states();
    ASSERT_GE(states.size(), 2u);
    EXPECT_EQ(states.front(), "200 ok");
    EXPECT_NE(std::find(states.begin(), states.end(), "503 unavailable"), states.end())
        << "no decode worker left must read 503";
    EXPECT_EQ(states.back(), "200 ok");
  }
  EXPECT_GT(MetricValue(port, "cleave:migrations_total"), 0) << disagg.LogTail();
  // Some request had streamed tokens when its worker died: its continuation was re-prefilled
  // with them, and its text still matched.
  EXPECT_GT(MaxStreamedAtMigration(disagg), 1) << disagg.LogTail();
  EXPECT_EQ(MetricValue(port, "cleave:worker_restarts_total"), 1);
  const pid_t new_decode_pid = disagg.WorkerPid("decode");
  EXPECT_GT(new_decode_pid, 0);
  EXPECT_NE(new_decode_pid, decode_pid);

  // 2. The prefill worker dies while prompts are being prefilled: its requests run whole on the
  // decode worker (degraded), then the restarted prefill worker takes prompts again.
  const pid_t prefill_pid = disagg.WorkerPid("prefill");
  ASSERT_GT(prefill_pid, 0);
  HealthWatch watch_prefill(port);
  const double migrations_before = MetricValue(port, "cleave:migrations_total");
  got = RunLoad(port, 2, [&] { ASSERT_EQ(cleave::testing::SignalPid(prefill_pid, SIGKILL), 0); });
  cleave::testing::ExpectSameCompletions(ref, got, "prefill worker killed");
  ASSERT_TRUE(WaitHealthOk(port, 60s)) << disagg.LogTail();
  watch_prefill.Stop();
  {
    const std::vector<std::string> states = watch_prefill.states();
    EXPECT_NE(std::find(states.begin(), states.end(), "200 degraded"), states.end())
        << "a dead prefill worker with a live decode worker reads degraded";
    EXPECT_EQ(states.back(), "200 ok");
  }
  EXPECT_GT(MetricValue(port, "cleave:migrations_total"), migrations_before) << disagg.LogTail();
  EXPECT_EQ(MetricValue(port, "cleave:worker_restarts_total"), 2);

  // 3. Steady state again: the restarted pair serves the load with the same text, and every
  // KV block on the workers is free afterwards (workers report every 100 ms).
  cleave::testing::ExpectSameCompletions(ref, RunLoad(port, 0, nullptr), "after both restarts");
  cleave::testing::ExpectAllKvBlocksFree(disagg);
  // Transfers were measured (decode workers' reports), and the per-worker gauges are there.
  EXPECT_GT(MetricValue(port, "cleave:kv_transfer_bytes_total"), 0);
  EXPECT_GT(MetricValue(port, "cleave:kv_transfer_seconds_count"), 0);
  EXPECT_GE(MetricValue(port, "cleave:worker_kv_usage_perc"), 0);
  EXPECT_GE(MetricValue(port, "cleave:worker_queue_length"), 0);
}

// `cleave bench` against `port`: a fixed greedy chatbot workload (seed 3, short lengths) at 8
// req/s; returns its per-request records (the run's .jsonl), indexed by request.
std::vector<json> RunBench(int port, const std::string& dir) {
  const std::string cmd = "timeout 300 " + cleave::testing::CleaveBinary() +
                          " bench --base-url http://127.0.0.1:" + std::to_string(port) +
                          " --workload chatbot --length-scale 0.15 -n 24 --request-rate 8"
                          " --seed 3 --num-warmups 0 --no-plot --no-progress --no-tokenize"
                          " --extra-body '{\"temperature\": 0}' --result-dir " +
                          dir + " > " + dir + ".log 2>&1";
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<json> records;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".jsonl") continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) records.push_back(json::parse(line));
  }
  std::sort(records.begin(), records.end(),
            [](const json& a, const json& b) { return a["index"] < b["index"]; });
  return records;
}

// The issue's fault test, driven by `cleave bench`: under its steady load the decode worker and
// then the prefill worker are killed (-9). Every request completes with the text a colocated
// server gives the same request (greedy), or ends with a clear error; none hangs (bench ends);
// the server keeps serving; no KV block is left reserved.
TEST_F(FailoverE2eTest, BenchLoadSurvivesKilledDecodeThenPrefillWorker) {
  const std::string dir = cleave::testing::TempDir() + "/failover_bench";
  std::vector<json> ref;
  {
    CleaveServer colocated("--threads 1");
    ASSERT_TRUE(colocated.ready()) << colocated.LogTail();
    ref = RunBench(colocated.port(), dir + "/colocated");
  }
  ASSERT_EQ(ref.size(), 24u);
  for (const json& r : ref) ASSERT_TRUE(r["success"].get<bool>()) << r.dump();

  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1");
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const pid_t decode_pid = disagg.WorkerPid("decode");
  ASSERT_GT(decode_pid, 0);
  double total_tokens = 0;
  for (const json& r : ref) total_tokens += r["output_tokens"].get<double>();
  // Waits until the server has generated `fraction` of the run's tokens.
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  auto wait_progress = [&](double fraction) {
    while (MetricValue(disagg.port(), "vllm:generation_tokens_total") < fraction * total_tokens &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
  };
  std::vector<json> got;
  std::thread bench([&] { got = RunBench(disagg.port(), dir + "/disaggregated"); });
  wait_progress(0.25);
  EXPECT_EQ(cleave::testing::SignalPid(decode_pid, SIGKILL), 0);
  wait_progress(0.6);
  const pid_t prefill_pid = disagg.WorkerPid("prefill");
  EXPECT_GT(prefill_pid, 0);
  if (prefill_pid > 0) {
    EXPECT_EQ(cleave::testing::SignalPid(prefill_pid, SIGKILL), 0);
  }
  bench.join();
  ASSERT_EQ(got.size(), ref.size()) << "bench lost requests";
  int ok = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    if (got[i]["success"].get<bool>()) {
      ++ok;
      EXPECT_EQ(got[i]["generated_text"], ref[i]["generated_text"]);
      EXPECT_EQ(got[i]["output_tokens"], ref[i]["output_tokens"]);
    } else {
      EXPECT_FALSE(got[i]["error"].get<std::string>().empty()) << got[i].dump();
    }
  }
  std::printf("bench under two worker kills: %d of %zu requests completed\n", ok, got.size());
  EXPECT_GE(ok, int(got.size()) * 3 / 4) << "restarted workers should carry most requests";
  EXPECT_GE(MetricValue(disagg.port(), "cleave:worker_restarts_total"), 2);
  EXPECT_GT(MetricValue(disagg.port(), "cleave:migrations_total"), 0) << disagg.LogTail();
  ASSERT_TRUE(WaitHealthOk(disagg.port(), 60s)) << disagg.LogTail();
  cleave::testing::ExpectAllKvBlocksFree(disagg);
}

// --worker-restarts 1: the first death is repaired, the second is not. The supervisor gives up
// (logged), requests that were waiting for a decode worker end at once with a clear error
// naming the dead worker (not after the wait limit), /health says 503, new requests get 503.
TEST_F(FailoverE2eTest, SupervisorGivesUpAfterTheRestartLimit) {
  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--worker-restarts 1");
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const int port = disagg.port();
  const pid_t first = disagg.WorkerPid("decode");
  ASSERT_EQ(cleave::testing::SignalPid(first, SIGKILL), 0);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(WaitHealthOk(port, 60s)) << disagg.LogTail();
  const pid_t second = disagg.WorkerPid("decode");
  ASSERT_NE(second, first) << disagg.LogTail();
  const auto start = std::chrono::steady_clock::now();
  std::vector<Completion> got = RunLoad(
      port, kNumRequests * 4, [&] { ASSERT_EQ(cleave::testing::SignalPid(second, SIGKILL), 0); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s) << "requests waited for a worker "
                                                              "that was never coming back";
  int num_failed = 0;
  for (const Completion& c : got) {
    if (c.error.empty()) continue;  // finished before the kill
    ++num_failed;
    EXPECT_NE(c.error.find("decode worker at 127.0.0.1:"), std::string::npos) << c.error;
    EXPECT_NE(c.error.find("died"), std::string::npos) << c.error;
  }
  EXPECT_GT(num_failed, 0);
  const json h = Health(port);
  EXPECT_EQ(h.value("http_status", 0), 503) << h.dump();
  httplib::Client c("127.0.0.1", port);
  auto res = c.Post("/v1/completions", R"({"prompt":"Hi","max_tokens":4})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(disagg.WorkerPid("decode"), second) << "restarted past the limit";
  EXPECT_EQ(MetricValue(port, "cleave:worker_restarts_total"), 1);
}

// A hung decode worker (SIGSTOP: connected, silent) is taken for dead after the silence limit
// (3 s), SIGKILLed and restarted by the supervisor; its requests continue with the same text.
// KV over TCP here (the other tests use the default, shared memory on one host).
TEST_F(FailoverE2eTest, HungWorkerIsReplacedAndItsRequestsMigrate) {
  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--kv-transport tcp");
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const int port = disagg.port();
  const std::vector<Completion> ref = RunLoad(port, 0, nullptr);  // matches colocated (above)
  const pid_t decode_pid = disagg.WorkerPid("decode");
  ASSERT_GT(decode_pid, 0);
  std::vector<Completion> got = RunLoad(port, kNumRequests * kMaxTokens / 4, [&] {
    ASSERT_EQ(cleave::testing::SignalPid(decode_pid, SIGSTOP), 0);
  });
  cleave::testing::ExpectSameCompletions(ref, got, "decode worker stopped");
  ASSERT_TRUE(WaitHealthOk(port, 60s)) << disagg.LogTail();
  EXPECT_NE(disagg.WorkerPid("decode"), decode_pid);
  EXPECT_EQ(MetricValue(port, "cleave:worker_restarts_total"), 1);
  EXPECT_GT(MetricValue(port, "cleave:migrations_total"), 0);
}

}  // namespace
}  // namespace cleave::cluster
