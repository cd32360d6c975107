// End to end: the real `cleave serve` on the default model, colocated (engine in-process)
// against disaggregated (1 prefill + 1 decode worker process, KV over loopback TCP) and against
// one mixed worker process. Greedy completions must match token for token, alone and with 32
// requests at once, and afterwards every KV block must be free again (/metrics).
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include "tests/testing/completions.h"
#include "tests/testing/paths.h"
#include "tests/testing/server_process.h"

namespace cleave::cluster {
namespace {

using cleave::testing::CleaveServer;
using cleave::testing::Completion;
using cleave::testing::MetricValue;
using nlohmann::json;

// Greedy unless seed is given (then temperature 0.8 with that seed).
Completion Complete(int port, const std::string& prompt, int max_tokens,
                    std::optional<uint64_t> seed = std::nullopt) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"logprobs", 0}};
  if (seed) {
    body["temperature"] = 0.8;
    body["seed"] = *seed;
  }
  Completion out;
  auto res = c.Post("/v1/completions", body.dump(), "application/json");
  if (!res) {
    out.error = "no response";
    return out;
  }
  out.status = res->status;
  const json r = json::parse(res->body, nullptr, false);
  if (res->status != 200 || r.is_discarded()) {
    out.error = res->body;
    return out;
  }
  const json& choice = r["choices"][0];
  out.text = choice["text"].get<std::string>();
  out.finish_reason = choice["finish_reason"].get<std::string>();
  for (const json& t : choice["logprobs"]["tokens"]) out.tokens.push_back(t.get<std::string>());
  return out;
}

// Prompts of 1 to several KV blocks (16 tokens each), so partial and full blocks both move.
std::vector<std::string> Prompts(int n) {
  const std::vector<std::string> seeds = {
      "The capital of France is",
      "Write a short poem about the sea.",
      "List three uses of a paperclip:",
      "def fibonacci(n):",
      "In 1969, the first humans landed on the Moon. The mission was called",
      "Explain in simple words why the sky is blue, as if talking to a curious child who keeps "
      "asking why after every answer you give, and make it fun.",
      "Translate to French: The cat sleeps on the warm windowsill while the rain falls outside.",
      "Once upon a time, in a small village at the edge of a great forest, there lived an old "
      "clockmaker who had never once left the village. One morning, a stranger knocked on his "
      "door carrying a broken pocket watch, and said",
  };
  std::vector<std::string> prompts;
  for (int i = 0; i < n; ++i) {
    prompts.push_back(i < int(seeds.size())
                          ? seeds[i]
                          : seeds[i % seeds.size()] + " (" + std::to_string(i) + ")");
  }
  return prompts;
}

std::vector<Completion> CompleteAll(int port, const std::vector<std::string>& prompts,
                                    int max_tokens) {
  std::vector<Completion> out(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] { out[i] = Complete(port, prompts[i], max_tokens); });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

class DisaggE2eTest : public cleave::testing::CleaveServeTest {};

