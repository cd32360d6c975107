// A fixed pool of worker threads for data-parallel kernels.
//
// The calling thread takes part as thread 0, so ThreadPool(1) runs everything inline and a
// pool of N threads starts N-1 workers. Run() is a fork-join: it returns once every thread
// has finished its share. Workers (between sections) and the caller (at the join) spin for a
// bounded ~20 us before sleeping on a futex (std::atomic::wait): the hundreds of small parallel
// sections in one forward pass do not each pay a wake-up, and on an oversubscribed machine a
// waiting thread soon yields its core to the thread it waits for. Wake-ups are only issued to
// threads that are actually asleep, so the spinning fast path makes no system calls.
//
// Thread-safety: Run() must be called from one thread at a time (the owner of the pool).
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
    RunImpl(thunk, &fn);
  }

  // Splits [0, n) into num_threads contiguous ranges, rounded to multiples of `grain`, and calls
  // fn(begin, end) for each non-empty one.
  template <typename F>
  void ParallelFor(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t chunks = (n + grain - 1) / grain;
    if (num_threads_ == 1 || chunks == 1) {
      fn(int64_t{0}, n);
      return;
    }
    Run([&](int index, int count) {
      int64_t per = (chunks + count - 1) / count;
      int64_t begin = std::min(n, index * per * grain);
      int64_t end = std::min(n, (index + 1) * per * grain);
      if (begin < end) fn(begin, end);
    });
  }

 private:
  using Thunk = void (*)(void* ctx, int index, int count);
  void RunImpl(Thunk thunk, void* ctx);
  void WorkerLoop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  Thunk thunk_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};               // workers still running the current section
  std::atomic<int> sleeping_workers_{0};      // workers blocked in generation_.wait()
  std::atomic<bool> caller_sleeping_{false};  // the caller is blocked in pending_.wait()
  std::atomic<bool> stop_{false};
};

}  // namespace cleave
