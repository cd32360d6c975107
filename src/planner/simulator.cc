#include "planner/simulator.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <queue>
#include <unordered_map>

#include "engine/block_pool.h"
#include "engine/sequence.h"
#include "planner/roofline.h"

namespace cleave::planner {
namespace {

enum class Role { kMixed, kPrefill, kDecode };

struct Instance {
  Role role = Role::kMixed;
  SimInstance spec;
  std::unique_ptr<BlockPool> pool;
  std::unique_ptr<Scheduler> scheduler;
  bool busy = false;
  ScheduledBatch batch;               // the step in flight
  int64_t pending_prompt_tokens = 0;  // assigned, not yet through prefill (routing)
  double link_free_at = 0;            // decode: when the ingress link finishes queued transfers
};

struct ReqState {
  int prefill_inst = -1;
  int decode_inst = -1;
  int32_t produced = 0;
  std::vector<BlockId> held;  // prefill blocks kept until the decode instance pulls the KV
  bool done = false;
};

enum class EventKind { kArrival, kStepDone, kTransferDone };

struct Event {
  double time;
  uint64_t order;  // FIFO among simultaneous events
  EventKind kind;
  int index;  // request (arrival, transfer) or instance (step)
  bool operator>(const Event& o) const { return time != o.time ? time > o.time : order > o.order; }
};

class Sim {
 public:
  Sim(const SimCluster& cluster, const std::vector<SimRequest>& requests, const SimOptions& options)
      : cluster_(cluster), requests_(requests), options_(options), state_(requests.size()) {
    result_.records.resize(requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      bench::RequestRecord& r = result_.records[i];
      r.index = int64_t(i);
      r.send_time_s = requests[i].arrival_s;
      r.prompt_tokens = requests[i].prompt_tokens;
      r.expected_output_tokens = requests[i].output_tokens;
    }
    auto add = [&](const std::vector<SimInstance>& specs, Role role) {
      for (const SimInstance& s : specs) {
        Instance inst;
        inst.role = role;
        inst.spec = s;
        const int64_t blocks = s.cost->kv_capacity_tokens() / s.block_size;
        inst.pool = std::make_unique<BlockPool>(int32_t(std::min<int64_t>(blocks, 1 << 30)),
                                                s.block_size, /*enable_prefix_caching=*/false);
        inst.scheduler = std::make_unique<Scheduler>(s.scheduler, inst.pool.get());
        (role == Role::kMixed     ? mixed_
         : role == Role::kPrefill ? prefill_
                                  : decode_)
            .push_back(int(instances_.size()));
        instances_.push_back(std::move(inst));
      }
    };
    add(cluster.colocated, Role::kMixed);
    add(cluster.prefill, Role::kPrefill);
    add(cluster.decode, Role::kDecode);
  }

  SimResult Run() {
    for (size_t i = 0; i < requests_.size(); ++i) {
      Push(requests_[i].arrival_s, EventKind::kArrival, int(i));
    }
    while (!events_.empty()) {
      Event e = events_.top();
      if (options_.horizon_s > 0 && e.time > options_.horizon_s) break;
      events_.pop();
      now_ = e.time;
      switch (e.kind) {
        case EventKind::kArrival:
          OnArrival(e.index);
          break;
        case EventKind::kStepDone:
          OnStepDone(e.index);
          break;
        case EventKind::kTransferDone:
          OnTransferDone(e.index);
          break;
      }
    }
    for (size_t i = 0; i < state_.size(); ++i) {
      if (!state_[i].done) Fail(int(i), "cut off at the simulation horizon");
    }
    result_.end_time_s = now_;
    for (const Instance& inst : instances_) {
      result_.num_preemptions += inst.scheduler->num_preemptions();
    }
    if (num_transfers_ > 0) result_.mean_transfer_s = transfer_sum_s_ / double(num_transfers_);
    return std::move(result_);
  }

 private:
  void Push(double time, EventKind kind, int index) {
    events_.push(Event{time, next_order_++, kind, index});
  }

  std::unique_ptr<Sequence> NewSequence(int req) {
    std::vector<TokenId> prompt(size_t(requests_[req].prompt_tokens), 0);
    return std::make_unique<Sequence>(RequestId(req), std::move(prompt), SamplingParams{}, 0,
                                      uint64_t(req), requests_[req].arrival_s);
  }

  // The instance of `ids` with the fewest prompt tokens still to prefill, then fewest running.
  int LeastLoaded(const std::vector<int>& ids) const {
    int best = ids.front();
    for (int id : ids) {
      const Instance& a = instances_[id];
      const Instance& b = instances_[best];
      if (a.pending_prompt_tokens < b.pending_prompt_tokens ||
          (a.pending_prompt_tokens == b.pending_prompt_tokens &&
           a.scheduler->num_running() < b.scheduler->num_running())) {
        best = id;
      }
    }
    return best;
  }