TEST_F(DisaggE2eTest, DisaggregatedAndMixedWorkersMatchColocatedGreedy) {
  constexpr int kMaxTokens = 24;
  const std::vector<std::string> prompts = Prompts(32);
  std::vector<Completion> single_ref, batch_ref, seeded_ref;
  {
    CleaveServer colocated("--threads 1");
    ASSERT_TRUE(colocated.ready()) << colocated.LogTail();
    for (int i = 0; i < 8; ++i)
      single_ref.push_back(Complete(colocated.port(), prompts[i], kMaxTokens));
    batch_ref = CompleteAll(colocated.port(), prompts, kMaxTokens);
    for (int i = 0; i < 3; ++i)
      seeded_ref.push_back(Complete(colocated.port(), prompts[i], kMaxTokens, 1000 + i));
  }
  int num_long = 0;  // the comparison must cover many decode steps, not just first tokens
  for (const Completion& c : single_ref) {
    ASSERT_EQ(c.status, 200) << c.error;
    num_long += c.tokens.size() == size_t(kMaxTokens);
  }
  ASSERT_GE(num_long, 4);
  // KV over TCP, then through the decode worker's shared-memory cache (same host), streamed
  // layer by layer during the prefill (one request at a time: the prefill queue is empty); then
  // over TCP pulled after the prefill (layer-wise off).
  for (const auto& [transport, layerwise] :
       std::vector<std::pair<std::string, bool>>{{"tcp", true}, {"shm", true}, {"tcp", false}}) {
    SCOPED_TRACE("--kv-transport " + transport + (layerwise ? " layer-wise" : " after prefill"));
    CleaveServer disagg(
        "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
        "--kv-transport " +
        transport + (layerwise ? "" : " --layerwise-kv-queue-limit -1"));
    ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
    std::vector<Completion> single;
    for (int i = 0; i < 8; ++i) single.push_back(Complete(disagg.port(), prompts[i], kMaxTokens));
    cleave::testing::ExpectSameCompletions(single_ref, single, "disaggregated, one at a time");
    const double streamed =
        MetricValue(disagg.port(), "cleave:kv_transfers_total", "mode=\"layerwise\"");
    const double pulled =
        MetricValue(disagg.port(), "cleave:kv_transfers_total", "mode=\"after_prefill\"");
    // (A prompt that ends at its first token transfers nothing.)
    EXPECT_GE(layerwise ? streamed : pulled, 4);
    EXPECT_EQ(layerwise ? pulled : streamed, 0);
    // The transport asked for is the one used (a forced shm pull that cannot map would fail).
    EXPECT_EQ(disagg.LogContains("over shared memory"), transport == "shm") << disagg.LogTail();
    cleave::testing::ExpectSameCompletions(
        batch_ref, CompleteAll(disagg.port(), prompts, kMaxTokens), "disaggregated, 32 at once");
    cleave::testing::ExpectAllKvBlocksFree(disagg);
    // Seeded sampling: the decode worker continues the prefill worker's random stream.
    std::vector<Completion> seeded;
    for (int i = 0; i < 3; ++i)
      seeded.push_back(Complete(disagg.port(), prompts[i], kMaxTokens, 1000 + i));
    cleave::testing::ExpectSameCompletions(seeded_ref, seeded,
                                           "disaggregated, seeded temperature 0.8");
    EXPECT_NE(seeded_ref[0].tokens, single_ref[0].tokens) << "the seeded run was greedy";
    // max_tokens 1: the prefill worker's token is the whole answer, nothing is staged.
    Completion one = Complete(disagg.port(), prompts[0], 1);
    ASSERT_EQ(one.status, 200) << one.error;
    EXPECT_EQ(one.tokens, std::vector<std::string>(single_ref[0].tokens.begin(),
                                                   single_ref[0].tokens.begin() + 1));
    cleave::testing::ExpectAllKvBlocksFree(disagg);
  }
  {
    CleaveServer mixed("--mixed-workers 1 --threads 1");
    ASSERT_TRUE(mixed.ready()) << mixed.LogTail();
    cleave::testing::ExpectSameCompletions(
        batch_ref, CompleteAll(mixed.port(), prompts, kMaxTokens), "mixed worker");
    cleave::testing::ExpectAllKvBlocksFree(mixed);
  }
}

// kill -9 of the only decode worker with restarts off: nothing can serve its requests, so they
// end promptly with a clear error (never hang), later requests are refused with a clear error,
// /health says 503, and the frontend keeps answering. (Migration and restarts:
// failover_e2e_test.cc.)
TEST_F(DisaggE2eTest, KilledDecodeWorkerFailsItsRequestsClearly) {
  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--worker-restarts 0");
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const pid_t decode_pid = disagg.WorkerPid("decode");
  ASSERT_GT(decode_pid, 0) << disagg.LogTail();
  const std::vector<std::string> prompts = Prompts(4);
  std::vector<Completion> results(prompts.size());
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = Complete(disagg.port(), prompts[i], 2000); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(cleave::testing::SignalPid(decode_pid, SIGKILL), 0);
  for (std::thread& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  int num_failed = 0;
  for (const Completion& c : results) {
    if (c.status == 200) continue;  // finished (EOS) before the kill
    ++num_failed;
    EXPECT_EQ(c.status, 500) << c.error;
    EXPECT_NE(c.error.find("died"), std::string::npos) << c.error;
  }
  EXPECT_GT(num_failed, 0) << "no request was in flight at the kill";
  Completion after = Complete(disagg.port(), prompts[0], 8);
  EXPECT_EQ(after.status, 503) << after.error;
  EXPECT_NE(after.error.find("no worker"), std::string::npos) << after.error;
  httplib::Client c("127.0.0.1", disagg.port());
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503) << health->body;
  EXPECT_NE(health->body.find("\"alive\":false"), std::string::npos) << health->body;
}

