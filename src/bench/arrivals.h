// Request arrival processes for open-loop load: when each request is sent.
//
// Used by `cleave bench` and by the planner's simulator, so it knows nothing about HTTP.
// Every schedule is a pure function of (spec, count, seed): the same seed gives the same
// sequence on every platform, because the random variates are drawn here from std::mt19937_64
// (whose output the C++ standard fixes) rather than from std::*_distribution (whose algorithms
// differ between standard libraries).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"

namespace cleave::bench {

enum class ArrivalKind {
  kPoisson,    // exponential gaps with mean 1/rate (gamma with shape 1)
  kGamma,      // gamma gaps, shape = burstiness, mean 1/rate (vLLM's --burstiness)
  kFixed,      // constant gaps of exactly 1/rate
  kAllAtOnce,  // rate = inf: every request at t = 0 (closed loop when a concurrency cap is set)
};

struct ArrivalSpec {
  ArrivalKind kind = ArrivalKind::kPoisson;
  double rate_rps = 1.0;    // mean requests per second; ignored for kAllAtOnce
  double burstiness = 1.0;  // gamma shape k; gaps have coefficient of variation 1/sqrt(k)
};

// Builds a spec the way vLLM's flags do: rate = inf -> all at once; burstiness 1 -> Poisson,
// otherwise gamma. `fixed` forces constant gaps.
ArrivalSpec MakeArrivalSpec(double rate_rps, double burstiness, bool fixed);
Status ValidateArrivalSpec(const ArrivalSpec& spec);
std::string DescribeArrivals(const ArrivalSpec& spec);

// Send offsets in seconds from the start of the run, non-decreasing, the first at 0 (as in
// DistServe's simulator and vLLM's generator, which send the first request immediately).
std::vector<double> ArrivalTimes(const ArrivalSpec& spec, int64_t count, uint64_t seed);

// Seeded variate source shared by arrivals and synthetic workloads. Deterministic across
// platforms (see the file comment).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  double Uniform();                          // in [0, 1), 53 random bits
  double Exponential(double mean);           // inverse-CDF
  double Normal();                           // standard normal, Box-Muller (no cached pair)
  double Gamma(double shape, double scale);  // Marsaglia-Tsang; shape < 1 via boosting
  double LogNormal(double mu, double sigma);
  int64_t UniformInt(int64_t lo, int64_t hi);  // inclusive, lo <= hi

 private:
  std::mt19937_64 engine_;
};

}  // namespace cleave::bench
