// The cluster wire protocol: framed, explicit little-endian messages between the router and its
// workers, and between a decode worker and the prefill worker it pulls KV from. The byte layouts
// are documented in docs/wire_format.md; this file is their only encoder and decoder.
//
//   0        4        6        8                12
//   +--------+--------+--------+----------------+-------------------------+
//   | magic  | version| type   | payload_len    | payload (payload_len B) |
//   | u32    | u16    | u16    | u32            |                         |
//   +--------+--------+--------+----------------+-------------------------+
//
// Decoding never trusts a length: every count is checked against the bytes that remain before
// anything is allocated, every enum against its range, and a payload must be consumed exactly.
// A decode error is a Status (the peer is then dropped), never a crash.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"

namespace cleave::cluster {

constexpr uint32_t kWireMagic = 0x57564C43;  // bytes "CLVW"
constexpr uint16_t kWireVersion = 4;
constexpr size_t kFrameHeaderBytes = 12;
constexpr uint32_t kMaxPayloadBytes = 64u << 20;

enum class MessageType : uint16_t {
  kChallenge = 1,    // listener -> connector: nonce to authenticate against
  kHello = 2,        // connector -> listener: HMAC of the nonce, role, KV layout
  kHelloAck = 3,     // listener -> connector: its role and KV layout
  kAddRequest = 4,   // router -> worker
  kTokenOutput = 5,  // worker -> router
  kCancel = 6,       // router -> worker
  kKvPull = 7,       // decode -> prefill worker: blocks reserved, send the KV (flow control)
  kKvBlock = 8,      // prefill -> decode worker: one layer of one block, K then V
  kKvDone = 9,       // prefill -> decode worker: all blocks sent (or the transfer failed)
  kHeartbeat = 10,   // both ways; worker -> router carries its stats
  kJoin = 11,        // worker -> frontend (cleave worker --join): the address to connect to
  kJoinAck = 12,     // frontend -> worker: adopted, or why not
  kShmOffer = 13,    // decode -> prefill worker: fetch my KV cache's memfd (same host)
  kShmAccept = 14,   // prefill -> decode worker: mapped (later pulls go through it), or not
};
constexpr uint16_t kMaxMessageType = 14;

enum class WorkerRole : uint8_t { kRouter = 0, kPrefill = 1, kDecode = 2, kMixed = 3 };
std::string_view WorkerRoleName(WorkerRole role);

// What a worker does with an AddRequest.
enum class RequestMode : uint8_t {
  kFull = 0,         // run to the end (mixed worker)
  kPrefillOnly = 1,  // compute the prompt's KV, sample the first token, stage the KV
  kDecode = 2,       // pull the KV from source_host:source_port, then decode
  // As kDecode, sent together with the prefill: the KV streams in layer by layer while the
  // prefill worker computes it (layer-wise transfer).
  kDecodeLayerwise = 3,
};
inline bool IsDecodeMode(RequestMode m) {
  return m == RequestMode::kDecode || m == RequestMode::kDecodeLayerwise;
}

struct Frame {
  MessageType type = MessageType::kHeartbeat;
  std::vector<uint8_t> payload;
};

struct FrameHeader {
  MessageType type = MessageType::kHeartbeat;
  uint32_t payload_len = 0;
};

// Header followed by the payload.
std::vector<uint8_t> EncodeFrame(const Frame& frame);
// Checks magic, version, type and the payload bound.
Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> header);
// One whole frame (header + payload, nothing after it).
Result<Frame> DecodeFrame(std::span<const uint8_t> bytes);

// KV geometry of a worker; both ends of a KV transfer must agree on it exactly.
struct KvLayout {
  uint32_t num_layers = 0;
  uint32_t block_size = 0;   // token slots per block
  uint32_t num_blocks = 0;   // blocks in the worker's pool
  uint64_t block_bytes = 0;  // bytes of K (= bytes of V) of one block in one layer
  uint32_t vocab_size = 0;
  uint32_t max_model_len = 0;
  bool operator==(const KvLayout&) const = default;
};

struct ChallengeMsg {
  std::array<uint8_t, 32> nonce{};
};

struct HelloMsg {
  std::array<uint8_t, 32> mac{};  // HelloMac(secret, nonce, role)
  WorkerRole role = WorkerRole::kRouter;
  KvLayout layout;  // zero for the router
};

struct HelloAckMsg {
  WorkerRole role = WorkerRole::kMixed;
  KvLayout layout;
};

struct AddRequestMsg {
  uint64_t request_id = 0;  // the router's id; workers key everything by it
  RequestMode mode = RequestMode::kFull;
  Request request;
  // Tokens generated (and streamed to the client) by earlier attempts of this request: the
  // worker continues after them (Engine::AddRequest's output_tokens). For the decode modes the
  // prefill worker's KV covers prompt + output_tokens; the tokens it sampled come with KvDone.
  std::vector<TokenId> output_tokens;
  std::string source_host;  // kDecode: the prefill worker holding the KV
  uint16_t source_port = 0;
};

