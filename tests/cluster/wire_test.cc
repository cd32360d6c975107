#include "cluster/wire.h"

#include <gtest/gtest.h>

#include <random>

namespace cleave::cluster {
namespace {

// Round trip through the byte form, as the transport would carry it.
Frame Reframe(const Frame& f) {
  Result<Frame> back = DecodeFrame(EncodeFrame(f));
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  return back.ok() ? *back : Frame{};
}

AddRequestMsg SampleAdd() {
  AddRequestMsg m;
  m.request_id = 0x1122334455667788ull;
  m.mode = RequestMode::kDecode;
  m.request.prompt = {1, 2, 3, 49151};
  m.request.priority = -3;
  SamplingParams& p = m.request.params;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = -0.5f;
  p.frequency_penalty = 0.25f;
  p.logit_bias = {{7, -100.0f}, {9, 2.5f}};
  p.seed = 42;
  p.max_tokens = 128;
  p.min_tokens = 3;
  p.ignore_eos = true;
  p.stop_token_ids = {2, 5};
  p.stop = {"\n\n", "END", ""};
  p.logprobs = 4;
  p.logprobs_mode = LogprobsMode::kProcessed;
  p.skip_special_tokens = false;
  m.output_tokens = {77};
  m.source_host = "127.0.0.1";
  m.source_port = 40123;
  return m;
}

TEST(WireTest, FrameHeaderIsLittleEndianWithMagicVersionTypeLength) {
  const std::vector<uint8_t> bytes = EncodeFrame(Encode(CancelMsg{0x0102030405060708ull}));
  ASSERT_EQ(bytes.size(), kFrameHeaderBytes + 8);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "CLVW");
  EXPECT_EQ(bytes[4], kWireVersion);  // LE
  EXPECT_EQ(bytes[5], 0);
  EXPECT_EQ(bytes[6], uint8_t(MessageType::kCancel));
  EXPECT_EQ(bytes[7], 0);
  EXPECT_EQ(bytes[8], 8);      // payload length
  EXPECT_EQ(bytes[12], 0x08);  // request id, least significant byte first
  EXPECT_EQ(bytes[19], 0x01);
}

TEST(WireTest, AddRequestRoundTripsEveryField) {
  const AddRequestMsg m = SampleAdd();
  Result<AddRequestMsg> back = DecodeAddRequest(Reframe(Encode(m)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const SamplingParams& a = m.request.params;
  const SamplingParams& b = back->request.params;
  EXPECT_EQ(back->request_id, m.request_id);
  EXPECT_EQ(back->mode, m.mode);
  EXPECT_EQ(back->request.prompt, m.request.prompt);
  EXPECT_EQ(back->request.priority, m.request.priority);
  EXPECT_EQ(b.temperature, a.temperature);
  EXPECT_EQ(b.top_k, a.top_k);
  EXPECT_EQ(b.top_p, a.top_p);
  EXPECT_EQ(b.min_p, a.min_p);
  EXPECT_EQ(b.repetition_penalty, a.repetition_penalty);
  EXPECT_EQ(b.presence_penalty, a.presence_penalty);
  EXPECT_EQ(b.frequency_penalty, a.frequency_penalty);
  EXPECT_EQ(b.logit_bias, a.logit_bias);
  EXPECT_EQ(b.seed, a.seed);
  EXPECT_EQ(b.max_tokens, a.max_tokens);
  EXPECT_EQ(b.min_tokens, a.min_tokens);
  EXPECT_EQ(b.ignore_eos, a.ignore_eos);
  EXPECT_EQ(b.stop_token_ids, a.stop_token_ids);
  EXPECT_EQ(b.stop, a.stop);
  EXPECT_EQ(b.logprobs, a.logprobs);
  EXPECT_EQ(b.logprobs_mode, a.logprobs_mode);
  EXPECT_EQ(b.skip_special_tokens, a.skip_special_tokens);
  EXPECT_EQ(back->output_tokens, m.output_tokens);
  EXPECT_EQ(back->source_host, m.source_host);
  EXPECT_EQ(back->source_port, m.source_port);

  AddRequestMsg unseeded = m;
  unseeded.request.params.seed.reset();
  Result<AddRequestMsg> back2 = DecodeAddRequest(Reframe(Encode(unseeded)));
  ASSERT_TRUE(back2.ok());
  EXPECT_FALSE(back2->request.params.seed.has_value());
}

TEST(WireTest, TokenOutputCarriesTransferFailureFlag) {
  TokenOutputMsg m;
  m.request_id = 4;
  m.kv_transfer_failed = true;
  m.output.finished = true;
  m.output.finish_reason = FinishReason::kError;
  Result<TokenOutputMsg> back = DecodeTokenOutput(Reframe(Encode(m)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->kv_transfer_failed);
  EXPECT_FALSE(back->kv_staged);
  // Bit 2 is kv_layerwise; bits past the three defined ones are refused.
  Frame f = Encode(m);
  f.payload[8] = 0x04;
  back = DecodeTokenOutput(f);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->kv_layerwise);
  EXPECT_FALSE(back->kv_transfer_failed);
  f.payload[8] = 0x08;
  EXPECT_FALSE(DecodeTokenOutput(f).ok());
}

TEST(WireTest, TokenOutputRoundTrips) {
  TokenOutputMsg m;
  m.request_id = 9;
  m.kv_staged = true;
  m.output.token_ids = {10, 11};
  m.output.text = "h\xc3\xa9llo";
  m.output.logprobs = {{-0.5f, {{10, -0.5f}, {3, -1.5f}}}, {-0.25f, {}}};
  m.output.finished = true;
  m.output.finish_reason = FinishReason::kStop;
  m.output.stop_string = "END";
  m.output.stop_token = 2;
  m.output.error = "none";
  m.output.num_prompt_tokens = 31;
  m.output.num_cached_tokens = 16;
  Result<TokenOutputMsg> back = DecodeTokenOutput(Reframe(Encode(m)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->request_id, 9u);
  EXPECT_TRUE(back->kv_staged);
  EXPECT_EQ(back->output.token_ids, m.output.token_ids);
  EXPECT_EQ(back->output.text, m.output.text);
  ASSERT_EQ(back->output.logprobs.size(), 2u);
  EXPECT_EQ(back->output.logprobs[0].top.size(), 2u);
  EXPECT_EQ(back->output.logprobs[0].top[1].token, 3);
  EXPECT_EQ(back->output.logprobs[1].logprob, -0.25f);
  EXPECT_TRUE(back->output.finished);
  EXPECT_EQ(back->output.finish_reason, FinishReason::kStop);
  EXPECT_EQ(back->output.stop_string, "END");
  EXPECT_EQ(back->output.stop_token, 2);
  EXPECT_EQ(back->output.error, "none");
  EXPECT_EQ(back->output.num_prompt_tokens, 31);
  EXPECT_EQ(back->output.num_cached_tokens, 16);
}

TEST(WireTest, SmallMessagesRoundTrip) {
  HelloMsg hello;
  hello.mac = RandomNonce();
  hello.role = WorkerRole::kDecode;
  hello.layout = {30, 16, 4096, 12288, 49152, 8192};
  Result<HelloMsg> h = DecodeHello(Reframe(Encode(hello)));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->mac, hello.mac);
  EXPECT_EQ(h->role, WorkerRole::kDecode);
  EXPECT_EQ(h->layout, hello.layout);

  Result<HelloAckMsg> ack =
      DecodeHelloAck(Reframe(Encode(HelloAckMsg{WorkerRole::kPrefill, hello.layout})));
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->role, WorkerRole::kPrefill);

  ChallengeMsg c{RandomNonce()};
  EXPECT_EQ(DecodeChallenge(Reframe(Encode(c)))->nonce, c.nonce);
  EXPECT_EQ(DecodeKvPull(Reframe(Encode(KvPullMsg{5, 17, {}})))->num_blocks, 17u);
  Result<KvDoneMsg> done = DecodeKvDone(Reframe(Encode(KvDoneMsg{5, false, "cancelled", {}})));
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(done->ok);
  EXPECT_EQ(done->error, "cancelled");
  EXPECT_TRUE(done->output_tokens.empty());
  done = DecodeKvDone(Reframe(Encode(KvDoneMsg{6, true, "", {42, 7}})));
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(done->ok);
  EXPECT_EQ(done->output_tokens, (std::vector<TokenId>{42, 7}));

  HeartbeatMsg hb;
  hb.stats = {100, 90, 3, 4, 5, 1ull << 40, 123456789012ull, 7};
  Result<HeartbeatMsg> hb2 = DecodeHeartbeat(Reframe(Encode(hb)));
  ASSERT_TRUE(hb2.ok());
  EXPECT_EQ(hb2->stats.num_queued_prefill_tokens, 1ull << 40);
  EXPECT_EQ(hb2->stats.kv_bytes_sent, 123456789012ull);
  EXPECT_EQ(hb2->stats.num_staged_blocks, 5u);
}

TEST(WireTest, KvBlockCarriesKThenV) {
  std::vector<uint8_t> k(64), v(64);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = uint8_t(i);
    v[i] = uint8_t(255 - i);
  }
  Result<KvBlockMsg> back = DecodeKvBlock(Reframe(EncodeKvBlock(3, 29, 6, k, v)));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->layer, 29u);
  EXPECT_EQ(back->block_index, 6u);
  ASSERT_EQ(back->bytes.size(), 128u);
  EXPECT_TRUE(std::equal(k.begin(), k.end(), back->bytes.begin()));
  EXPECT_TRUE(std::equal(v.begin(), v.end(), back->bytes.begin() + 64));
}

