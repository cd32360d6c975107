#include "cluster/wire.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

namespace cleave::cluster {

namespace {

// Appends little-endian fields to a payload.
class Writer {
 public:
  explicit Writer(size_t reserve = 64) { out_.reserve(reserve); }
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void I32(int32_t v) { U32(static_cast<uint32_t>(v)); }
  void F32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    U32(bits);
  }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void String(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Tokens(const std::vector<TokenId>& ids) {
    U32(static_cast<uint32_t>(ids.size()));
    for (TokenId t : ids) I32(t);
  }
  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> out_;
};

// Reads little-endian fields with bounds checks. The first failure sticks: later reads return
// zeros, and ok() stays false, so a decoder can read everything and check once (but must check
// counts with Fits() before allocating for them).
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size() - pos_; }
  // True if n elements of elem_bytes each remain (overflow-safe); fails the reader otherwise.
  bool Fits(uint64_t n, uint64_t elem_bytes) {
    if (elem_bytes != 0 && n > remaining() / elem_bytes) ok_ = false;
    return ok_;
  }
  uint8_t U8() { return static_cast<uint8_t>(Le(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  int32_t I32() { return static_cast<int32_t>(U32()); }
  float F32() {
    const uint32_t bits = U32();
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  bool Bool() {
    const uint8_t v = U8();
    if (v > 1) ok_ = false;
    return v == 1;
  }
  std::span<const uint8_t> Bytes(uint64_t n) {
    if (!Fits(n, 1)) return {};
    std::span<const uint8_t> s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::string String() {
    const uint32_t n = U32();
    std::span<const uint8_t> b = Bytes(n);
    return std::string(b.begin(), b.end());
  }
  std::vector<TokenId> Tokens() {
    const uint32_t n = U32();
    std::vector<TokenId> ids;
    if (!Fits(n, 4)) return ids;
    ids.resize(n);
    for (TokenId& t : ids) t = I32();
    return ids;
  }
  // Fails unless every byte was consumed.
  Status Finish(std::string_view what) {
    if (ok_ && pos_ != in_.size()) ok_ = false;
    if (!ok_) return DataLoss("malformed {} payload ({} bytes)", what, in_.size());
    return Status::Ok();
  }

 private:
  uint64_t Le(int n) {
    if (!Fits(n, 1)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(in_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

Status ExpectType(const Frame& f, MessageType type) {
  if (f.type != type) {
    return InvalidArgument("expected message type {}, got {}", uint16_t(type), uint16_t(f.type));
  }
  return Status::Ok();
}

void PutLayout(Writer& w, const KvLayout& l) {
  w.U32(l.num_layers);
  w.U32(l.block_size);
  w.U32(l.num_blocks);
  w.U64(l.block_bytes);
  w.U32(l.vocab_size);
  w.U32(l.max_model_len);
}

KvLayout GetLayout(Reader& r) {
  KvLayout l;
  l.num_layers = r.U32();
  l.block_size = r.U32();
  l.num_blocks = r.U32();
  l.block_bytes = r.U64();
  l.vocab_size = r.U32();
  l.max_model_len = r.U32();
  return l;
}

WorkerRole GetRole(Reader& r) {
  const uint8_t v = r.U8();
  if (v > uint8_t(WorkerRole::kMixed)) r.Fits(1, ~uint64_t{0});  // fails the reader
  return static_cast<WorkerRole>(v);
}

void PutParams(Writer& w, const SamplingParams& p) {
  w.F32(p.temperature);
  w.I32(p.top_k);
  w.F32(p.top_p);
  w.F32(p.min_p);
  w.F32(p.repetition_penalty);
  w.F32(p.presence_penalty);
  w.F32(p.frequency_penalty);
  w.U32(static_cast<uint32_t>(p.logit_bias.size()));
  for (const auto& [token, bias] : p.logit_bias) {
    w.I32(token);
    w.F32(bias);
  }
  w.U8(p.seed.has_value());
  w.U64(p.seed.value_or(0));
  w.I32(p.max_tokens);
  w.I32(p.min_tokens);
  w.U8(p.ignore_eos);
  w.Tokens(p.stop_token_ids);
  w.U32(static_cast<uint32_t>(p.stop.size()));
  for (const std::string& s : p.stop) w.String(s);
  w.I32(p.logprobs);
  w.U8(static_cast<uint8_t>(p.logprobs_mode));
  w.U8(p.skip_special_tokens);
}

SamplingParams GetParams(Reader& r) {
  SamplingParams p;
  p.temperature = r.F32();
  p.top_k = r.I32();
  p.top_p = r.F32();
  p.min_p = r.F32();
  p.repetition_penalty = r.F32();
  p.presence_penalty = r.F32();
  p.frequency_penalty = r.F32();
  const uint32_t num_bias = r.U32();
  if (r.Fits(num_bias, 8)) {
    p.logit_bias.resize(num_bias);
    for (auto& [token, bias] : p.logit_bias) {
      token = r.I32();
      bias = r.F32();
    }
  }
  const bool has_seed = r.Bool();
  const uint64_t seed = r.U64();
  if (has_seed) p.seed = seed;
  p.max_tokens = r.I32();
  p.min_tokens = r.I32();
  p.ignore_eos = r.Bool();
  p.stop_token_ids = r.Tokens();
  const uint32_t num_stop = r.U32();
  if (r.Fits(num_stop, 4)) {  // each string has at least its length prefix
    p.stop.resize(num_stop);
    for (std::string& s : p.stop) s = r.String();
  }
  p.logprobs = r.I32();
  const uint8_t mode = r.U8();
  if (mode > uint8_t(LogprobsMode::kProcessed)) r.Fits(1, ~uint64_t{0});
  p.logprobs_mode = static_cast<LogprobsMode>(mode);
  p.skip_special_tokens = r.Bool();
  return p;
}

Frame MakeFrame(MessageType type, Writer& w) {
  return Frame{type, w.Take()};
}

}  // namespace

std::string_view WorkerRoleName(WorkerRole role) {
  switch (role) {
    case WorkerRole::kRouter:
      return "router";
    case WorkerRole::kPrefill:
      return "prefill";
    case WorkerRole::kDecode:
      return "decode";
    case WorkerRole::kMixed:
      return "mixed";
  }
  return "?";
}

std::vector<uint8_t> EncodeFrame(const Frame& frame) {
  CLEAVE_CHECK(frame.payload.size() <= kMaxPayloadBytes, "frame payload of {} bytes",
               frame.payload.size());
  Writer w(kFrameHeaderBytes + frame.payload.size());
  w.U32(kWireMagic);
  w.U16(kWireVersion);
  w.U16(static_cast<uint16_t>(frame.type));
  w.U32(static_cast<uint32_t>(frame.payload.size()));
  w.Bytes(frame.payload);
  return w.Take();
}

Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> header) {
  if (header.size() < kFrameHeaderBytes) {
    return DataLoss("frame header truncated ({} bytes)", header.size());
  }
  Reader r(header.first(kFrameHeaderBytes));
  const uint32_t magic = r.U32();
  const uint16_t version = r.U16();
  const uint16_t type = r.U16();
  const uint32_t len = r.U32();
  if (magic != kWireMagic) return DataLoss("bad frame magic {:#010x}", magic);
  if (version != kWireVersion) {
    return Unimplemented("wire version {} (this build speaks {})", version, kWireVersion);
  }
  if (type == 0 || type > kMaxMessageType) return DataLoss("unknown message type {}", type);
  if (len > kMaxPayloadBytes) return DataLoss("frame payload of {} bytes exceeds the limit", len);
  return FrameHeader{static_cast<MessageType>(type), len};
}

Result<Frame> DecodeFrame(std::span<const uint8_t> bytes) {
  CLEAVE_ASSIGN_OR_RETURN(FrameHeader h, DecodeFrameHeader(bytes));
  if (bytes.size() - kFrameHeaderBytes != h.payload_len) {
    return DataLoss("frame holds {} payload bytes, header says {}",
                    bytes.size() - kFrameHeaderBytes, h.payload_len);
  }
  return Frame{h.type, std::vector<uint8_t>(bytes.begin() + kFrameHeaderBytes, bytes.end())};
}

Frame Encode(const ChallengeMsg& m) {
  Writer w;
  w.Bytes(m.nonce);
  return MakeFrame(MessageType::kChallenge, w);
}

Frame Encode(const HelloMsg& m) {
  Writer w;
  w.Bytes(m.mac);
  w.U8(static_cast<uint8_t>(m.role));
  PutLayout(w, m.layout);
  return MakeFrame(MessageType::kHello, w);
}

Frame Encode(const HelloAckMsg& m) {
  Writer w;
  w.U8(static_cast<uint8_t>(m.role));
  PutLayout(w, m.layout);
  return MakeFrame(MessageType::kHelloAck, w);
}

Frame Encode(const AddRequestMsg& m) {
  Writer w(256 + 4 * m.request.prompt.size());
  w.U64(m.request_id);
  w.U8(static_cast<uint8_t>(m.mode));
  w.I32(m.request.priority);
  PutParams(w, m.request.params);
  w.Tokens(m.request.prompt);
  w.Tokens(m.output_tokens);
  w.String(m.source_host);
  w.U16(m.source_port);
  return MakeFrame(MessageType::kAddRequest, w);
}

Frame Encode(const TokenOutputMsg& m) {
  const RequestOutput& o = m.output;
  Writer w(64 + 4 * o.token_ids.size() + o.text.size());
  w.U64(m.request_id);
  w.U8(uint8_t(m.kv_staged) | uint8_t(m.kv_transfer_failed) << 1 | uint8_t(m.kv_layerwise) << 2);
  w.U8(o.finished);
  w.U8(static_cast<uint8_t>(o.finish_reason));
  w.Tokens(o.token_ids);
  w.String(o.text);
  w.U32(static_cast<uint32_t>(o.logprobs.size()));
  for (const TokenLogprobs& lp : o.logprobs) {
    w.F32(lp.logprob);
    w.U32(static_cast<uint32_t>(lp.top.size()));
    for (const TokenLogprob& t : lp.top) {
      w.I32(t.token);
      w.F32(t.logprob);
    }
  }
  w.String(o.stop_string);
  w.I32(o.stop_token);
  w.String(o.error);
  w.I32(o.num_prompt_tokens);
  w.I32(o.num_cached_tokens);
  w.U32(m.kv_transfer_us);
  return MakeFrame(MessageType::kTokenOutput, w);
}

Frame Encode(const CancelMsg& m) {
  Writer w;
  w.U64(m.request_id);
  return MakeFrame(MessageType::kCancel, w);
}

Frame Encode(const KvPullMsg& m) {
  Writer w;
  w.U64(m.request_id);
  w.U32(m.num_blocks);
  w.U32(static_cast<uint32_t>(m.block_ids.size()));
  for (uint32_t id : m.block_ids) w.U32(id);
  return MakeFrame(MessageType::kKvPull, w);
}

Frame EncodeKvBlock(uint64_t request_id, uint32_t layer, uint32_t block_index,
                    std::span<const uint8_t> k, std::span<const uint8_t> v) {
  Writer w(20 + k.size() + v.size());
  w.U64(request_id);
  w.U32(layer);
  w.U32(block_index);
  w.U32(static_cast<uint32_t>(k.size() + v.size()));
  w.Bytes(k);
  w.Bytes(v);
  return MakeFrame(MessageType::kKvBlock, w);
}

Frame Encode(const KvBlockMsg& m) {
  return EncodeKvBlock(m.request_id, m.layer, m.block_index, m.bytes, {});
}

Frame Encode(const KvDoneMsg& m) {
  Writer w;
  w.U64(m.request_id);
  w.U8(m.ok);
  w.String(m.error);
  w.Tokens(m.output_tokens);
  return MakeFrame(MessageType::kKvDone, w);
}

Frame Encode(const ShmOfferMsg& m) {
  Writer w;
  w.String(m.socket_name);
  w.Bytes(m.token);
  w.U64(m.region_bytes);
  return MakeFrame(MessageType::kShmOffer, w);
}

Frame Encode(const ShmAcceptMsg& m) {
  Writer w;
  w.U8(m.ok);
  w.String(m.error);
  return MakeFrame(MessageType::kShmAccept, w);
}

Frame Encode(const JoinMsg& m) {
  Writer w;
  w.String(m.host);
  w.U16(m.port);
  return MakeFrame(MessageType::kJoin, w);
}

Frame Encode(const JoinAckMsg& m) {
  Writer w;
  w.U8(m.ok);
  w.String(m.error);
  return MakeFrame(MessageType::kJoinAck, w);
}

Frame Encode(const HeartbeatMsg& m) {
  Writer w;
  const WorkerStats& s = m.stats;
  w.U32(s.num_blocks);
  w.U32(s.num_free_blocks);
  w.U32(s.num_running);
  w.U32(s.num_waiting);
  w.U32(s.num_staged_blocks);
  w.U64(s.num_queued_prefill_tokens);
  w.U64(s.kv_bytes_sent);
  w.U64(s.kv_bytes_received);
  return MakeFrame(MessageType::kHeartbeat, w);
}

Result<ChallengeMsg> DecodeChallenge(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kChallenge));
  Reader r(f.payload);
  ChallengeMsg m;
  std::span<const uint8_t> nonce = r.Bytes(32);
  CLEAVE_RETURN_IF_ERROR(r.Finish("challenge"));
  std::memcpy(m.nonce.data(), nonce.data(), 32);
  return m;
}

Result<HelloMsg> DecodeHello(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kHello));
  Reader r(f.payload);
  HelloMsg m;
  std::span<const uint8_t> mac = r.Bytes(32);
  m.role = GetRole(r);
  m.layout = GetLayout(r);
  CLEAVE_RETURN_IF_ERROR(r.Finish("hello"));
  std::memcpy(m.mac.data(), mac.data(), 32);
  return m;
}

Result<HelloAckMsg> DecodeHelloAck(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kHelloAck));
  Reader r(f.payload);
  HelloAckMsg m;
  m.role = GetRole(r);
  m.layout = GetLayout(r);
  CLEAVE_RETURN_IF_ERROR(r.Finish("hello-ack"));
  return m;
}

Result<AddRequestMsg> DecodeAddRequest(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kAddRequest));
  Reader r(f.payload);
  AddRequestMsg m;
  m.request_id = r.U64();
  const uint8_t mode = r.U8();
  if (mode > uint8_t(RequestMode::kDecodeLayerwise)) r.Fits(1, ~uint64_t{0});
  m.mode = static_cast<RequestMode>(mode);
  m.request.priority = r.I32();
  m.request.params = GetParams(r);
  m.request.prompt = r.Tokens();
  m.output_tokens = r.Tokens();
  m.source_host = r.String();
  m.source_port = r.U16();
  CLEAVE_RETURN_IF_ERROR(r.Finish("add-request"));
  return m;
}