struct TokenOutputMsg {
  uint64_t request_id = 0;
  bool kv_staged = false;  // prefill worker: the KV waits to be pulled (output not final)
  // decode worker, with finish_reason kError: the prompt's KV never arrived (cut, stalled or
  // refused transfer); nothing was generated here, so the router may prefill it again.
  bool kv_transfer_failed = false;
  // decode worker, first output after a pull: microseconds from KvPull sent to the KV complete
  // (layer-wise: from the first KV data to KvDone, a span that overlaps the prefill's compute).
  uint32_t kv_transfer_us = 0;
  // decode worker, with kv_transfer_us: the KV streamed in layer by layer during the prefill.
  bool kv_layerwise = false;
  RequestOutput output;  // request_id, times and cached counts are not carried
};

struct CancelMsg {
  uint64_t request_id = 0;
};

struct KvPullMsg {
  uint64_t request_id = 0;
  uint32_t num_blocks = 0;  // blocks the decode worker reserved
  // Shared memory only (after ShmAccept): the reserved block ids, num_blocks of them, for the
  // prefill worker to write into. Empty: send KvBlock frames.
  std::vector<uint32_t> block_ids;
};

struct KvBlockMsg {
  uint64_t request_id = 0;
  uint32_t layer = 0;
  uint32_t block_index = 0;    // index in the request's block table
  std::vector<uint8_t> bytes;  // K then V, 2 * block_bytes
};

struct KvDoneMsg {
  uint64_t request_id = 0;
  bool ok = true;
  std::string error;
  // The tokens the prefill worker sampled (its first token). A decode worker whose AddRequest
  // came before the prefill finished (layer-wise transfer) takes them from here.
  std::vector<TokenId> output_tokens;
};

struct WorkerStats {
  uint32_t num_blocks = 0;
  uint32_t num_free_blocks = 0;
  uint32_t num_running = 0;
  uint32_t num_waiting = 0;  // in the engine plus admission queue
  uint32_t num_staged_blocks = 0;
  uint64_t num_queued_prefill_tokens = 0;
  uint64_t kv_bytes_sent = 0;
  uint64_t kv_bytes_received = 0;
};

struct HeartbeatMsg {
  WorkerStats stats;
};

struct ShmOfferMsg {
  std::string socket_name;  // abstract Unix socket of the decode worker
  std::array<uint8_t, 32> token{};
  uint64_t region_bytes = 0;  // the memfd's size: the KV cache's bytes for the shared layout
};

struct ShmAcceptMsg {
  bool ok = false;
  std::string error;
};

struct JoinMsg {
  std::string host;  // where the router and the other workers reach this worker
  uint16_t port = 0;
};

struct JoinAckMsg {
  bool ok = false;
  std::string error;
};

Frame Encode(const ChallengeMsg& m);
Frame Encode(const HelloMsg& m);
Frame Encode(const HelloAckMsg& m);
Frame Encode(const AddRequestMsg& m);
Frame Encode(const TokenOutputMsg& m);
Frame Encode(const CancelMsg& m);
Frame Encode(const KvPullMsg& m);
Frame Encode(const KvBlockMsg& m);
Frame Encode(const KvDoneMsg& m);
Frame Encode(const HeartbeatMsg& m);
Frame Encode(const JoinMsg& m);
Frame Encode(const ShmOfferMsg& m);
Frame Encode(const ShmAcceptMsg& m);
Frame Encode(const JoinAckMsg& m);
// A KvBlock frame straight from the cache's bytes (no intermediate vector).
Frame EncodeKvBlock(uint64_t request_id, uint32_t layer, uint32_t block_index,
                    std::span<const uint8_t> k, std::span<const uint8_t> v);

// Each fails with InvalidArgument if the frame has another type or a malformed payload.
Result<ChallengeMsg> DecodeChallenge(const Frame& f);
Result<HelloMsg> DecodeHello(const Frame& f);
Result<HelloAckMsg> DecodeHelloAck(const Frame& f);
Result<AddRequestMsg> DecodeAddRequest(const Frame& f);
Result<TokenOutputMsg> DecodeTokenOutput(const Frame& f);
Result<CancelMsg> DecodeCancel(const Frame& f);
Result<KvPullMsg> DecodeKvPull(const Frame& f);
Result<KvBlockMsg> DecodeKvBlock(const Frame& f);
Result<KvDoneMsg> DecodeKvDone(const Frame& f);
Result<HeartbeatMsg> DecodeHeartbeat(const Frame& f);
Result<JoinMsg> DecodeJoin(const Frame& f);
Result<ShmOfferMsg> DecodeShmOffer(const Frame& f);
Result<ShmAcceptMsg> DecodeShmAccept(const Frame& f);
Result<JoinAckMsg> DecodeJoinAck(const Frame& f);

// Peer authentication: HMAC-SHA256(secret, "cleave-hello-v1" || nonce || role).
std::array<uint8_t, 32> HelloMac(std::string_view secret, const std::array<uint8_t, 32>& nonce,
                                 WorkerRole role);
// Constant-time comparison.
bool MacEquals(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b);
// 32 bytes from the OS's CSPRNG.
std::array<uint8_t, 32> RandomNonce();

}  // namespace cleave::cluster
