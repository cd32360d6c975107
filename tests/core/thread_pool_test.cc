#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

namespace cleave {
namespace {

TEST(ThreadPoolTest, RunVisitsEveryThreadOnce) {
  for (int n : {1, 2, 3, 8}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> hits(n);
    for (int rep = 0; rep < 100; ++rep) {
      pool.Run([&](int index, int count) {
        EXPECT_EQ(count, n);
        hits[index].fetch_add(1);
      });
    }
    for (int i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 100) << "thread " << i;
  }
}

TEST(ThreadPoolTest, ParallelForCoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 5, 63, 64, 65, 1000}) {
    for (int64_t grain : {1, 4, 16}) {
      std::vector<std::atomic<int>> seen(n);
      pool.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
        EXPECT_EQ(begin % grain, 0);
        for (int64_t i = begin; i < end; ++i) seen[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << n << " " << grain << " " << i;
    }
  }
}

TEST(ThreadPoolTest, ManySmallSectionsSumCorrectly) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  for (int rep = 0; rep < 20000; ++rep) {
    pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  }
  EXPECT_EQ(total.load(), 200000);
}

// Far more threads than cores (this suite runs on 2): 8 owners each drive a 2-thread pool
// through many tiny sections. Every section must run exactly once per thread, and the whole
// thing must finish: a pool whose waiters spin without bound would take minutes here, as its
// spinners hold the cores the threads they wait for need. The bound is deliberately loose.
TEST(ThreadPoolTest, OversubscribedPoolsFinishAndStayCorrect) {
  constexpr int kPools = 8;
  constexpr int kSections = 2000;
  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int p = 0; p < kPools; ++p) pools.push_back(std::make_unique<ThreadPool>(2));
  std::vector<int64_t> totals(kPools, 0);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> owners;
  for (int p = 0; p < kPools; ++p) {
    owners.emplace_back([&, p] {
      std::atomic<int64_t> total{0};
      for (int rep = 0; rep < kSections; ++rep) {
        pools[p]->ParallelFor(16, 1, [&](int64_t b, int64_t e) {
          int64_t sum = 0;
          for (int64_t i = b; i < e; ++i) sum += i;
          total.fetch_add(sum);
        });
      }
      totals[p] = total.load();
    });
  }
  for (auto& t : owners) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int p = 0; p < kPools; ++p) EXPECT_EQ(totals[p], int64_t{kSections} * 120) << "pool " << p;
  EXPECT_LT(seconds, 60.0);
}

// A worker that went to sleep (idle longer than the spin budget) must still be woken for the
// next section, and the caller woken when a slow worker finishes.
TEST(ThreadPoolTest, WakesSleepingWorkersAndCaller) {
  ThreadPool pool(3);
  for (int rep = 0; rep < 20; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::vector<std::atomic<int>> hits(3);
    pool.Run([&](int index, int) {
      if (index == 2 && rep % 2 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
      hits[index].fetch_add(1);
    });
    for (int i = 0; i < 3; ++i) ASSERT_EQ(hits[i].load(), 1) << rep << " " << i;
  }
}

}  // namespace
}  // namespace cleave
