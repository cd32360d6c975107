#include "core/thread_pool.h"

#include <chrono>
#include <thread>

#include "core/status.h"

namespace cleave {
namespace {

// How a waiting thread (a worker between sections, or the caller at the join) waits before it
// blocks on a futex: first a busy spin long enough to cover the serial gap between two kernels of
// one forward pass (so they do not each pay a wake-up), then a longer phase that yields the core
// between checks, so a runnable thread it waits for (or an HTTP handler on a machine with as many
// pool threads as cores) gets the core, while this one still needs no futex wake-up. Serving on
// 2 cores with a 20 us budget and no yielding phase, the worker slept and was woken several times
// per step: prompts took 15-30% longer than in `cleave profile` (more after idle gaps), and a
// chatbot load at 3 req/s ran at 7 context switches per token against 4.3 with this.
constexpr auto kBusySpin = std::chrono::microseconds(20);
constexpr auto kYieldingSpin = std::chrono::microseconds(200);
// Pauses between clock reads while spinning.
constexpr int kPausesPerCheck = 32;

inline void CpuRelax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

// Spins until done() or the budget runs out; returns done().
template <typename Done>
bool SpinUntil(Done done) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < kPausesPerCheck; ++i) {
      if (done()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() - start >= kBusySpin) break;
  }
  while (std::chrono::steady_clock::now() - start < kYieldingSpin) {
    if (done()) return true;
    std::this_thread::yield();
  }
  return done();
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunImpl(Thunk thunk, void* ctx, bool dynamic) {
  if (num_threads_ == 1) {
    thunk(ctx, 0, 1);
    return;
  }
  thunk_ = thunk;
  ctx_ = ctx;
  dynamic_ = dynamic;
  if (!dynamic) pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  join_.store(uint64_t{generation} << 32 | kOpen, std::memory_order_release);
  // seq_cst pairs with the worker's sleeping_workers_ increment before it blocks: either we
  // see it and notify, or it sees the new generation and does not block.
  generation_.store(generation, std::memory_order_seq_cst);
  if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
  thunk(ctx, 0, num_threads_);

  // Blocks until pred() holds: spin, then sleep on `word` (whose waker checks
  // caller_sleeping_ after its own seq_cst update, pairing with the store below).
  const auto wait_until = [this](auto& word, auto pred) {
    if (SpinUntil([&] { return pred(word.load(std::memory_order_acquire)); })) return;
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    for (auto v = word.load(std::memory_order_seq_cst); !pred(v);
         v = word.load(std::memory_order_seq_cst)) {
      word.wait(v, std::memory_order_seq_cst);
    }
    caller_sleeping_.store(false, std::memory_order_relaxed);
  };
  if (!dynamic) wait_until(pending_, [](int left) { return left == 0; });
  // Close the section: a worker arriving from now on skips it. Then wait for those inside
  // (in a dynamic section they finish the pieces they took; nothing else is left).
  join_.fetch_and(~kOpen, std::memory_order_acq_rel);
  wait_until(join_, [](uint64_t s) { return (s & kCountMask) == 0; });
}

bool ThreadPool::TryEnter(uint32_t generation) {
  uint64_t s = join_.load(std::memory_order_acquire);
  for (;;) {
    if ((s & kOpen) == 0 || static_cast<uint32_t>(s >> 32) != generation) return false;
    if (join_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      return true;
    }
  }
}

void ThreadPool::Leave() {
  const uint64_t now = join_.fetch_sub(1, std::memory_order_seq_cst) - 1;
  if ((now & (kOpen | kCountMask)) == 0 && caller_sleeping_.load(std::memory_order_seq_cst)) {
    join_.notify_all();
  }
}

void ThreadPool::WorkerLoop(int index) {
  // Workers are created before any Run(), at generation 0; reading generation_ here instead
  // could skip a Run() that started before this thread did.
  uint32_t seen = 0;
  for (;;) {
    if (!SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
      // wait() re-checks the value before blocking, so a section started before our increment
      // was visible is not missed.
      while (generation_.load(std::memory_order_seq_cst) == seen) {
        generation_.wait(seen, std::memory_order_seq_cst);
      }
      sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    // A section that closed while we were on our way (the caller did our share) is skipped;
    // only sections entered here may touch thunk_ / ctx_, which stay valid until we leave.
    if (!TryEnter(seen)) continue;
    thunk_(ctx_, index, num_threads_);
    // The last worker of a Run() wakes the caller if it stopped spinning (seq_cst pairs with
    // its caller_sleeping_ store before it re-reads pending_).
    if (!dynamic_ && pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_sleeping_.load(std::memory_order_seq_cst)) {
      pending_.notify_all();
    }
    Leave();
  }
}

}  // namespace cleave
