#include "bench/arrivals.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <numbers>

namespace cleave::bench {

Rng::Rng(uint64_t seed) : engine_(seed) {}

double Rng::Uniform() {
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double Rng::Exponential(double mean) {
  return -mean * std::log1p(-Uniform());
}

double Rng::Normal() {
  // 1 - Uniform() is in (0, 1], so the log is finite.
  double u1 = 1.0 - Uniform();
  double u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double Rng::Gamma(double shape, double scale) {
  CLEAVE_CHECK(shape > 0 && scale > 0, "gamma shape {} scale {}", shape, scale);
  if (shape < 1.0) {
    // Gamma(k) = Gamma(k + 1) * U^(1/k).
    double u = 1.0 - Uniform();
    return Gamma(shape + 1.0, scale) * std::pow(u, 1.0 / shape);
  }
  // Marsaglia & Tsang (2000), "A simple method for generating gamma variables".
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = Normal();
    double v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = 1.0 - Uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v * scale;
  }
}

double Rng::LogNormal(double mu, double sigma) {
  return std::exp(mu + sigma * Normal());
}

int64_t Rng::UniformInt(int64_t lo, int64_t hi) {
  CLEAVE_CHECK(lo <= hi);
  uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  if (span == 0) return static_cast<int64_t>(engine_());  // the full 64-bit range
  // Rejection sampling removes modulo bias.
  uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % span;
  uint64_t r;
  do {
    r = engine_();
  } while (r >= limit);
  return lo + static_cast<int64_t>(r % span);
}

ArrivalSpec MakeArrivalSpec(double rate_rps, double burstiness, bool fixed) {
  ArrivalSpec spec;
  spec.rate_rps = rate_rps;
  spec.burstiness = burstiness;
  if (std::isinf(rate_rps)) {
    spec.kind = ArrivalKind::kAllAtOnce;
  } else if (fixed) {
    spec.kind = ArrivalKind::kFixed;
  } else if (burstiness == 1.0) {
    spec.kind = ArrivalKind::kPoisson;
  } else {
    spec.kind = ArrivalKind::kGamma;
  }
  return spec;
}

Status ValidateArrivalSpec(const ArrivalSpec& spec) {
  if (spec.kind == ArrivalKind::kAllAtOnce) return Status::Ok();
  if (!(spec.rate_rps > 0) || !std::isfinite(spec.rate_rps)) {
    return InvalidArgument("request rate must be a positive number (or inf), got {}",
                           spec.rate_rps);
  }
  if (spec.kind == ArrivalKind::kGamma &&
      !(spec.burstiness > 0 && std::isfinite(spec.burstiness))) {
    return InvalidArgument("burstiness must be positive, got {}", spec.burstiness);
  }
  return Status::Ok();
}

std::string DescribeArrivals(const ArrivalSpec& spec) {
  switch (spec.kind) {
    case ArrivalKind::kPoisson:
      return fmt::format("Poisson, {:g} req/s", spec.rate_rps);
    case ArrivalKind::kGamma:
      return fmt::format("gamma (burstiness {:g}), {:g} req/s", spec.burstiness, spec.rate_rps);
    case ArrivalKind::kFixed:
      return fmt::format("fixed interval, {:g} req/s", spec.rate_rps);
    case ArrivalKind::kAllAtOnce:
      return "all at once (rate inf)";
  }
  return "?";
}

std::vector<double> ArrivalTimes(const ArrivalSpec& spec, int64_t count, uint64_t seed) {
  CLEAVE_CHECK(count >= 0);
  std::vector<double> times;
  times.reserve(static_cast<size_t>(count));
  Rng rng(seed);
  double t = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (i > 0) {
      switch (spec.kind) {
        case ArrivalKind::kPoisson:
          t += rng.Exponential(1.0 / spec.rate_rps);
          break;
        case ArrivalKind::kGamma:
          // Shape k, scale 1/(k * rate): mean gap 1/rate, variance 1/(k * rate^2).
          t += rng.Gamma(spec.burstiness, 1.0 / (spec.burstiness * spec.rate_rps));
          break;
        case ArrivalKind::kFixed:
          t = static_cast<double>(i) / spec.rate_rps;
          break;
        case ArrivalKind::kAllAtOnce:
          break;
      }
    }
    times.push_back(t);
  }
  return times;
}

}  // namespace cleave::bench
