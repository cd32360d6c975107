// Metric math against hand-computed cases: percentiles (numpy 'linear'), TPOT, joint SLO
// attainment, request_goodput, and the goodput bisection on synthetic attainment curves.
#include "bench/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace cleave::bench {
namespace {

RequestRecord Rec(double send, double ttft, std::vector<double> chunks, int64_t out_tokens,
                  double latency) {
  RequestRecord r;
  r.success = true;
  r.send_time_s = send;
  r.ttft_s = ttft;
  r.chunk_times_s = std::move(chunks);
  r.output_tokens = out_tokens;
  r.latency_s = latency;
  r.prompt_tokens = 10;
  return r;
}

TEST(PercentileTest, MatchesNumpyLinearByHand) {
  // numpy.percentile([1, 2, 3, 4], p): rank = 3 * p / 100.
  std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);
  EXPECT_NEAR(Percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4.0);
  std::vector<double> w = {50, 10, 40, 20, 30};
  EXPECT_DOUBLE_EQ(Percentile(w, 25), 20.0);  // rank 1 exactly
  EXPECT_DOUBLE_EQ(Percentile(w, 10), 14.0);  // rank 0.4 between 10 and 20
  EXPECT_DOUBLE_EQ(Percentile({7.0}, 99), 7.0);
  EXPECT_TRUE(std::isnan(Percentile({}, 50)));
}

TEST(TpotTest, SpanOverTokensMinusOne) {
  // Chunks at 0.1, 0.2, 0.4 s with 3 tokens: (0.4 - 0.1) / 2.
  EXPECT_NEAR(*Tpot(Rec(0, 0.1, {0.1, 0.2, 0.4}, 3, 0.5)), 0.15, 1e-12);
  // Multi-token chunks: usage says 5 tokens over the same span -> 0.3 / 4.
  EXPECT_NEAR(*Tpot(Rec(0, 0.1, {0.1, 0.2, 0.4}, 5, 0.5)), 0.075, 1e-12);
  auto itl = InterTokenLatencies(Rec(0, 0.1, {0.1, 0.2, 0.4}, 3, 0.5));
  ASSERT_EQ(itl.size(), 2u);
  EXPECT_NEAR(itl[0], 0.1, 1e-12);
  EXPECT_NEAR(itl[1], 0.2, 1e-12);
}

TEST(TpotTest, OneOutputTokenIsUndefinedButMeetsTpotSlo) {
  RequestRecord one = Rec(0, 0.05, {0.05}, 1, 0.06);
  EXPECT_FALSE(Tpot(one).has_value());
  Slo slo;
  slo.ttft_ms = 100;
  slo.tpot_ms = 1;  // impossible for any multi-token request here
  EXPECT_TRUE(MeetsSlo(one, slo));
  // ... and it is excluded from TPOT statistics but counted everywhere else.
  RequestRecord two = Rec(0, 0.05, {0.05, 0.15}, 2, 0.2);
  BenchmarkMetrics m = ComputeMetrics({one, two}, 1.0, slo, {90});
  EXPECT_EQ(m.tpot.count, 1);
  EXPECT_NEAR(m.tpot.mean_ms, 100.0, 1e-9);
  EXPECT_EQ(m.ttft.count, 2);
  EXPECT_NEAR(m.slo_attainment, 0.5, 1e-12);  // `two` misses TPOT
}

TEST(AttainmentTest, JointPerRequestNotPerMetric) {
  Slo slo;
  slo.ttft_ms = 200;
  slo.tpot_ms = 20;
  // A meets both; B misses TTFT; C misses TPOT; D failed.
  RequestRecord a = Rec(0.0, 0.100, {0.100, 0.110, 0.120}, 3, 0.13);
  RequestRecord b = Rec(0.1, 0.300, {0.300, 0.310, 0.320}, 3, 0.33);
  RequestRecord c = Rec(0.2, 0.100, {0.100, 0.150, 0.200}, 3, 0.21);
  RequestRecord d;
  d.success = false;
  d.error = "HTTP 503";
  d.send_time_s = 0.3;
  d.latency_s = 0.01;
  std::vector<RequestRecord> all = {a, b, c, d};
  // Each metric alone is met by 2 of the 3 completed, but only A meets both: 1 / 4.
  EXPECT_DOUBLE_EQ(Attainment(all, slo), 0.25);
  BenchmarkMetrics m = ComputeMetrics(all, 2.0, slo, {50, 99});
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 1);
  EXPECT_DOUBLE_EQ(m.slo_attainment, 0.25);
  EXPECT_DOUBLE_EQ(m.request_goodput, 0.5);     // 1 good / 2 s
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.5);  // 3 completed / 2 s
  EXPECT_DOUBLE_EQ(m.output_throughput, 4.5);   // 9 tokens / 2 s
  EXPECT_EQ(m.total_input_tokens, 30);
  // TTFTs 100, 300, 100 ms: mean 166.67, median 100, p99 = 100 + 0.98 * 200 (rank 1.98).
  EXPECT_NEAR(m.ttft.mean_ms, 500.0 / 3, 1e-9);
  EXPECT_NEAR(m.ttft.median_ms, 100.0, 1e-9);
  EXPECT_NEAR(m.ttft.percentiles_ms[1].second, 296.0, 1e-9);
  // ITLs pooled: 10, 10, 10, 10, 50, 50 ms.
  EXPECT_EQ(m.itl.count, 6);
  EXPECT_NEAR(m.itl.mean_ms, 140.0 / 6, 1e-9);
  // Population std of TTFT {100, 300, 100}: sqrt(((66.7)^2*2 + 133.3^2)/3) = 94.28.
  EXPECT_NEAR(m.ttft.std_ms, std::sqrt(80000.0 / 9), 1e-9);
  // A [0, .13], B [.1, .43], C [.2, .41], D [.3, .31]: at most B, C and D at once.
  EXPECT_EQ(m.max_concurrent_requests, 3);
}

