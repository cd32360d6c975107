// Discrete-event simulator of a serving cluster on a simulated clock.
//
// Each instance runs the REAL engine Scheduler and BlockPool (engine/scheduler.h): the
// simulator only replaces the executor (a step takes CostModel::StepTime of the batch it was
// given) and the clock. So chunked prefill, admission, block accounting and preemption behave
// exactly as in `cleave serve`, and change with it.
//
// Cluster kinds:
//   colocated      mixed instances; a request goes to the instance with the fewest prompt
//                  tokens not yet prefilled, and is served there start to finish.
//   disaggregated  P prefill + D decode instances. A prefill instance computes the prompt and
//                  the first token (TTFT), then holds the KV (its blocks stay allocated) in a
//                  FCFS "bridge" queue. Admission is pull-based, as in DistServe: a decode
//                  instance takes the head of the queue only when it has the blocks for it
//                  (plus one free block per running sequence, so admitting does not force a
//                  preemption next step); the KV then moves over the instances' link (queued
//                  behind earlier transfers into the same decode instance), the prefill
//                  instance frees its blocks, and the decode instance continues the sequence
//                  through Scheduler::AddPrefilled.
//   prefill-only   prefill instances and no decode ones: requests end at their first token
//                  (DistServe Algorithm 1's per-phase search).
//   decode-only    decode instances only: requests arrive with their KV in place, as if
//                  prefilled and transferred at no cost (the other half of Algorithm 1).
// Output: one bench::RequestRecord per request (TTFT, token times), so attainment is computed
// by the same code `cleave bench` uses (bench/metrics.h).
// Thread-safety: Simulate is reentrant; cost models are shared read-only.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/metrics.h"
#include "core/status.h"
#include "engine/scheduler.h"
#include "planner/cost_model.h"

namespace cleave::planner {

struct SimRequest {
  double arrival_s = 0;
  int32_t prompt_tokens = 1;
  int32_t output_tokens = 1;
};

struct SimInstance {
  const CostModel* cost = nullptr;  // not owned; outlives the simulation
  SchedulerConfig scheduler{};
  int32_t block_size = 16;
  int node = 0;   // for choosing the KV transfer link
  int lanes = 1;  // GPU pairs a KV transfer into or out of this instance can use in parallel
};

struct SimCluster {
  std::vector<SimInstance> colocated;
  std::vector<SimInstance> prefill;
  std::vector<SimInstance> decode;
  double same_node_bw = 0;   // bytes/s per lane between instances on one node
  double cross_node_bw = 0;  // bytes/s per lane between nodes
};

struct SimOptions {
  // Simulated time after which unfinished requests are cut off and count as failed (so that an
  // overloaded probe ends quickly); <= 0: run to completion.
  double horizon_s = 0;
};

struct SimResult {
  std::vector<bench::RequestRecord> records;  // in request order
  double end_time_s = 0;
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  double mean_transfer_s = 0;  // KV transfer time per request (disaggregated)
  double max_transfer_s = 0;
};

// Runs the cluster on `requests` (arrival_s non-decreasing). Errors: an empty or inconsistent
// cluster.
Result<SimResult> Simulate(const SimCluster& cluster, const std::vector<SimRequest>& requests,
                           const SimOptions& options = {});

}  // namespace cleave::planner
