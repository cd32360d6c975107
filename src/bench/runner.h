// Runs a workload against a server at one request rate: open-loop arrivals, a warm-up that is
// not measured, a concurrency cap, bounded total requests and duration, and a live progress
// line on stderr.
//
// Open loop: each request is sent at its scheduled arrival time on its own thread, whether or
// not earlier ones have finished (only --max-concurrency makes later requests wait). So a slow
// server shows up as growing TTFT, not as a lower offered rate.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/arrivals.h"
#include "bench/client.h"
#include "bench/metrics.h"
#include "bench/workload.h"
#include "core/status.h"

namespace cleave::bench {

struct RunOptions {
  ClientConfig client;
  double burstiness = 1.0;         // gamma shape; 1 = Poisson
  bool fixed_interval = false;     // constant gaps instead of random ones
  bool replay_timestamps = false;  // send at the workload's trace timestamps (rate ignored)
  int64_t max_concurrency = 0;     // 0 = no cap (beyond kMaxInFlight)
  int64_t num_warmups = 1;         // sent one by one before the measured run, then discarded
  double max_duration_s = 0;       // > 0: stop sending at this time and cancel what is in flight
  uint64_t seed = 0;
  bool progress = true;  // live line on stderr
  Slo slo;               // for the live attainment figure
};

// Hard cap on requests in flight at once (threads), whatever the options say.
inline constexpr int64_t kMaxInFlight = 1024;

struct RunResult {
  double rate_rps = 0;   // configured rate (inf for all-at-once; measured for trace replay)
  std::string arrivals;  // human description of the arrival process
  int64_t max_concurrency = 0;
  std::vector<RequestRecord> records;  // measured requests only, in workload order
  double duration_s = 0;               // first send to last completion
  int64_t not_sent = 0;                // requests skipped because max_duration_s was reached
};

// Sends every request in `workload` (num_warmups extra ones first, unmeasured). Fails only if
// the options are invalid or a warm-up request fails (the server is down or rejects the
// requests); failures during the measured run are recorded per request.
Result<RunResult> RunBenchmark(const RunOptions& options,
                               const std::vector<WorkloadRequest>& workload, double rate_rps);

}  // namespace cleave::bench
