// libFuzzer target for the cluster wire format (src/cluster/wire.cc): arbitrary bytes from a
// peer go through DecodeFrame and, when the header is valid, the decoder of every message type.
// Nothing may crash, hang or allocate beyond the frame's size; a decoded message must re-encode
// to a frame that decodes again (the format is a bijection on what it accepts).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "cluster/wire.h"

namespace {

using namespace cleave::cluster;

void Check(bool condition) {
  if (!condition) std::abort();
}

// Decodes with `decode`; if accepted, the re-encoded message must decode again.
template <typename Decode>
void RoundTrip(const Frame& f, Decode decode) {
  auto m = decode(f);
  if (!m.ok()) return;
  const Frame again = Encode(*m);
  Check(again.type == f.type);
  Check(decode(again).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  (void)DecodeFrameHeader(bytes.first(std::min(size, kFrameHeaderBytes)));
  cleave::Result<Frame> frame = DecodeFrame(bytes);
  // Every decoder also sees the raw bytes as the payload of its own type.
  Frame raw;
  raw.payload.assign(data, data + size);
  for (const Frame* f : {frame.ok() ? &*frame : nullptr, &raw}) {
    if (f == nullptr) continue;
    for (uint16_t type = 1; type <= kMaxMessageType; ++type) {
      Frame typed = *f;
      typed.type = MessageType(type);
      switch (typed.type) {
        case MessageType::kChallenge:
          RoundTrip(typed, DecodeChallenge);
          break;
        case MessageType::kHello:
          RoundTrip(typed, DecodeHello);
          break;
        case MessageType::kHelloAck:
          RoundTrip(typed, DecodeHelloAck);
          break;
        case MessageType::kAddRequest:
          RoundTrip(typed, DecodeAddRequest);
          break;
        case MessageType::kTokenOutput:
          RoundTrip(typed, DecodeTokenOutput);
          break;
        case MessageType::kCancel:
          RoundTrip(typed, DecodeCancel);
          break;
        case MessageType::kKvPull:
          RoundTrip(typed, DecodeKvPull);
          break;
        case MessageType::kKvBlock:
          RoundTrip(typed, DecodeKvBlock);
          break;
        case MessageType::kKvDone:
          RoundTrip(typed, DecodeKvDone);
          break;
        case MessageType::kHeartbeat:
          RoundTrip(typed, DecodeHeartbeat);
          break;
        case MessageType::kJoin:
          RoundTrip(typed, DecodeJoin);
          break;
        case MessageType::kJoinAck:
          RoundTrip(typed, DecodeJoinAck);
          break;
        case MessageType::kShmOffer:
          RoundTrip(typed, DecodeShmOffer);
          break;
        case MessageType::kShmAccept:
          RoundTrip(typed, DecodeShmAccept);
          break;
      }
    }
  }
  return 0;
}
