#include "bench/runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>

namespace cleave::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Counts finished requests for the live progress line; written by request threads.
struct Progress {
  std::atomic<int64_t> sent{0};
  std::atomic<int64_t> finished{0};
  std::atomic<int64_t> failed{0};
  std::atomic<int64_t> good{0};
};

void PrintProgress(const Progress& p, int64_t total, double rate, double elapsed_s, bool slo_set,
                   bool final_line) {
  int64_t finished = p.finished.load();
  std::string attain = slo_set && finished > 0
                           ? fmt::format(" | SLO met {:5.1f}%", 100.0 * p.good.load() / finished)
                           : "";
  constexpr int kBarWidth = 20;
  int filled = total > 0 ? static_cast<int>(kBarWidth * finished / total) : 0;
  std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '.');
  fmt::print(stderr, "\r[{}] rate {:g} req/s | sent {}/{} | done {} | failed {}{} | {:.1f} s   {}",
             bar, rate, p.sent.load(), total, finished, p.failed.load(), attain, elapsed_s,
             final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace

Result<RunResult> RunBenchmark(const RunOptions& options,
                               const std::vector<WorkloadRequest>& workload, double rate_rps) {
  CLEAVE_RETURN_IF_ERROR(ValidateClientConfig(options.client));
  if (workload.empty()) return InvalidArgument("empty workload");
  RunResult result;
  std::vector<double> send_times;
  if (options.replay_timestamps) {
    for (const WorkloadRequest& r : workload) {
      if (r.timestamp_s < 0) return InvalidArgument("workload has no timestamps to replay");
      send_times.push_back(r.timestamp_s);
    }
    double span = send_times.back() - send_times.front();
    result.rate_rps = span > 0 ? static_cast<double>(send_times.size() - 1) / span
                               : std::numeric_limits<double>::infinity();
    result.arrivals = "trace timestamps";
  } else {
    ArrivalSpec spec = MakeArrivalSpec(rate_rps, options.burstiness, options.fixed_interval);
    CLEAVE_RETURN_IF_ERROR(ValidateArrivalSpec(spec));
    send_times = ArrivalTimes(spec, static_cast<int64_t>(workload.size()), options.seed);
    result.rate_rps = rate_rps;
    result.arrivals = DescribeArrivals(spec);
  }
  const int64_t cap =
      options.max_concurrency > 0 ? std::min(options.max_concurrency, kMaxInFlight) : kMaxInFlight;
  result.max_concurrency = options.max_concurrency;

  // Warm-up: sequential, unmeasured; a failure here means the benchmark cannot work.
  for (int64_t i = 0; i < options.num_warmups; ++i) {
    const WorkloadRequest& r = workload[static_cast<size_t>(i) % workload.size()];
    RequestRecord rec = SendStreamingRequest(options.client, r, -1, Clock::now(), nullptr);
    if (!rec.success) {
      return Unavailable("warm-up request to {}{} failed: {}", options.client.base_url,
                         options.client.endpoint, rec.error);
    }
  }

  const int64_t n = static_cast<int64_t>(workload.size());
  result.records.resize(workload.size());
  std::vector<bool> sent(workload.size(), false);
  Progress progress;
  std::atomic<bool> cancel{false};
  std::mutex mu;
  std::condition_variable slot_freed;
  int64_t in_flight = 0;  // guarded by mu
  std::vector<std::thread> threads;
  threads.reserve(workload.size());

  const bool tty = isatty(STDERR_FILENO) != 0;
  const Clock::time_point start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  std::atomic<bool> ticker_stop{false};
  std::thread ticker;
  if (options.progress) {
    ticker = std::thread([&] {
      double last_print = -1e9;
      while (!ticker_stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        double t = elapsed();
        // On a terminal, redraw often; in a log, one line every 10 s.
        if (tty ? t - last_print >= 0.5 : t - last_print >= 10) {
          PrintProgress(progress, n, result.rate_rps, t, !options.slo.empty(), !tty);
          last_print = t;
        }
      }
    });
  }

  const double deadline =
      options.max_duration_s > 0 ? options.max_duration_s : std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const double at = send_times[static_cast<size_t>(i)];
    if (at >= deadline) break;
    std::this_thread::sleep_until(
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at)));
    {
      std::unique_lock lock(mu);
      // Wait for a free slot, but not past the deadline.
      auto until = std::isinf(deadline) ? Clock::time_point::max()
                                        : start + std::chrono::duration_cast<Clock::duration>(
                                                      std::chrono::duration<double>(deadline));
      if (!slot_freed.wait_until(lock, until, [&] { return in_flight < cap; })) break;
      ++in_flight;
    }
    sent[static_cast<size_t>(i)] = true;
    progress.sent.fetch_add(1);
    threads.emplace_back([&, i] {
      RequestRecord rec =
          SendStreamingRequest(options.client, workload[static_cast<size_t>(i)], i, start, &cancel);
      if (MeetsSlo(rec, options.slo)) progress.good.fetch_add(1);
      if (!rec.success) progress.failed.fetch_add(1);
      result.records[static_cast<size_t>(i)] = std::move(rec);
      progress.finished.fetch_add(1);
      {
        std::lock_guard lock(mu);
        --in_flight;
      }
      slot_freed.notify_one();
    });
  }
  if (!std::isinf(deadline)) {
    // In-flight requests are cancelled at the deadline (they notice at their next chunk or at
    // their own timeout, whichever comes first).
    std::unique_lock lock(mu);
    auto until = start + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(deadline));
    slot_freed.wait_until(lock, until, [&] { return in_flight == 0; });
    cancel.store(true);
  }
  for (std::thread& t : threads) t.join();
  result.duration_s = elapsed();
  ticker_stop.store(true);
  if (ticker.joinable()) ticker.join();
  if (options.progress) {
    PrintProgress(progress, n, result.rate_rps, result.duration_s, !options.slo.empty(), true);
  }

  // Keep only what was sent; measure duration from the first send.
  std::vector<RequestRecord> kept;
  for (size_t i = 0; i < sent.size(); ++i) {
    if (sent[i]) kept.push_back(std::move(result.records[i]));
  }
  result.not_sent = n - static_cast<int64_t>(kept.size());
  result.records = std::move(kept);
  return result;
}

}  // namespace cleave::bench
