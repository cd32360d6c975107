#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>

#include "core/status.h"
#include "kernels/ops.h"

namespace cleave {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

bool InVocab(TokenId id, size_t vocab) {
  return id >= 0 && static_cast<size_t>(id) < vocab;
}

}  // namespace

Rng::Rng(uint64_t seed) : seed_(seed) {
  for (uint64_t& s : s_) s = SplitMix64(seed);
}

double Rng::UniformAt(uint64_t step) const {
  // A fresh generator keyed by (seed, step): the step is mixed in through splitmix64 first so
  // that neighbouring steps give unrelated streams, then xoshiro's first output is the draw.
  uint64_t key = step;
  Rng at(seed_ ^ SplitMix64(key));
  return static_cast<double>(at.Next() >> 11) * 0x1.0p-53;
}

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

namespace sampling {

void ApplyLogitBias(std::span<float> logits, const SamplingParams& params) {
  for (const auto& [id, bias] : params.logit_bias) {
    if (InVocab(id, logits.size())) logits[id] += bias;
  }
}

void ApplyMinTokens(std::span<float> logits, const SamplingParams& params, int32_t num_output,
                    std::span<const TokenId> eog_ids) {
  if (num_output >= params.min_tokens) return;
  if (!params.ignore_eos) {  // as vLLM: with ignore_eos, EOG tokens are ordinary tokens
    for (TokenId id : eog_ids) {
      if (InVocab(id, logits.size())) logits[id] = kNegInf;
    }
  }
  for (TokenId id : params.stop_token_ids) {
    if (InVocab(id, logits.size())) logits[id] = kNegInf;
  }
}

void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const TokenId> prompt, std::span<const TokenId> output) {
  if (params.repetition_penalty != 1.0f) {
    // HF/vLLM: positive logits are divided, negative ones multiplied, so the token always
    // becomes less likely. Applies to tokens anywhere in prompt or output, once each.
    std::vector<TokenId> seen(prompt.begin(), prompt.end());
    seen.insert(seen.end(), output.begin(), output.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    const float rp = params.repetition_penalty;
    for (TokenId id : seen) {
      if (!InVocab(id, logits.size())) continue;
      float& l = logits[id];
      l = l > 0 ? l / rp : l * rp;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    // OpenAI: logit -= frequency * count + presence * (count > 0), over generated tokens only.
    std::vector<TokenId> out(output.begin(), output.end());
    std::sort(out.begin(), out.end());
    for (size_t i = 0; i < out.size();) {
      size_t j = i;
      while (j < out.size() && out[j] == out[i]) ++j;
      if (InVocab(out[i], logits.size())) {
        logits[out[i]] -=
            params.frequency_penalty * static_cast<float>(j - i) + params.presence_penalty;
      }
      i = j;
    }
  }
}

TokenId Argmax(std::span<const float> logits) {
  CLEAVE_CHECK(!logits.empty());
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: the first of equal maxima wins
  }
  return static_cast<TokenId>(best);
}

TokenId InverseCdf(std::span<const float> prob, double target) {
  // Whole chunks are skipped by their sums (independent of the running total, so the adds
  // overlap); the chunk that crosses the target is walked one id at a time.
  constexpr size_t kChunk = 16;
  double cumulative = 0.0;
  TokenId last_nonzero = -1;
  for (size_t c = 0; c < prob.size(); c += kChunk) {
    const size_t end = std::min(prob.size(), c + kChunk);
    double chunk = 0.0;
    for (size_t i = c; i < end; ++i) chunk += prob[i];
    if (chunk == 0.0) continue;
    if (cumulative + chunk <= target) {
      cumulative += chunk;
      for (size_t i = end; i-- > c;) {
        if (prob[i] > 0.0f) {
          last_nonzero = static_cast<TokenId>(i);
          break;
        }
      }
      continue;
    }
    for (size_t i = c; i < end; ++i) {
      if (prob[i] <= 0.0f) continue;
      cumulative += prob[i];
      last_nonzero = static_cast<TokenId>(i);
      if (cumulative > target) return last_nonzero;
    }
  }
  return last_nonzero;  // rounding at the top end (or no mass at all: -1)
}

namespace {

// Best first: higher probability, ties to the lower id.
struct ProbabilityOrder {
  std::span<const float> prob;
  bool operator()(TokenId a, TokenId b) const {
    return prob[a] != prob[b] ? prob[a] > prob[b] : a < b;
  }
};

// Keeps the smallest best-first prefix of `order` (the top-k survivors, in any order) whose mass
// reaches top_p of theirs; masks the rest. Sorts progressively larger prefixes.
void KeepTopPBySorting(std::span<float> logits, std::span<const float> prob,
                       std::vector<TokenId>& order, float top_p) {
  double total = 0.0;
  for (TokenId id : order) total += prob[id];
  const double target = top_p * total;
  size_t sorted = 0;
  size_t keep = order.size();
  double cumulative = 0.0;
  while (sorted < order.size()) {
    const size_t next = std::min(order.size(), std::max<size_t>(64, sorted * 4));
    std::partial_sort(order.begin() + sorted, order.begin() + next, order.end(),
                      ProbabilityOrder{prob});
    for (size_t i = sorted; i < next; ++i) {
      cumulative += prob[order[i]];
      if (cumulative >= target) {
        keep = i + 1;
        break;
      }
    }
    if (keep != order.size()) break;
    sorted = next;
  }
  for (size_t i = keep; i < order.size(); ++i) logits[order[i]] = kNegInf;
}

// The same kept set over a whole vocabulary without sorting it: one pass files every token's
// probability (<= 1, relative to the best) under its octave, floor(-log2 p), read from the float's
// exponent, and sums each octave's mass; the fewest octaves whose mass reaches the target hold
// the kept prefix (an octave holds every token of its probability range, so the candidates are
// exactly the first ones of the full best-first order). Only they are sorted and walked. Each
// row costs two passes over the vocabulary plus a sort of a few candidates, instead of
// partial sorts over all of it (~0.3 ms for 49k tokens).
void KeepTopPByOctaves(std::span<float> logits, std::span<float> prob, float top_p) {
  constexpr int kOctaves = 64;  // the last one also takes everything below 2^-63
  static constexpr std::array<uint8_t, 256> kOctaveOfExponent = [] {
    std::array<uint8_t, 256> table{};
    for (int e = 0; e < 256; ++e)
      table[e] = uint8_t(std::min(kOctaves - 1, 127 - std::min(e, 127)));
    return table;
  }();
  auto octave = [](float p) {
    return int(kOctaveOfExponent[(std::bit_cast<uint32_t>(p) >> 23) & 0xff]);
  };
  // Several partial sums per octave: one running sum would be a serial chain of dependent adds
  // across the whole vocabulary (most tokens fall in a few octaves). A zero probability files
  // under the last octave and adds nothing.
  constexpr size_t kLanes = 8;
  std::array<std::array<double, kOctaves>, kLanes> lane_mass{};
  size_t i = 0;
  for (; i + kLanes <= prob.size(); i += kLanes) {
    for (size_t lane = 0; lane < kLanes; ++lane) {
      lane_mass[lane][octave(prob[i + lane])] += prob[i + lane];
    }
  }
  for (; i < prob.size(); ++i) lane_mass[0][octave(prob[i])] += prob[i];
  std::array<double, kOctaves> mass{};
  double total = 0.0;
  for (int o = 0; o < kOctaves; ++o) {
    for (size_t lane = 0; lane < kLanes; ++lane) mass[o] += lane_mass[lane][o];
    total += mass[o];
  }
  const double target = top_p * total;
  int last_octave = 0;
  for (double covered = mass[0]; last_octave < kOctaves - 1 && covered < target;) {
    covered += mass[++last_octave];
  }
  thread_local std::vector<TokenId> candidates;
  for (;;) {
    candidates.clear();
    for (size_t j = 0; j < prob.size(); ++j) {
      if (prob[j] > 0.0f && octave(prob[j]) <= last_octave) {
        candidates.push_back(static_cast<TokenId>(j));
      }
    }
    std::sort(candidates.begin(), candidates.end(), ProbabilityOrder{prob});
    double cumulative = 0.0;
    size_t keep = 0;
    bool reached = false;
    while (keep < candidates.size() && !reached) {
      cumulative += prob[candidates[keep++]];
      reached = cumulative >= target;
    }
    // The octave sums and the walk round differently: if the walk falls short by that rounding,
    // widen by an octave (the last one holds every remaining token, so this ends).
    if (!reached && last_octave < kOctaves - 1) {
      ++last_octave;
      continue;
    }
    // Mask every other token that had mass: kept ones are flagged in the scratch row first.
    for (size_t k = 0; k < keep; ++k) prob[candidates[k]] = -1.0f;
    for (size_t j = 0; j < prob.size(); ++j) {
      logits[j] = prob[j] > 0.0f ? kNegInf : logits[j];
    }
    return;
  }
}

}  // namespace

void ApplyTemperatureAndTruncation(std::span<float> logits, const SamplingParams& params) {
  const size_t vocab = logits.size();
  if (params.temperature != 1.0f && !params.greedy()) {
    const float inv_t = 1.0f / params.temperature;
    for (float& l : logits) l *= inv_t;
  }
  if (params.min_p <= 0.0f && params.top_k <= 0 && params.top_p >= 1.0f) return;
  const float max_logit = logits[Argmax(logits)];
  if (max_logit == kNegInf) return;  // everything masked: nothing to truncate
  // Unnormalised probabilities relative to the most likely token (which has 1).
  // Per-thread scratch: a vocabulary row is ~200 KB, which malloc would map and unmap (and
  // page-fault in) on every sampled token.
  thread_local std::vector<float> prob;
  prob.resize(vocab);
  kernels::ExpShifted(logits.data(), max_logit, static_cast<int64_t>(vocab), prob.data());

  if (params.min_p > 0.0f) {
    for (size_t i = 0; i < vocab; ++i) {
      if (prob[i] < params.min_p) {
        logits[i] = kNegInf;
        prob[i] = 0.0f;
      }
    }
  }
  // Survivors ranked by probability, ties to the lower id: a strict total order, so the kept set
  // is the same on every run. Listed only for top-k (top-p alone preselects by octave).
  thread_local std::vector<TokenId> order;
  order.clear();
  bool top_k_applied = false;
  if (params.top_k > 0) {
    order.reserve(vocab);
    for (size_t i = 0; i < vocab; ++i) {
      if (prob[i] > 0.0f) order.push_back(static_cast<TokenId>(i));
    }
    if (static_cast<size_t>(params.top_k) < order.size()) {
      std::nth_element(order.begin(), order.begin() + params.top_k, order.end(),
                       ProbabilityOrder{prob});
      for (size_t i = params.top_k; i < order.size(); ++i) {
        logits[order[i]] = kNegInf;
        prob[order[i]] = 0.0f;
      }
      order.resize(params.top_k);
      top_k_applied = true;
    }
  }
  if (params.top_p < 1.0f) {
    if (top_k_applied) {
      KeepTopPBySorting(logits, prob, order, params.top_p);
    } else {
      KeepTopPByOctaves(logits, prob, params.top_p);
    }
  }
}

void LogSoftmax(std::span<const float> logits, std::span<float> out) {
  CLEAVE_CHECK(out.size() == logits.size());
  const float max_logit = logits[Argmax(logits)];
  if (max_logit == kNegInf) {
    std::fill(out.begin(), out.end(), kNegInf);
    return;
  }
  // out holds the exps until it is overwritten with the result.
  const double sum = kernels::ExpShifted(logits.data(), max_logit,
                                         static_cast<int64_t>(logits.size()), out.data());
  const float log_z = max_logit + static_cast<float>(std::log(sum));
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_z;
}

std::vector<TokenLogprob> TopLogprobs(std::span<const float> logprobs, int32_t k) {
  std::vector<TokenId> ids(logprobs.size());
  std::iota(ids.begin(), ids.end(), 0);
  k = std::min<int32_t>(k, static_cast<int32_t>(ids.size()));
  auto better = [&](TokenId a, TokenId b) {
    return logprobs[a] != logprobs[b] ? logprobs[a] > logprobs[b] : a < b;
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), better);
  std::vector<TokenLogprob> top(k);
  for (int32_t i = 0; i < k; ++i) top[i] = {ids[i], logprobs[ids[i]]};
  return top;
}

}  // namespace sampling