// Local workers and a worker that joins from another host (here: the same one, over TCP) serve
// behind one router: the joined decode worker is adopted next to the local pair, and when the
// local decode worker dies (restarts off) the joined one carries the requests, with the same
// greedy text as a colocated server.
TEST_F(DisaggE2eTest, LocalAndJoinedWorkersServeTogether) {
  const std::vector<std::string> prompts = Prompts(4);
  std::vector<Completion> ref;
  {
    CleaveServer colocated("--threads 1");
    ASSERT_TRUE(colocated.ready()) << colocated.LogTail();
    ref = CompleteAll(colocated.port(), prompts, 16);
  }
  const std::string env = "CLEAVE_CLUSTER_SECRET=local-and-joined-workers-secret";
  const std::string join_at = "127.0.0.1:" + std::to_string(cleave::testing::FreePort());
  CleaveServer frontend(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--worker-restarts 0 --accept-workers " +
          join_at,
      env);
  ASSERT_TRUE(frontend.ready()) << frontend.LogTail();
  // Not an HTTP server: "ready" never comes; the process runs until the end of the test.
  cleave::testing::ServerProcess joined(cleave::testing::CleaveBinary() +
                                            " worker --role decode --threads 1 -m " +
                                            cleave::testing::DefaultModelPath() +
                                            " --kv-cache-tokens 4096 --listen 127.0.0.1:0 "
                                            "--join " +
                                            join_at,
                                        0.2, env);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  httplib::Client c("127.0.0.1", frontend.port());
  auto workers_alive = [&] {
    auto health = c.Get("/health");
    if (!health) return -1;
    const json h = json::parse(health->body, nullptr, false);
    int alive = 0;
    for (const json& w : h.value("workers", json::array())) alive += w.value("alive", false);
    return alive;
  };
  while (workers_alive() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(workers_alive(), 3) << frontend.LogTail() << joined.LogTail();
  cleave::testing::ExpectSameCompletions(ref, CompleteAll(frontend.port(), prompts, 16),
                                         "local and joined workers");
  const pid_t local_decode = frontend.WorkerPid("decode");
  ASSERT_GT(local_decode, 0) << frontend.LogTail();
  ASSERT_EQ(cleave::testing::SignalPid(local_decode, SIGKILL), 0);
  while (workers_alive() != 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(workers_alive(), 2) << frontend.LogTail();
  cleave::testing::ExpectSameCompletions(ref, CompleteAll(frontend.port(), prompts, 16),
                                         "joined decode worker alone");
  cleave::testing::ExpectAllKvBlocksFree(frontend);
}

// A KV transfer cut mid-stream (fault injection) or stalled past --kv-transfer-timeout-s: the
// request is either re-prefilled (then its text is the normal greedy text) or fails with a clear
// "KV transfer failed" error, never hangs; no KV block stays reserved; the next requests work.
// Layer-wise (the KV streams during the prefill) and after the prefill (pulled).
void ExpectTransferFaultHandled(const std::string& fault, const std::string& reason,
                                bool layerwise) {
  SCOPED_TRACE(layerwise ? "layer-wise" : "after prefill");
  CleaveServer disagg(
      "--prefill-workers 1 --decode-workers 1 --prefill-threads 1 --decode-threads 1 "
      "--kv-transfer-timeout-s 1 --kv-transport tcp" +
          std::string(layerwise ? "" : " --layerwise-kv-queue-limit -1"),
      "CLEAVE_FAULT_KV=" + fault);
  ASSERT_TRUE(disagg.ready()) << disagg.LogTail();
  const std::vector<std::string> prompts = Prompts(8);
  const auto start = std::chrono::steady_clock::now();
  // Prompt 7 spans several blocks: 30 layers x 4+ blocks, far more frames than the fault's N.
  const Completion faulted = Complete(disagg.port(), prompts[7], 16);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  cleave::testing::ExpectAllKvBlocksFree(disagg);
  // The fault fires once: afterwards the same prompt goes through (over a new connection).
  const Completion after = Complete(disagg.port(), prompts[7], 16);
  ASSERT_EQ(after.status, 200) << after.error << disagg.LogTail();
  EXPECT_EQ(after.tokens.size(), 16u);
  std::printf("%s: first request -> %d %s\n", fault.c_str(), faulted.status,
              faulted.status == 200 ? "(re-prefilled)" : faulted.error.c_str());
  if (faulted.status == 200) {  // re-prefilled by the router
    EXPECT_EQ(faulted.tokens, after.tokens);
  } else {
    EXPECT_EQ(faulted.status, 500) << faulted.error;
    EXPECT_NE(faulted.error.find("KV transfer failed"), std::string::npos) << faulted.error;
    EXPECT_NE(faulted.error.find(reason), std::string::npos) << faulted.error;
  }
  cleave::testing::ExpectSameCompletions(
      std::vector<Completion>(4, after),
      CompleteAll(disagg.port(), std::vector<std::string>(4, prompts[7]), 16), "after the fault");
  cleave::testing::ExpectAllKvBlocksFree(disagg);
  EXPECT_TRUE(disagg.LogContains("fault injection armed")) << "the fault never fired";
}

TEST_F(DisaggE2eTest, CutKvTransferFailsOrRetriesAndLeaksNothing) {
  ExpectTransferFaultHandled("cut:5", "lost", true);
  ExpectTransferFaultHandled("cut:5", "lost", false);
}

TEST_F(DisaggE2eTest, StalledKvTransferTimesOutAndLeaksNothing) {
  ExpectTransferFaultHandled("stall:5", "stalled", true);
  ExpectTransferFaultHandled("stall:5", "stalled", false);
}

}  // namespace
}  // namespace cleave::cluster