  void OnArrival(int req) {
    const std::vector<int>& front = !mixed_.empty() ? mixed_ : prefill_;
    if (front.empty()) {  // decode-only: the KV is already there
      Record(req).chunk_times_s.push_back(0);
      Record(req).ttft_s = 0;
      state_[req].produced = 1;
      if (requests_[req].output_tokens == 1) {
        Complete(req);
        return;
      }
      bridge_.push_back(req);
      DispatchBridge();
      return;
    }
    const int inst = LeastLoaded(front);
    state_[req].prefill_inst = inst;
    instances_[inst].pending_prompt_tokens += requests_[req].prompt_tokens;
    instances_[inst].scheduler->Add(NewSequence(req));
    Kick(inst);
  }

  bench::RequestRecord& Record(int req) { return result_.records[req]; }

  void Complete(int req) {
    ReqState& st = state_[req];
    st.done = true;
    bench::RequestRecord& r = Record(req);
    r.success = true;
    r.output_tokens = st.produced;
    r.latency_s = r.chunk_times_s.empty() ? 0 : r.chunk_times_s.back();
  }

  void Fail(int req, const char* why) {
    ReqState& st = state_[req];
    st.done = true;
    Record(req).success = false;
    Record(req).error = why;
    Record(req).output_tokens = st.produced;
  }

  // Starts a step on an idle instance if its scheduler has work.
  void Kick(int id) {
    Instance& inst = instances_[id];
    if (inst.busy) return;
    inst.batch = inst.scheduler->Schedule();
    for (RequestId failed : inst.batch.failed) {
      inst.scheduler->Finish(failed, FinishReason::kCapacity);
      if (inst.role != Role::kDecode) {
        inst.pending_prompt_tokens -= requests_[failed].prompt_tokens;
      }
      Fail(int(failed), "needs more KV than the instance holds");
    }
    if (inst.batch.empty()) return;
    StepShape shape;
    for (const ScheduledSeq& s : inst.batch.seqs) {
      if (s.num_tokens == 1 && s.start > 0) {
        ++shape.decode_seqs;
        shape.decode_context += s.start;
      } else {
        const double n = s.num_tokens;
        const double sq = n * n + 2.0 * n * double(s.start);
        ++shape.prefill_seqs;
        shape.prefill_tokens += s.num_tokens;
        shape.prefill_sq += sq;
        shape.prefill_context += s.start;
        if (s.num_tokens > shape.largest_prefill_tokens) {
          shape.largest_prefill_tokens = s.num_tokens;
          shape.largest_prefill_sq = sq;
        }
      }
    }
    inst.busy = true;
    ++result_.num_steps;
    Push(now_ + inst.spec.cost->StepTime(shape), EventKind::kStepDone, id);
  }

  void OnStepDone(int id) {
    Instance& inst = instances_[id];
    inst.busy = false;
    Scheduler& sched = *inst.scheduler;
    sched.OnBatchComputed(inst.batch);
    bool freed = false;
    for (const ScheduledSeq& s : inst.batch.seqs) {
      if (!s.needs_logits) continue;
      Sequence* seq = sched.Find(s.request_id);
      if (seq == nullptr || seq->status != SequenceStatus::kRunning) continue;
      const int req = int(s.request_id);
      ReqState& st = state_[req];
      bench::RequestRecord& rec = Record(req);
      const double t = now_ - requests_[req].arrival_s;
      ++st.produced;
      rec.chunk_times_s.push_back(t);
      if (st.produced == 1) {
        rec.ttft_s = t;
        if (inst.role != Role::kDecode) inst.pending_prompt_tokens -= requests_[req].prompt_tokens;
      }
      if (st.produced >= requests_[req].output_tokens) {
        sched.Finish(s.request_id, FinishReason::kLength);
        Complete(req);
        freed = true;
        continue;
      }
      if (inst.role == Role::kPrefill) {
        if (decode_.empty()) {  // prefill-only: the request ends at its first token
          sched.Finish(s.request_id, FinishReason::kLength);
          Complete(req);
          freed = true;
          continue;
        }
        // Keep the prompt's KV (the blocks the sequence held) until a decode instance pulls it.
        const int32_t n = inst.pool->BlocksFor(requests_[req].prompt_tokens);
        sched.Finish(s.request_id, FinishReason::kStop);
        CLEAVE_CHECK(inst.pool->Allocate(n, &st.held), "prefill blocks vanished");
        bridge_.push_back(req);
        continue;
      }
      seq->AppendToken(0);
    }
    if (inst.role == Role::kPrefill || (inst.role == Role::kDecode && freed)) DispatchBridge();
    Kick(id);
  }