SampleResult Sampler::Sample(std::span<float> logits, const SamplingParams& params,
                             std::span<const TokenId> prompt, std::span<const TokenId> output,
                             Rng& rng) const {
  const bool want_logprobs = params.logprobs >= 0;
  std::vector<float> logprobs;
  if (want_logprobs && params.logprobs_mode == LogprobsMode::kRaw) {
    logprobs.resize(logits.size());
    sampling::LogSoftmax(logits, logprobs);
  }
  sampling::ApplyLogitBias(logits, params);
  sampling::ApplyMinTokens(logits, params, static_cast<int32_t>(output.size()), eog_ids_);
  sampling::ApplyPenalties(logits, params, prompt, output);

  SampleResult result;
  if (params.greedy()) {
    result.token = sampling::Argmax(logits);
  } else {
    sampling::ApplyTemperatureAndTruncation(logits, params);
    const float max_logit = logits[sampling::Argmax(logits)];
    if (max_logit == -std::numeric_limits<float>::infinity()) {
      result.token = sampling::Argmax(logits);  // every token masked: nothing to draw from
      return result;
    }
    thread_local std::vector<float> prob;
    prob.resize(logits.size());
    const double total = kernels::ExpShifted(logits.data(), max_logit,
                                             static_cast<int64_t>(logits.size()), prob.data());
    // Inverse CDF over ids in ascending order: the draw depends only on this row, the
    // sequence's seed and the output position (so it is the same wherever the step runs).
    result.token = sampling::InverseCdf(prob, rng.UniformAt(output.size()) * total);
  }

  if (want_logprobs) {
    if (params.logprobs_mode == LogprobsMode::kProcessed) {
      logprobs.resize(logits.size());
      sampling::LogSoftmax(logits, logprobs);
    }
    result.logprob = logprobs[result.token];
    if (params.logprobs > 0) result.top = sampling::TopLogprobs(logprobs, params.logprobs);
  }
  return result;
}

}  // namespace cleave