Result<TokenOutputMsg> DecodeTokenOutput(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kTokenOutput));
  Reader r(f.payload);
  TokenOutputMsg m;
  RequestOutput& o = m.output;
  m.request_id = r.U64();
  const uint8_t flags = r.U8();
  if (flags > 7) r.Fits(1, ~uint64_t{0});  // unknown flag bits: malformed
  m.kv_staged = flags & 1;
  m.kv_transfer_failed = flags & 2;
  m.kv_layerwise = flags & 4;
  o.finished = r.Bool();
  const uint8_t reason = r.U8();
  if (reason > uint8_t(FinishReason::kError)) r.Fits(1, ~uint64_t{0});
  o.finish_reason = static_cast<FinishReason>(reason);
  o.token_ids = r.Tokens();
  o.text = r.String();
  const uint32_t num_logprobs = r.U32();
  if (r.Fits(num_logprobs, 8)) {
    o.logprobs.resize(num_logprobs);
    for (TokenLogprobs& lp : o.logprobs) {
      lp.logprob = r.F32();
      const uint32_t num_top = r.U32();
      if (!r.Fits(num_top, 8)) break;
      lp.top.resize(num_top);
      for (TokenLogprob& t : lp.top) {
        t.token = r.I32();
        t.logprob = r.F32();
      }
    }
  }
  o.stop_string = r.String();
  o.stop_token = r.I32();
  o.error = r.String();
  o.num_prompt_tokens = r.I32();
  o.num_cached_tokens = r.I32();
  m.kv_transfer_us = r.U32();
  CLEAVE_RETURN_IF_ERROR(r.Finish("token-output"));
  return m;
}

