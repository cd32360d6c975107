// Arrival processes: reproducible by seed, right mean rate, and the variance burstiness sets.
#include "bench/arrivals.h"

#include <gtest/gtest.h>

#include <cmath>

namespace cleave::bench {
namespace {

struct GapStats {
  double mean = 0, cv = 0;
};
GapStats Gaps(const std::vector<double>& t) {
  std::vector<double> gaps;
  for (size_t i = 1; i < t.size(); ++i) gaps.push_back(t[i] - t[i - 1]);
  double mean = 0;
  for (double g : gaps) mean += g;
  mean /= static_cast<double>(gaps.size());
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  var /= static_cast<double>(gaps.size() - 1);
  return {mean, std::sqrt(var) / mean};
}

TEST(ArrivalsTest, SameSeedSameScheduleDifferentSeedDifferent) {
  ArrivalSpec spec = MakeArrivalSpec(5.0, 1.0, false);
  auto a = ArrivalTimes(spec, 200, 42);
  auto b = ArrivalTimes(spec, 200, 42);
  auto c = ArrivalTimes(spec, 200, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ArrivalSpec gamma = MakeArrivalSpec(5.0, 0.5, false);
  EXPECT_EQ(ArrivalTimes(gamma, 100, 7), ArrivalTimes(gamma, 100, 7));
}

TEST(ArrivalsTest, StartsAtZeroAndNeverDecreases) {
  for (double burstiness : {0.3, 1.0, 3.0}) {
    auto t = ArrivalTimes(MakeArrivalSpec(10.0, burstiness, false), 1000, 1);
    ASSERT_EQ(t.size(), 1000u);
    EXPECT_EQ(t[0], 0.0);
    for (size_t i = 1; i < t.size(); ++i) ASSERT_GE(t[i], t[i - 1]);
  }
}

TEST(ArrivalsTest, PoissonMeanRateAndUnitCv) {
  const double rate = 4.0;
  auto spec = MakeArrivalSpec(rate, 1.0, false);
  EXPECT_EQ(spec.kind, ArrivalKind::kPoisson);
  GapStats s = Gaps(ArrivalTimes(spec, 40001, 123));
  // 40000 exponential gaps: the sample mean's relative sd is 0.5%; allow 3%.
  EXPECT_NEAR(s.mean, 1.0 / rate, 0.03 / rate);
  EXPECT_NEAR(s.cv, 1.0, 0.05);
}

TEST(ArrivalsTest, GammaBurstinessSetsVariance) {
  const double rate = 2.0;
  for (double k : {0.25, 4.0}) {
    auto spec = MakeArrivalSpec(rate, k, false);
    EXPECT_EQ(spec.kind, ArrivalKind::kGamma);
    GapStats s = Gaps(ArrivalTimes(spec, 40001, 9));
    EXPECT_NEAR(s.mean, 1.0 / rate, 0.05 / rate) << "burstiness " << k;
    // Gamma(k, 1/(k rate)) has coefficient of variation 1/sqrt(k): 2 for k=0.25, 0.5 for k=4.
    EXPECT_NEAR(s.cv, 1.0 / std::sqrt(k), 0.1 / std::sqrt(k)) << "burstiness " << k;
  }
}

TEST(ArrivalsTest, FixedAndAllAtOnce) {
  auto fixed = ArrivalTimes(MakeArrivalSpec(4.0, 1.0, true), 5, 0);
  EXPECT_EQ(fixed, (std::vector<double>{0, 0.25, 0.5, 0.75, 1.0}));
  auto inf = MakeArrivalSpec(std::numeric_limits<double>::infinity(), 1.0, false);
  EXPECT_EQ(inf.kind, ArrivalKind::kAllAtOnce);
  EXPECT_EQ(ArrivalTimes(inf, 3, 0), (std::vector<double>{0, 0, 0}));
}

TEST(ArrivalsTest, InvalidSpecsAreRejected) {
  EXPECT_FALSE(ValidateArrivalSpec(MakeArrivalSpec(0.0, 1.0, false)).ok());
  EXPECT_FALSE(ValidateArrivalSpec(MakeArrivalSpec(-1.0, 1.0, false)).ok());
  EXPECT_FALSE(ValidateArrivalSpec(MakeArrivalSpec(1.0, -2.0, false)).ok());
  EXPECT_FALSE(ValidateArrivalSpec(MakeArrivalSpec(std::nan(""), 1.0, false)).ok());
  EXPECT_TRUE(ValidateArrivalSpec(MakeArrivalSpec(1.0, 0.5, false)).ok());
}

TEST(RngTest, GammaMomentsForSmallAndLargeShape) {
  for (double shape : {0.5, 3.0}) {
    Rng rng(5);
    const int n = 50000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
      double x = rng.Gamma(shape, 2.0);
      sum += x;
      sq += x * x;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    EXPECT_NEAR(mean, shape * 2.0, 0.03 * shape * 2.0);
    EXPECT_NEAR(var, shape * 4.0, 0.06 * shape * 4.0);
  }
  Rng rng(1);
  for (int i = 0; i < 1000; ++i) {
    int64_t v = rng.UniformInt(-2, 3);
    ASSERT_GE(v, -2);
    ASSERT_LE(v, 3);
  }
}

}  // namespace
}  // namespace cleave::bench