  // Pull-based admission: hands the bridge queue's head, FCFS, to the decode instance with the
  // most free blocks among those that can hold it.
  void DispatchBridge() {
    while (!bridge_.empty()) {
      const int req = bridge_.front();
      int best = -1;
      int32_t best_free = 0;
      for (int id : decode_) {
        Instance& d = instances_[id];
        const int32_t need = d.pool->BlocksFor(requests_[req].prompt_tokens);
        const int32_t headroom = d.scheduler->num_running() + d.scheduler->num_waiting();
        const int32_t free = d.pool->num_free_blocks();
        if (free >= need + headroom && free > best_free) {
          best = id;
          best_free = free;
        }
      }
      if (best < 0) {
        // Nothing can take it. If no decode instance could hold it even empty, fail it rather
        // than block the queue forever.
        bool ever = false;
        for (int id : decode_) {
          Instance& d = instances_[id];
          ever |= d.pool->BlocksFor(requests_[req].prompt_tokens + requests_[req].output_tokens) <=
                  d.pool->num_blocks();
        }
        if (ever) return;
        bridge_.pop_front();
        ReleaseHeld(req);
        Fail(req, "needs more KV than a decode instance holds");
        continue;
      }
      bridge_.pop_front();
      Instance& d = instances_[best];
      ReqState& st = state_[req];
      st.decode_inst = best;
      std::vector<BlockId> blocks;
      CLEAVE_CHECK(d.pool->Allocate(d.pool->BlocksFor(requests_[req].prompt_tokens), &blocks));
      pending_blocks_.emplace(req, std::move(blocks));
      double done = now_;
      if (st.prefill_inst >= 0) {
        const Instance& p = instances_[st.prefill_inst];
        const double bw =
            p.spec.node == d.spec.node ? cluster_.same_node_bw : cluster_.cross_node_bw;
        const double bytes =
            double(d.spec.cost->kv_bytes_per_token()) * double(requests_[req].prompt_tokens);
        const double start = std::max(now_, d.link_free_at);
        done = start + TransferTime(bytes, bw, std::min(p.spec.lanes, d.spec.lanes));
        d.link_free_at = done;
        transfer_sum_s_ += done - now_;
        result_.max_transfer_s = std::max(result_.max_transfer_s, done - now_);
        ++num_transfers_;
      }
      Push(done, EventKind::kTransferDone, req);
    }
  }

  void ReleaseHeld(int req) {
    ReqState& st = state_[req];
    if (st.held.empty()) return;
    Instance& p = instances_[st.prefill_inst];
    std::reverse(st.held.begin(), st.held.end());
    p.pool->Free(st.held);
    st.held.clear();
    Kick(st.prefill_inst);
  }

  void OnTransferDone(int req) {
    ReleaseHeld(req);
    ReqState& st = state_[req];
    Instance& d = instances_[st.decode_inst];
    auto it = pending_blocks_.find(req);
    CLEAVE_CHECK(it != pending_blocks_.end());
    std::unique_ptr<Sequence> seq = NewSequence(req);
    seq->AppendToken(0);  // the first output token, sampled by the prefill instance
    seq->block_table = std::move(it->second);
    seq->num_computed_tokens = requests_[req].prompt_tokens;
    pending_blocks_.erase(it);
    d.scheduler->AddPrefilled(std::move(seq));
    Kick(st.decode_inst);
  }

  const SimCluster& cluster_;
  const std::vector<SimRequest>& requests_;
  SimOptions options_;
  std::vector<Instance> instances_;
  std::vector<int> mixed_, prefill_, decode_;
  std::vector<ReqState> state_;
  std::deque<int> bridge_;  // finished prefills waiting for a decode instance, FCFS
  std::unordered_map<int, std::vector<BlockId>> pending_blocks_;  // decode blocks in transfer
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t next_order_ = 0;
  double now_ = 0;
  double transfer_sum_s_ = 0;
  int64_t num_transfers_ = 0;
  SimResult result_;
};

}  // namespace

Result<SimResult> Simulate(const SimCluster& cluster, const std::vector<SimRequest>& requests,
                           const SimOptions& options) {
  if (cluster.colocated.empty() && cluster.prefill.empty() && cluster.decode.empty()) {
    return InvalidArgument("simulated cluster has no instances");
  }
  if (!cluster.colocated.empty() && (!cluster.prefill.empty() || !cluster.decode.empty())) {
    return InvalidArgument("a cluster is either colocated or disaggregated");
  }
  if (!cluster.decode.empty() && !cluster.prefill.empty() &&
      !(cluster.same_node_bw > 0 && cluster.cross_node_bw > 0)) {
    return InvalidArgument("a disaggregated cluster needs positive link bandwidths");
  }
  auto check = [](const std::vector<SimInstance>& v) -> Status {
    for (const SimInstance& s : v) {
      if (s.cost == nullptr || s.block_size < 1) {
        return InvalidArgument("simulated instance needs a cost model and a block size");
      }
      if (s.cost->kv_capacity_tokens() < s.block_size) {
        return InvalidArgument("simulated instance has no room for KV");
      }
    }
    return Status::Ok();
  };
  CLEAVE_RETURN_IF_ERROR(check(cluster.colocated));
  CLEAVE_RETURN_IF_ERROR(check(cluster.prefill));
  CLEAVE_RETURN_IF_ERROR(check(cluster.decode));
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].prompt_tokens < 1 || requests[i].output_tokens < 1) {
      return InvalidArgument("simulated request {} needs >= 1 prompt and output token", i);
    }
    if (i > 0 && requests[i].arrival_s < requests[i - 1].arrival_s) {
      return InvalidArgument("simulated arrivals must not decrease");
    }
  }
  Sim sim(cluster, requests, options);
  return sim.Run();
}

}  // namespace cleave::planner