TEST(AttainmentTest, NoSloMeansNoGoodput) {
  BenchmarkMetrics m = ComputeMetrics({Rec(0, 0.1, {0.1, 0.2}, 2, 0.3)}, 1.0, Slo{}, {99});
  EXPECT_EQ(m.request_goodput, 0);
  EXPECT_EQ(m.completed, 1);
}

TEST(SloTest, ScaledMultipliesEverySetObjective) {
  Slo slo;
  slo.ttft_ms = 200;
  slo.tpot_ms = 50;
  Slo half = slo.Scaled(0.5);
  EXPECT_DOUBLE_EQ(*half.ttft_ms, 100);
  EXPECT_DOUBLE_EQ(*half.tpot_ms, 25);
  EXPECT_FALSE(half.e2el_ms.has_value());
}

TEST(GoodputSearchTest, FindsStepThresholdToResolution) {
  const double threshold = 3.3;
  int calls = 0;
  auto curve = [&](double rate) -> Result<double> {
    ++calls;
    return rate <= threshold ? 0.95 : 0.5;
  };
  auto r = FindGoodput(curve, 0.9, 0.0, 8.0, 0.05);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LE(r->goodput_rps, threshold);
  EXPECT_GT(r->goodput_rps, threshold - 0.05);
  EXPECT_FALSE(r->saturated);
  // One probe at hi, then bisection of 8 down to <= 0.05: ceil(log2(160)) = 8 more.
  EXPECT_EQ(calls, 9);
  EXPECT_EQ(r->probes.size(), 9u);
}

TEST(GoodputSearchTest, FindsSmoothCurveCrossing) {
  // attainment(r) = 1 / (1 + exp(2 (r - 5))) crosses 0.9 at r = 5 - ln(9) / 2.
  auto curve = [](double rate) -> Result<double> { return 1.0 / (1.0 + std::exp(2 * (rate - 5))); };
  const double crossing = 5 - std::log(9.0) / 2;
  auto r = FindGoodput(curve, 0.9, 0.0, 10.0, 0.01);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->goodput_rps, crossing, 0.01);
  EXPECT_LE(r->goodput_rps, crossing);
}

TEST(GoodputSearchTest, SaturatedAndBelowRange) {
  auto always = [](double) -> Result<double> { return 1.0; };
  auto r = FindGoodput(always, 0.9, 0.0, 4.0, 0.1);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->goodput_rps, 4.0);
  EXPECT_TRUE(r->saturated);
  auto never = [](double) -> Result<double> { return 0.0; };
  r = FindGoodput(never, 0.9, 1.0, 4.0, 0.1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->goodput_rps, 0.0);
  EXPECT_EQ(r->probes.size(), 2u);  // hi, then lo, both fail
}

TEST(GoodputSearchTest, ProbeErrorsAndBadArgumentsPropagate) {
  auto failing = [](double) -> Result<double> { return Unavailable("server gone"); };
  auto r = FindGoodput(failing, 0.9, 0.0, 4.0, 0.1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  auto ok = [](double) -> Result<double> { return 1.0; };
  EXPECT_FALSE(FindGoodput(ok, 0.9, 4.0, 1.0, 0.1).ok());
  EXPECT_FALSE(FindGoodput(ok, 0.9, 0.0, 4.0, 0.0).ok());
  EXPECT_FALSE(FindGoodput(ok, 1.5, 0.0, 4.0, 0.1).ok());
}

}  // namespace
}  // namespace cleave::bench
