#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "kernels/ops.h"

namespace cleave {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<TokenId> Kept(const std::vector<float>& logits) {
  std::vector<TokenId> kept;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] != -kInf) kept.push_back(TokenId(i));
  }
  return kept;
}

// log of an unnormalised distribution, so the probabilities are easy to state.
std::vector<float> LogOf(std::vector<double> p) {
  std::vector<float> l;
  for (double x : p) l.push_back(float(std::log(x)));
  return l;
}

TEST(SamplerTest, GreedyPicksMaxAndBreaksTiesToLowestId) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sampling::Argmax(l), 1);
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 0;
  Rng rng(1);
  EXPECT_EQ(sampler.Sample(l, p, {}, {}, rng).token, 1);
}

TEST(SamplerTest, TopKKeepsKBestWithLowIdsWinningTies) {
  std::vector<float> l = {1, 5, 3, 5, 2, 3};
  SamplingParams p;
  p.top_k = 3;
  sampling::ApplyTemperatureAndTruncation(l, p);
  EXPECT_EQ(Kept(l), (std::vector<TokenId>{1, 2, 3}));  // 5, 5, then the first 3
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  // Probabilities 0.4, 0.3, 0.2, 0.1.
  for (auto [top_p, expected] : std::vector<std::pair<float, size_t>>{
           {0.35f, 1}, {0.39f, 1}, {0.41f, 2}, {0.69f, 2}, {0.71f, 3}, {0.95f, 4}, {1.0f, 4}}) {
    std::vector<float> l = LogOf({0.1, 0.4, 0.2, 0.3});
    SamplingParams p;
    p.top_p = top_p;
    sampling::ApplyTemperatureAndTruncation(l, p);
    std::vector<TokenId> all_best_first = {1, 3, 2, 0};
    std::vector<TokenId> want(all_best_first.begin(), all_best_first.begin() + expected);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(Kept(l), want) << "top_p " << top_p;
  }
}

