// A fixed pool of worker threads for data-parallel kernels.
//
// The calling thread takes part as thread 0, so ThreadPool(1) runs everything inline and a
// pool of N threads starts N-1 workers. Both entry points are fork-joins: they return once all
// the work is done.
//
// Waiting: workers (between sections) and the caller (at the join) spin for a bounded ~20 us,
// then sleep on a futex (std::atomic::wait). The hundreds of small sections in one forward pass
// do not each pay a wake-up, and on an oversubscribed machine a waiting thread soon yields its
// core. Wake-ups go only to threads that are asleep, so the spinning fast path makes no system
// calls.
//
// ParallelFor hands out its range in pieces (a few per thread) from a shared counter, and a
// worker joins a section only if it arrives while the section is still open: when a worker has
// been descheduled (the machine is shared) the caller takes its pieces and returns without
// waiting for it to be scheduled again. Run() needs every thread and waits for all.
//
// Thread-safety: Run() and ParallelFor() must be called from one thread at a time (the owner).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace cleave {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(thread_index, num_threads) once on every thread; returns when all are done.
  template <typename F>
  void Run(F&& fn) {
    auto thunk = [](void* ctx, int index, int count) { (*static_cast<F*>(ctx))(index, count); };
    RunImpl(thunk, &fn, /*dynamic=*/false);
  }

  // Calls fn(begin, end) on non-overlapping, non-empty ranges covering [0, n), each starting at
  // a multiple of `grain`, from any of the threads (possibly several ranges on one thread).
  template <typename F>
  void ParallelFor(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    const int64_t chunks = (n + grain - 1) / grain;
    if (num_threads_ == 1 || chunks == 1) {
      fn(int64_t{0}, n);
      return;
    }
    const int64_t pieces = std::min<int64_t>(chunks, int64_t{num_threads_} * kPiecesPerThread);
    const int64_t piece_len = (chunks + pieces - 1) / pieces * grain;
    std::atomic<int64_t> next{0};
    auto body = [&](int, int) {
      for (;;) {
        const int64_t begin = next.fetch_add(1, std::memory_order_relaxed) * piece_len;
        if (begin >= n) return;
        fn(begin, std::min(n, begin + piece_len));
      }
    };
    auto thunk = [](void* ctx, int index, int count) {
      (*static_cast<decltype(body)*>(ctx))(index, count);
    };
    RunImpl(thunk, &body, /*dynamic=*/true);
  }

 private:
  using Thunk = void (*)(void* ctx, int index, int count);
  // ParallelFor pieces per thread: enough to rebalance when a thread is late or descheduled.
  static constexpr int kPiecesPerThread = 4;
  // join_ layout: generation << 32 | kOpen | number of workers inside the section.
  static constexpr uint64_t kOpen = uint64_t{1} << 31;
  static constexpr uint64_t kCountMask = kOpen - 1;

  void RunImpl(Thunk thunk, void* ctx, bool dynamic);
  void WorkerLoop(int index);
  bool TryEnter(uint32_t generation);
  void Leave();

  int num_threads_;
  std::vector<std::thread> workers_;
  // The current section; written by the caller only while no worker is inside it.
  Thunk thunk_ = nullptr;
  void* ctx_ = nullptr;
  bool dynamic_ = false;
  std::atomic<uint32_t> generation_{0};       // bumped to start a section (workers wait on it)
  std::atomic<uint64_t> join_{0};             // see kOpen; workers enter and leave through it
  std::atomic<int> pending_{0};               // Run(): workers that have not finished yet
  std::atomic<int> sleeping_workers_{0};      // workers blocked in generation_.wait()
  std::atomic<bool> caller_sleeping_{false};  // the caller is blocked in a wait()
  std::atomic<bool> stop_{false};
};

}  // namespace cleave
