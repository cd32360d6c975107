// Shared-memory KV transfer between a decode and a prefill worker on the same host.
//
// The decode worker's KV cache lives in a memfd mapping (SharedKvRegion, KvCache's external
// storage). When it connects to a prefill worker it offers that memory over the authenticated
// TCP connection (ShmOffer: the name of its abstract Unix socket and a one-time token); the
// prefill worker connects to the socket, presents the token and receives the memfd by
// SCM_RIGHTS, maps it and answers ShmAccept. From then on a KvPull on that connection lists the
// decode worker's reserved block ids, the prefill worker copies its staged K and V straight into
// those blocks of the mapping (no receive-side copy) and sends only KvDone.
//
//   decode                                                  prefill
//     | -- ShmOffer { socket, token, region_bytes } (TCP) --> |
//     | <-- connect @socket, token ----------- (Unix) ------- |
//     | --- memfd (SCM_RIGHTS) ---------------- (Unix) -----> |  fstat size == region_bytes
//     | <-- ShmAccept { ok } ----------------------- (TCP) -- |
//     | -- KvPull { id, n, block_ids[n] } -----------------> |  every id < num_blocks
//     | <-- KvDone { id, ok } ------------------------------- |  after the copies
//
// Abstract Unix sockets belong to a network namespace, so workers on other hosts (or in other
// namespaces) fail the fetch and the pair stays on TCP (--kv-transport auto).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cluster/wire.h"
#include "core/status.h"

namespace cleave::cluster {

// A shared, writable mapping of a memfd. Thread-safe to read and write as memory.
class SharedKvRegion {
 public:
  // A fresh zeroed region of `bytes` bytes.
  static Result<std::unique_ptr<SharedKvRegion>> Create(uint64_t bytes);
  // Maps a region received from a peer; takes the fd. FailedPrecondition unless its size is
  // exactly expected_bytes.
  static Result<std::unique_ptr<SharedKvRegion>> Map(int fd, uint64_t expected_bytes);
  ~SharedKvRegion();
  SharedKvRegion(const SharedKvRegion&) = delete;
  SharedKvRegion& operator=(const SharedKvRegion&) = delete;

  std::span<uint8_t> bytes() { return {data_, size_}; }
  int fd() const { return fd_; }

 private:
  SharedKvRegion(int fd, uint8_t* data, uint64_t size) : fd_(fd), data_(data), size_(size) {}
  int fd_;
  uint8_t* data_;
  uint64_t size_;
};

// Bytes of a KvCache's storage for `layout` ([layer][K | V][num_blocks] blocks of block_bytes).
Result<uint64_t> KvRegionBytes(const KvLayout& layout);
// Offset of (layer, K or V, block_id) in that storage; OutOfRange for an id or layer outside
// the layout (the ids come from the peer).
Result<uint64_t> KvBlockOffset(const KvLayout& layout, uint32_t layer, bool value,
                               uint32_t block_id);

// Decode side: hands the memfd to whoever presents a token issued by NewToken (each once), on
// an abstract Unix socket with a random name. Serves one connection at a time on its thread.
class ShmOfferServer {
 public:
  static Result<std::unique_ptr<ShmOfferServer>> Start(int memfd);
  ~ShmOfferServer();  // Stop()
  void Stop();
  const std::string& name() const { return name_; }
  std::array<uint8_t, 32> NewToken();

 private:
  ShmOfferServer() = default;
  void Serve(int fd);
  int listen_fd_ = -1;
  int memfd_ = -1;
  std::string name_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  std::vector<std::array<uint8_t, 32>> tokens_;  // issued, not yet used
};

// Prefill side: fetches the memfd offered under `name` with `token`. Unavailable if the socket
// cannot be reached (another host or namespace) or the offer is refused.
Result<int> FetchShmFd(const std::string& name, const std::array<uint8_t, 32>& token,
                       int timeout_ms = 2000);

}  // namespace cleave::cluster