Result<CancelMsg> DecodeCancel(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kCancel));
  Reader r(f.payload);
  CancelMsg m;
  m.request_id = r.U64();
  CLEAVE_RETURN_IF_ERROR(r.Finish("cancel"));
  return m;
}

Result<KvPullMsg> DecodeKvPull(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kKvPull));
  Reader r(f.payload);
  KvPullMsg m;
  m.request_id = r.U64();
  m.num_blocks = r.U32();
  const uint32_t num_ids = r.U32();
  if (r.Fits(num_ids, 4)) {
    m.block_ids.resize(num_ids);
    for (uint32_t& id : m.block_ids) id = r.U32();
  }
  CLEAVE_RETURN_IF_ERROR(r.Finish("kv-pull"));
  if (!m.block_ids.empty() && m.block_ids.size() != m.num_blocks) {
    return InvalidArgument("kv-pull: {} block ids for {} blocks", m.block_ids.size(), m.num_blocks);
  }
  return m;
}

Result<KvBlockMsg> DecodeKvBlock(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kKvBlock));
  Reader r(f.payload);
  KvBlockMsg m;
  m.request_id = r.U64();
  m.layer = r.U32();
  m.block_index = r.U32();
  const uint32_t n = r.U32();
  std::span<const uint8_t> bytes = r.Bytes(n);
  CLEAVE_RETURN_IF_ERROR(r.Finish("kv-block"));
  m.bytes.assign(bytes.begin(), bytes.end());
  return m;
}

