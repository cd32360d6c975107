// Transport: an ordered, reliable stream of frames between two peers. Two implementations:
// TCP (across processes and hosts; listeners bind to loopback unless told otherwise) and an
// in-process pipe (tests). Shared memory would be a third.
//
// Thread-safety: Send may be called from any thread (frames are never interleaved); Recv from
// one thread at a time. Close may be called from any thread and makes a blocked Recv return.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "cluster/wire.h"
#include "core/status.h"

namespace cleave::cluster {

class Connection {
 public:
  virtual ~Connection() = default;
  // Writes one whole frame. Unavailable once the peer is gone or the connection is closed.
  virtual Status Send(const Frame& frame) = 0;
  // Blocks for the next frame. Unavailable at end of stream; DataLoss for a corrupt frame.
  virtual Result<Frame> Recv() = 0;
  // Shuts the connection down both ways; idempotent.
  virtual void Close() = 0;
  // "host:port" of the peer, for logs.
  virtual std::string peer() const = 0;
};

// A TCP connection (TCP_NODELAY; the frames are the messages).
class TcpConnection : public Connection {
 public:
  explicit TcpConnection(int fd, std::string peer);
  ~TcpConnection() override;
  Status Send(const Frame& frame) override;
  Result<Frame> Recv() override;
  void Close() override;
  std::string peer() const override { return peer_; }
  // This end's IPv4 address (getsockname), e.g. the address a host is reached at on the route
  // to the peer; "" on error.
  std::string local_host() const;
  // A Recv that waits longer than this fails with Unavailable (0: wait forever, the default).
  void set_recv_timeout_ms(int timeout_ms);

 private:
  int fd_;
  std::string peer_;
  std::mutex send_mu_;
  std::atomic<bool> closed_{false};
};

// Connects to host:port (IPv4 address or name), with a timeout in milliseconds.
Result<std::unique_ptr<Connection>> TcpConnect(const std::string& host, uint16_t port,
                                               int timeout_ms = 5000);

class TcpListener {
 public:
  // Binds and listens; port 0 picks a free port (see port()).
  static Result<std::unique_ptr<TcpListener>> Listen(const std::string& host, uint16_t port);
  ~TcpListener();
  // Blocks for the next connection; Unavailable after Close().
  Result<std::unique_ptr<Connection>> Accept();
  void Close();
  uint16_t port() const { return port_; }

 private:
  TcpListener(int fd, uint16_t port) : fd_(fd), port_(port) {}
  int fd_;
  uint16_t port_;
  std::atomic<bool> closed_{false};
};

// --- Test-only fault injection -------------------------------------------------------------
// A worker started with CLEAVE_FAULT_KV=cut:N or stall:N wraps its first KV-serving connection
// (prefill side) in a FaultyConnection: after N KvBlock frames have gone out, the next one
// either cuts the connection (both ends see the stream end) or stalls (Send blocks, sending
// nothing, until Close or stall_limit). Never set it in production: it exists so that tests can
// prove a cut or stalled transfer frees its blocks and fails (or retries) the request.
struct KvFault {
  enum class Kind : uint8_t { kNone, kCut, kStall };
  Kind kind = Kind::kNone;
  int64_t after_frames = 0;  // KvBlock frames that go through before the fault
};
// "cut:N" or "stall:N" (N >= 0); empty gives kNone.
Result<KvFault> ParseKvFault(std::string_view spec);

class FaultyConnection : public Connection {
 public:
  FaultyConnection(std::shared_ptr<Connection> inner, KvFault fault,
                   std::chrono::milliseconds stall_limit = std::chrono::seconds(60));
  ~FaultyConnection() override;
  Status Send(const Frame& frame) override;
  Result<Frame> Recv() override { return inner_->Recv(); }
  void Close() override;
  std::string peer() const override { return inner_->peer(); }
  // KvBlock frames passed to the inner connection.
  int64_t kv_frames_sent() const { return kv_frames_sent_; }

 private:
  std::shared_ptr<Connection> inner_;
  const KvFault fault_;
  const std::chrono::milliseconds stall_limit_;
  std::atomic<int64_t> kv_frames_sent_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
};

// Two connected in-process endpoints; frames still go through EncodeFrame/DecodeFrame so that
// tests exercise the byte format.
std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>> InProcessPipe();

// Splits "host:port"; InvalidArgument if malformed.
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& address);

// The handshake. The listener side sends a challenge and checks the connector's HMAC
// (Unauthenticated if wrong); both sides learn each other's role and KV layout.
Result<HelloMsg> AcceptHandshake(Connection& conn, const std::string& secret, WorkerRole role,
                                 const KvLayout& layout);
Result<HelloAckMsg> ConnectHandshake(Connection& conn, const std::string& secret, WorkerRole role,
                                     const KvLayout& layout);

}  // namespace cleave::cluster
