#include "engine/stop_checker.h"

#include <gtest/gtest.h>

#include <random>

namespace cleave {
namespace {

SamplingParams WithStops(std::vector<std::string> stops) {
  SamplingParams p;
  p.stop = std::move(stops);
  p.max_tokens = 1000;
  return p;
}

// Feeds `text` split at `cuts` and returns (everything emitted, stopped).
std::pair<std::string, bool> Feed(StopChecker& checker, const std::string& text,
                                  const std::vector<size_t>& cuts) {
  std::string emitted;
  size_t pos = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    size_t end = i < cuts.size() ? cuts[i] : text.size();
    auto r = checker.PushText(text.substr(pos, end - pos));
    emitted += r.emit;
    pos = end;
    if (r.stopped) return {emitted, true};
  }
  return {emitted + checker.Flush(), false};
}

TEST(StopCheckerTest, StopStringAcrossDeltasIsNeverEmitted) {
  SamplingParams p = WithStops({"STOP"});
  StopChecker c(p, {});
  auto r1 = c.PushText("hello S");
  EXPECT_EQ(r1.emit, "hello ");  // "S" could start "STOP"
  auto r2 = c.PushText("T");
  EXPECT_EQ(r2.emit, "");
  auto r3 = c.PushText("Oxx");  // "STOx" cannot be a prefix: released
  EXPECT_EQ(r3.emit, "STOxx");
  auto r4 = c.PushText("ST");
  EXPECT_EQ(r4.emit, "");
  auto r5 = c.PushText("OP and more");
  EXPECT_TRUE(r5.stopped);
  EXPECT_EQ(r5.emit, "");
  EXPECT_EQ(r5.stop_string, "STOP");
  EXPECT_EQ(c.PushText("later").emit, "");  // nothing after a stop
}

TEST(StopCheckerTest, FirstCompletedStopWins) {
  SamplingParams p = WithStops({"world", "lo w", "o wor"});
  StopChecker c(p, {});
  auto r = c.PushText("hello world");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "hel");  // "lo w" completes before "o wor" and "world"
  EXPECT_EQ(r.stop_string, "lo w");
}

TEST(StopCheckerTest, HeldTextIsReleasedOnFlush) {
  SamplingParams p = WithStops({"</end>"});
  StopChecker c(p, {});
  EXPECT_EQ(c.PushText("abc</en").emit, "abc");
  EXPECT_EQ(c.Flush(), "</en");
}

TEST(StopCheckerTest, MultiByteStopString) {
  SamplingParams p = WithStops({"é!"});
  StopChecker c(p, {});
  EXPECT_EQ(c.PushText("caf").emit, "caf");
  EXPECT_EQ(c.PushText("é").emit, "");
  auto r = c.PushText("!");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
}

// Any split of the text gives the same emitted text: everything before the stop string that
// completes first (reading left to right; ties to the longer one).
TEST(StopCheckerTest, RandomSplitsMatchWholeTextSearch) {
  std::mt19937 rng(3);
  const std::vector<std::string> stops = {"abab", "ba", "ccc"};
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    int len = 1 + int(rng() % 30);
    for (int i = 0; i < len; ++i) text += "abc"[rng() % 3];
    std::vector<std::string> use(stops.begin(), stops.begin() + 1 + rng() % 3);
    size_t first = std::string::npos;
    for (size_t end = 1; end <= text.size() && first == std::string::npos; ++end) {
      for (const auto& s : use) {
        if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) {
          first = std::min(first, end - s.size());
        }
      }
    }
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i) {
      if (rng() % 3 == 0) cuts.push_back(i);
    }
    SamplingParams p = WithStops(use);
    StopChecker c(p, {});
    auto [emitted, stopped] = Feed(c, text, cuts);
    EXPECT_EQ(stopped, first != std::string::npos) << text;
    EXPECT_EQ(emitted, first == std::string::npos ? text : text.substr(0, first)) << text;
  }
}

TEST(StopCheckerTest, TokenLevelStops) {
  SamplingParams p;
  p.max_tokens = 5;
  p.stop_token_ids = {7};
  p.min_tokens = 2;
  StopChecker c(p, /*eog_ids=*/{0});
  EXPECT_FALSE(c.CheckToken(3, 1));
  EXPECT_FALSE(c.CheckToken(0, 1));  // before min_tokens
  EXPECT_EQ(c.CheckToken(0, 2), FinishReason::kStop);
  EXPECT_EQ(c.CheckToken(7, 3), FinishReason::kStop);
  EXPECT_EQ(c.CheckToken(3, 5), FinishReason::kLength);
  p.ignore_eos = true;
  StopChecker ignore(p, {0});
  EXPECT_FALSE(ignore.CheckToken(0, 3));
  EXPECT_EQ(ignore.CheckToken(7, 3), FinishReason::kStop);  // stop ids still count
}

}  // namespace
}  // namespace cleave