Result<KvDoneMsg> DecodeKvDone(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kKvDone));
  Reader r(f.payload);
  KvDoneMsg m;
  m.request_id = r.U64();
  m.ok = r.Bool();
  m.error = r.String();
  m.output_tokens = r.Tokens();
  CLEAVE_RETURN_IF_ERROR(r.Finish("kv-done"));
  return m;
}

Result<ShmOfferMsg> DecodeShmOffer(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kShmOffer));
  Reader r(f.payload);
  ShmOfferMsg m;
  m.socket_name = r.String();
  std::span<const uint8_t> token = r.Bytes(32);
  m.region_bytes = r.U64();
  CLEAVE_RETURN_IF_ERROR(r.Finish("shm-offer"));
  std::memcpy(m.token.data(), token.data(), 32);
  if (m.socket_name.empty() || m.socket_name.size() > 100) {
    return InvalidArgument("shm-offer: socket name of {} bytes", m.socket_name.size());
  }
  return m;
}

Result<ShmAcceptMsg> DecodeShmAccept(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kShmAccept));
  Reader r(f.payload);
  ShmAcceptMsg m;
  m.ok = r.Bool();
  m.error = r.String();
  CLEAVE_RETURN_IF_ERROR(r.Finish("shm-accept"));
  return m;
}

