// Writes a seed corpus for wire_fuzz: one valid frame (header + payload) of each message type,
// with non-trivial contents, into the directory given as the only argument.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "cluster/wire.h"

using namespace cleave::cluster;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const KvLayout layout{30, 16, 2912, 6144, 49152, 8192};
  AddRequestMsg add;
  add.request_id = 7;
  add.mode = RequestMode::kDecodeLayerwise;
  add.request.prompt = {1, 2, 3, 4};
  add.request.params.temperature = 0.8f;
  add.request.params.seed = 42;
  add.request.params.stop = {"\n\n", "User:"};
  add.request.params.logit_bias = {{5, -1.5f}};
  add.output_tokens = {9, 10};
  add.source_host = "10.0.0.2";
  add.source_port = 9001;
  TokenOutputMsg out;
  out.request_id = 7;
  out.kv_staged = true;
  out.kv_transfer_us = 1234;
  out.output.token_ids = {11};
  out.output.text = "hi";
  out.output.logprobs = {{-0.5f, {{11, -0.5f}, {12, -1.0f}}}};
  const std::vector<Frame> frames = {
      Encode(ChallengeMsg{RandomNonce()}),
      Encode(HelloMsg{RandomNonce(), WorkerRole::kDecode, layout}),
      Encode(HelloAckMsg{WorkerRole::kPrefill, layout}),
      Encode(add),
      Encode(out),
      Encode(CancelMsg{7}),
      Encode(KvPullMsg{7, 2, {100, 101}}),
      Encode(KvBlockMsg{7, 3, 1, std::vector<uint8_t>(64, 0xab)}),
      Encode(KvDoneMsg{7, true, "", {11}}),
      Encode(HeartbeatMsg{{2912, 2000, 3, 1, 0, 512, 1 << 20, 0}}),
      Encode(JoinMsg{"10.0.0.3", 9001}),
      Encode(JoinAckMsg{false, "refused"}),
      Encode(ShmOfferMsg{"cleave-kv-abc", RandomNonce(), 1 << 30}),
      Encode(ShmAcceptMsg{true, ""}),
  };
  for (size_t i = 0; i < frames.size(); ++i) {
    const std::vector<uint8_t> bytes = EncodeFrame(frames[i]);
    std::ofstream(std::string(argv[1]) + "/frame" + std::to_string(i), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  return 0;
}