TEST(SamplerTest, TopPOnLargeVocabMatchesFullSort) {
  // Exercises the progressive partial sort past its first 64-token window.
  std::vector<float> l(5000);
  Rng rng(3);
  for (float& x : l) x = float(rng.Uniform() * 0.01);  // nearly flat
  std::vector<float> copy = l;
  SamplingParams p;
  p.top_p = 0.5f;
  sampling::ApplyTemperatureAndTruncation(l, p);
  std::vector<TokenId> order(copy.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = TokenId(i);
  std::sort(order.begin(), order.end(),
            [&](TokenId a, TokenId b) { return copy[a] != copy[b] ? copy[a] > copy[b] : a < b; });
  double total = 0, cum = 0;
  for (float x : copy) total += std::exp(double(x));
  size_t n = 0;
  while (cum < 0.5 * total) cum += std::exp(double(copy[order[n++]]));
  std::vector<TokenId> want(order.begin(), order.begin() + n);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(Kept(l), want);
}

// The plain statement of top-p over whole vocabularies: probabilities relative to the best token
// (the sampler's ExpShifted), every token with mass sorted best first (ties to the lower id),
// the total summed in id order, the shortest prefix whose running sum reaches top_p of it kept.
std::vector<TokenId> TopPByFullSort(const std::vector<float>& logits, float top_p, float min_p) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<float> prob(logits.size());
  kernels::ExpShifted(logits.data(), max_logit, int64_t(logits.size()), prob.data());
  std::vector<TokenId> order;
  double total = 0;
  for (size_t i = 0; i < prob.size(); ++i) {
    if (prob[i] < min_p) prob[i] = 0;
    if (prob[i] > 0) {
      order.push_back(TokenId(i));
      total += prob[i];
    }
  }
  std::sort(order.begin(), order.end(),
            [&](TokenId a, TokenId b) { return prob[a] != prob[b] ? prob[a] > prob[b] : a < b; });
  double cum = 0;
  size_t n = 0;
  while (n < order.size()) {
    cum += prob[order[n++]];
    if (cum >= top_p * total) break;
  }
  // Kept: the prefix, and tokens that never had mass (left as they were, not masked).
  std::vector<TokenId> kept(order.begin(), order.begin() + n);
  for (size_t i = 0; i < prob.size(); ++i) {
    if (prob[i] == 0 && logits[i] != -kInf && !(min_p > 0)) kept.push_back(TokenId(i));
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

TEST(SamplerTest, TopPOverWholeVocabulariesMatchesAFullSort) {
  // Peaked, flat, tied (coarsely quantised logits), spread over many octaves (some underflowing to
  // zero), with min-p and without, at several top_p.
  Rng rng(11);
  int cases = 0;
  for (size_t vocab : {1u, 2u, 7u, 300u, 5000u, 49152u}) {
    for (int shape = 0; shape < 4; ++shape) {
      std::vector<float> l(vocab);
      for (float& x : l) {
        const double u = rng.Uniform();
        switch (shape) {
          case 0:
            x = float(8 * u * u * u);
            break;  // a few strong tokens
          case 1:
            x = float(0.01 * u);
            break;  // nearly flat
          case 2:
            x = float(std::floor(4 * u));
            break;  // heavy ties
          default:
            x = float(-150 + 160 * u);
            break;  // 0-~200 octaves below the best
        }
      }
      for (float top_p : {0.0f, 0.1f, 0.5f, 0.9f, 0.999f}) {
        for (float min_p : {0.0f, 0.05f}) {
          std::vector<float> got = l;
          SamplingParams p;
          p.top_p = top_p;
          p.min_p = min_p;
          sampling::ApplyTemperatureAndTruncation(got, p);
          std::vector<TokenId> kept = Kept(got);
          EXPECT_EQ(kept, TopPByFullSort(l, top_p, min_p))
              << "vocab " << vocab << " shape " << shape << " top_p " << top_p << " min_p "
              << min_p;
          for (TokenId id : kept) EXPECT_EQ(got[id], l[id]);  // survivors untouched
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 6 * 4 * 5 * 2);
}

TEST(SamplerTest, TopLogprobsAreTheBestKOfAFullSort) {
  Rng rng(5);
  for (size_t vocab : {1u, 3u, 40u, 49152u}) {
    std::vector<float> lp(vocab);
    for (float& x : lp) x = float(-std::floor(8 * rng.Uniform()));  // many ties
    std::vector<TokenId> order(vocab);
    for (size_t i = 0; i < vocab; ++i) order[i] = TokenId(i);
    std::sort(order.begin(), order.end(),
              [&](TokenId a, TokenId b) { return lp[a] != lp[b] ? lp[a] > lp[b] : a < b; });
    for (int32_t k : {0, 1, 5, 20, 100}) {
      const auto top = sampling::TopLogprobs(lp, k);
      ASSERT_EQ(top.size(), std::min<size_t>(size_t(k), vocab)) << vocab << " " << k;
      for (size_t i = 0; i < top.size(); ++i) {
        EXPECT_EQ(top[i].token, order[i]) << "vocab " << vocab << " k " << k << " rank " << i;
        EXPECT_EQ(top[i].logprob, lp[order[i]]);
      }
    }
  }
}

TEST(SamplerTest, MinPIsRelativeToMostLikelyToken) {
  std::vector<float> l = LogOf({0.5, 0.2, 0.1, 0.04, 0.16});
  SamplingParams p;
  p.min_p = 0.3f;  // keep p >= 0.15
  sampling::ApplyTemperatureAndTruncation(l, p);
  EXPECT_EQ(Kept(l), (std::vector<TokenId>{0, 1, 4}));
}

TEST(SamplerTest, TemperatureScalesLogits) {
  std::vector<float> l = {1.0f, 2.0f};
  SamplingParams p;
  p.temperature = 0.5f;
  sampling::ApplyTemperatureAndTruncation(l, p);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[1], 4.0f);
}

TEST(SamplerTest, PenaltiesFollowOpenAiAndHfSemantics) {
  std::vector<float> l = {2.0f, -2.0f, 1.0f, 1.0f, 0.5f};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  std::vector<TokenId> prompt = {0, 1};
  std::vector<TokenId> output = {2, 2, 2, 1};
  sampling::ApplyPenalties(l, p, prompt, output);
  EXPECT_FLOAT_EQ(l[0], 1.0f);                     // prompt only: repetition (divide)
  EXPECT_FLOAT_EQ(l[1], -4.0f - 0.5f - 0.25f);     // negative: multiplied; once in output
  EXPECT_FLOAT_EQ(l[2], 0.5f - 0.5f - 3 * 0.25f);  // three times in output
  EXPECT_FLOAT_EQ(l[3], 1.0f);                     // unseen
  EXPECT_FLOAT_EQ(l[4], 0.5f);
}

TEST(SamplerTest, LogitBiasAndMinTokens) {
  std::vector<float> l = {3, 1, 1, 1};
  SamplingParams p;
  p.logit_bias = {{2, 5.0f}, {99, 1.0f}};  // out-of-vocab ids are ignored
  p.min_tokens = 2;
  p.stop_token_ids = {3};
  sampling::ApplyLogitBias(l, p);
  EXPECT_FLOAT_EQ(l[2], 6.0f);
  std::vector<float> masked = l;
  sampling::ApplyMinTokens(masked, p, 1, std::vector<TokenId>{0});
  EXPECT_EQ(masked[0], -kInf);
  EXPECT_EQ(masked[3], -kInf);
  EXPECT_EQ(masked[1], 1.0f);
  std::vector<float> unmasked = l;
  sampling::ApplyMinTokens(unmasked, p, 2, std::vector<TokenId>{0});
  EXPECT_EQ(unmasked, l);
  p.ignore_eos = true;  // EOG is then an ordinary token; stop ids stay masked
  std::vector<float> ignoring = l;
  sampling::ApplyMinTokens(ignoring, p, 1, std::vector<TokenId>{0});
  EXPECT_EQ(ignoring[0], l[0]);
  EXPECT_EQ(ignoring[3], -kInf);
}

TEST(SamplerTest, SeededSamplingIsReproducibleAndFollowsTheDistribution) {
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  std::vector<TokenId> a, b, c;
  Rng r1(42), r2(42), r3(43);
  std::map<TokenId, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    // Each sequence's own output so far: the draw is keyed by its length.
    std::vector<float> l = LogOf(probs);
    const TokenId ta = sampler.Sample(l, p, {}, a, r1).token;
    l = LogOf(probs);
    const TokenId tb = sampler.Sample(l, p, {}, b, r2).token;
    l = LogOf(probs);
    const TokenId tc = sampler.Sample(l, p, {}, c, r3).token;
    a.push_back(ta);
    b.push_back(tb);
    c.push_back(tc);
    ++counts[ta];
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (TokenId t = 0; t < 4; ++t) {
    // 5 standard deviations of a binomial.
    double sd = std::sqrt(n * probs[t] * (1 - probs[t]));
    EXPECT_NEAR(counts[t], n * probs[t], 5 * sd) << "token " << t;
  }
}

// InverseCdf skips whole chunks by their sums; it must pick what a plain walk over the running
// sum picks, never an id without mass, and the last id with mass when rounding leaves the
// target out of reach.
TEST(SamplerTest, InverseCdfMatchesAPlainWalk) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (size_t vocab : {1u, 5u, 16u, 17u, 100u, 49152u}) {
    std::vector<float> prob(vocab);
    for (size_t i = 0; i < vocab; ++i) prob[i] = i % 7 == 3 ? 0.0f : uniform(rng);
    if (vocab > 1) prob[vocab - 1] = 0.0f;  // mass ends before the last id
    double total = 0.0;
    for (float p : prob) total += p;
    for (double u : {0.0, 1e-9, 0.25, 0.5, 0.999999, 1.0, 1.5}) {
      const double target = u * total;
      TokenId want = -1;
      double cumulative = 0.0, before = 0.0;
      for (size_t i = 0; i < vocab; ++i) {
        if (prob[i] <= 0.0f) continue;
        before = cumulative;
        cumulative += prob[i];
        want = static_cast<TokenId>(i);
        if (cumulative > target) break;
      }
      const TokenId got = sampling::InverseCdf(prob, target);
      ASSERT_GE(got, 0) << "vocab " << vocab << " u " << u;
      EXPECT_GT(prob[got], 0.0f);
      // The chunked sums may round differently from the walk's by a few ulps of the total:
      // only a target that close to the chosen id's interval ends may go either way.
      const double slack = 1e-9 * total;
      if (std::fabs(cumulative - target) > slack && std::fabs(before - target) > slack) {
        EXPECT_EQ(got, want) << "vocab " << vocab << " u " << u;
      }
    }
  }
  EXPECT_EQ(sampling::InverseCdf(std::vector<float>(40, 0.0f), 0.0), -1);
}

TEST(SamplerTest, SamplingNeverPicksTruncatedTokens) {
  Sampler sampler({});
  SamplingParams p;
  p.top_k = 2;
  Rng rng(5);
  std::vector<TokenId> output;
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = LogOf({0.3, 0.1, 0.35, 0.25});
    TokenId t = sampler.Sample(l, p, {}, output, rng).token;
    EXPECT_TRUE(t == 0 || t == 2) << t;
    output.push_back(t);
  }
}

TEST(SamplerTest, LogprobsRawAndProcessed) {
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 2;
  p.logit_bias = {{0, 10.0f}};
  std::vector<float> raw = LogOf({0.5, 0.25, 0.125, 0.125});
  std::vector<float> l = raw;
  Rng rng(1);
  SampleResult r = sampler.Sample(l, p, {}, {}, rng);
  EXPECT_EQ(r.token, 0);
  EXPECT_NEAR(r.logprob, std::log(0.5), 1e-5);  // raw: the bias does not show
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 0);
  EXPECT_EQ(r.top[1].token, 1);
  EXPECT_NEAR(r.top[1].logprob, std::log(0.25), 1e-5);

  p.logprobs_mode = LogprobsMode::kProcessed;
  p.logit_bias.clear();
  p.temperature = 1.0f;
  p.top_k = 2;
  l = raw;
  r = sampler.Sample(l, p, {}, {}, rng);
  // Over the top-2 tokens only: 2/3 and 1/3.
  EXPECT_NEAR(r.logprob, r.token == 0 ? std::log(2.0 / 3) : std::log(1.0 / 3), 1e-5);
  EXPECT_NEAR(r.top[0].logprob, std::log(2.0 / 3), 1e-5);
  EXPECT_NEAR(r.top[1].logprob, std::log(1.0 / 3), 1e-5);

  std::vector<float> ls(raw.size());
  sampling::LogSoftmax(raw, ls);
  double sum = 0;
  for (float x : ls) sum += std::exp(double(x));
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(SamplerTest, RngIsPlatformIndependentSplitMixXoshiro) {
  // Uniform() stays in [0, 1) and the stream depends only on the seed.
  Rng a(9), b(9);
  for (int i = 0; i < 1000; ++i) {
    double u = a.Uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_EQ(u, b.Uniform());
  }
}

// Disaggregation: a prefill worker samples the first tokens, a decode worker with a fresh Rng of
// the same seed continues. The continuation must equal one uninterrupted sequence, whatever
// else the generators were used for in between (the draw depends on seed and position only).
TEST(SamplerTest, SeededStreamContinuesAcrossAFreshRng) {
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  const std::vector<double> probs = {0.05, 0.15, 0.2, 0.25, 0.1, 0.25};
  auto run = [&](Rng& rng, std::vector<TokenId>& output, int n) {
    for (int i = 0; i < n; ++i) {
      std::vector<float> l = LogOf(probs);
      output.push_back(sampler.Sample(l, p, {}, output, rng).token);
    }
  };
  std::vector<TokenId> whole;
  Rng colocated(1234);
  run(colocated, whole, 64);

  for (int split : {1, 5, 63}) {
    std::vector<TokenId> split_output;
    Rng prefill_rng(1234);
    run(prefill_rng, split_output, split);
    Rng decode_rng(1234);
    for (int i = 0; i < 17; ++i) decode_rng.Next();  // unrelated use of the generator
    run(decode_rng, split_output, 64 - split);
    EXPECT_EQ(split_output, whole) << "split after " << split;
  }
  // Another seed gives another stream (the test would pass trivially for a constant draw).
  std::vector<TokenId> other;
  Rng other_rng(1235);
  run(other_rng, other, 64);
  EXPECT_NE(other, whole);
  std::set<TokenId> distinct(whole.begin(), whole.end());
  EXPECT_GE(distinct.size(), 4u);
}

TEST(SamplerTest, UniformAtDependsOnSeedAndStepOnly) {
  Rng a(77), b(77), c(78);
  for (int i = 0; i < 10; ++i) b.Next();
  double sum = 0;
  for (uint64_t step = 0; step < 1000; ++step) {
    const double u = a.UniformAt(step);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_EQ(u, b.UniformAt(step));
    EXPECT_NE(u, c.UniformAt(step));
    if (step > 0) {
      EXPECT_NE(u, a.UniformAt(step - 1));
    }
    sum += u;
  }
  EXPECT_NEAR(sum / 1000, 0.5, 0.05);
}

}  // namespace
}  // namespace cleave