TEST(WireTest, RejectsBadHeaders) {
  std::vector<uint8_t> good = EncodeFrame(Encode(CancelMsg{1}));
  EXPECT_TRUE(DecodeFrame(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {  // every truncation
    EXPECT_FALSE(DecodeFrame(std::span(good).first(n)).ok()) << n;
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(DecodeFrame(longer).ok());

  auto corrupt = [&](size_t at, uint8_t value) {
    std::vector<uint8_t> b = good;
    b[at] = value;
    return DecodeFrameHeader(b);
  };
  EXPECT_EQ(corrupt(0, 'X').status().code(), StatusCode::kDataLoss);                    // magic
  EXPECT_EQ(corrupt(4, kWireVersion + 1).status().code(), StatusCode::kUnimplemented);  // version
  EXPECT_EQ(corrupt(6, 0).status().code(), StatusCode::kDataLoss);                      // type 0
  EXPECT_EQ(corrupt(6, kMaxMessageType + 1).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(corrupt(11, 0xff).status().code(), StatusCode::kDataLoss);  // 4 GiB payload
}

TEST(WireTest, RejectsTruncatedOrPaddedPayloads) {
  const Frame add = Encode(SampleAdd());
  for (size_t n = 0; n < add.payload.size(); ++n) {
    Frame cut{add.type, std::vector<uint8_t>(add.payload.begin(), add.payload.begin() + n)};
    EXPECT_FALSE(DecodeAddRequest(cut).ok()) << n;
  }
  Frame padded = add;
  padded.payload.push_back(0);
  EXPECT_FALSE(DecodeAddRequest(padded).ok());
  // The right payload under another type is refused.
  EXPECT_EQ(DecodeTokenOutput(add).status().code(), StatusCode::kInvalidArgument);
}

TEST(WireTest, HugeCountsFailBeforeAllocating) {
  // A prompt count of 2^32-1 with 4 bytes behind it must fail, not allocate 16 GiB.
  Frame f = Encode(SampleAdd());
  const size_t prompt_count_at = 8 + 1 + 4 + 4 * 7 + 4 + 8 * 2 + 1 + 8 + 4 + 4 + 1 + 4 + 4 * 2 + 4 +
                                 (4 + 2) + (4 + 3) + (4 + 0) + 4 + 1 + 1;
  ASSERT_EQ(f.payload[prompt_count_at], 4);  // the layout in docs/wire_format.md
  for (int i = 0; i < 4; ++i) f.payload[prompt_count_at + i] = 0xff;
  EXPECT_EQ(DecodeAddRequest(f).status().code(), StatusCode::kDataLoss);
}

TEST(WireTest, RandomBytesNeverCrashTheDecoders) {
  std::mt19937 rng(7);
  const Frame base = Encode(SampleAdd());
  for (int iter = 0; iter < 2000; ++iter) {
    Frame f = base;
    const int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; ++i) f.payload[rng() % f.payload.size()] ^= uint8_t(1 + rng() % 255);
    (void)DecodeAddRequest(f);  // ok or an error; ASan/UBSan builds check the rest
    f.type = MessageType::kTokenOutput;
    (void)DecodeTokenOutput(f);
  }
}

TEST(WireTest, HelloMacDependsOnSecretNonceAndRole) {
  const std::array<uint8_t, 32> nonce = RandomNonce();
  const auto mac = HelloMac("s3cret", nonce, WorkerRole::kRouter);
  EXPECT_TRUE(MacEquals(mac, HelloMac("s3cret", nonce, WorkerRole::kRouter)));
  EXPECT_FALSE(MacEquals(mac, HelloMac("s3cres", nonce, WorkerRole::kRouter)));
  EXPECT_FALSE(MacEquals(mac, HelloMac("s3cret", RandomNonce(), WorkerRole::kRouter)));
  EXPECT_FALSE(MacEquals(mac, HelloMac("s3cret", nonce, WorkerRole::kDecode)));
}

}  // namespace
}  // namespace cleave::cluster