Result<JoinMsg> DecodeJoin(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kJoin));
  Reader r(f.payload);
  JoinMsg m;
  m.host = r.String();
  m.port = r.U16();
  CLEAVE_RETURN_IF_ERROR(r.Finish("join"));
  if (m.host.empty() || m.port == 0) return InvalidArgument("join: empty host or port 0");
  return m;
}

Result<JoinAckMsg> DecodeJoinAck(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kJoinAck));
  Reader r(f.payload);
  JoinAckMsg m;
  m.ok = r.Bool();
  m.error = r.String();
  CLEAVE_RETURN_IF_ERROR(r.Finish("join-ack"));
  return m;
}

Result<HeartbeatMsg> DecodeHeartbeat(const Frame& f) {
  CLEAVE_RETURN_IF_ERROR(ExpectType(f, MessageType::kHeartbeat));
  Reader r(f.payload);
  HeartbeatMsg m;
  WorkerStats& s = m.stats;
  s.num_blocks = r.U32();
  s.num_free_blocks = r.U32();
  s.num_running = r.U32();
  s.num_waiting = r.U32();
  s.num_staged_blocks = r.U32();
  s.num_queued_prefill_tokens = r.U64();
  s.kv_bytes_sent = r.U64();
  s.kv_bytes_received = r.U64();
  CLEAVE_RETURN_IF_ERROR(r.Finish("heartbeat"));
  return m;
}

std::array<uint8_t, 32> HelloMac(std::string_view secret, const std::array<uint8_t, 32>& nonce,
                                 WorkerRole role) {
  constexpr std::string_view kLabel = "cleave-hello-v1";
  std::vector<uint8_t> msg(kLabel.begin(), kLabel.end());
  msg.insert(msg.end(), nonce.begin(), nonce.end());
  msg.push_back(static_cast<uint8_t>(role));
  std::array<uint8_t, 32> mac{};
  unsigned int len = 0;
  const unsigned char* ok = HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                                 msg.data(), msg.size(), mac.data(), &len);
  CLEAVE_CHECK(ok != nullptr && len == 32, "HMAC-SHA256 failed");
  return mac;
}

bool MacEquals(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::array<uint8_t, 32> RandomNonce() {
  std::array<uint8_t, 32> nonce{};
  CLEAVE_CHECK(RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) == 1, "RAND_bytes failed");
  return nonce;
}

}  // namespace cleave::cluster
