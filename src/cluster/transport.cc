#include "cluster/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>

namespace cleave::cluster {

namespace {

// Reads exactly n bytes; false at EOF or on error.
bool ReadFull(int fd, uint8_t* data, size_t n) {
  while (n > 0) {
    const ssize_t got = ::recv(fd, data, n, 0);
    if (got == 0) return false;
    if (got < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += got;
    n -= size_t(got);
  }
  return true;
}

bool WriteFull(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    const ssize_t put = ::send(fd, data, n, MSG_NOSIGNAL);
    if (put < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += put;
    n -= size_t(put);
  }
  return true;
}

std::string AddressString(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
  return fmt::format("{}:{}", buf, ntohs(a.sin_port));
}

Result<sockaddr_in> Resolve(const std::string& host, uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1) return addr;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    return Unavailable("cannot resolve {}", host);
  }
  addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return addr;
}

// One direction of an in-process pipe.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<uint8_t>> frames;
  bool closed = false;
};

class InProcessConnection : public Connection {
 public:
  InProcessConnection(std::shared_ptr<Channel> in, std::shared_ptr<Channel> out)
      : in_(std::move(in)), out_(std::move(out)) {}
  ~InProcessConnection() override { Close(); }
  Status Send(const Frame& frame) override {
    std::vector<uint8_t> bytes = EncodeFrame(frame);
    std::lock_guard lock(out_->mu);
    if (out_->closed) return Unavailable("in-process peer closed");
    out_->frames.push_back(std::move(bytes));
    out_->cv.notify_all();
    return Status::Ok();
  }
  Result<Frame> Recv() override {
    std::unique_lock lock(in_->mu);
    in_->cv.wait(lock, [&] { return in_->closed || !in_->frames.empty(); });
    if (in_->frames.empty()) return Unavailable("in-process peer closed");
    std::vector<uint8_t> bytes = std::move(in_->frames.front());
    in_->frames.pop_front();
    return DecodeFrame(bytes);
  }
  void Close() override {
    for (Channel* c : {in_.get(), out_.get()}) {
      std::lock_guard lock(c->mu);
      c->closed = true;
      c->cv.notify_all();
    }
  }
  std::string peer() const override { return "in-process"; }

 private:
  std::shared_ptr<Channel> in_, out_;
};

}  // namespace

TcpConnection::TcpConnection(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

TcpConnection::~TcpConnection() {
  Close();
  ::close(fd_);
}

Status TcpConnection::Send(const Frame& frame) {
  if (frame.payload.size() > kMaxPayloadBytes) {
    return OutOfRange("frame of {} bytes exceeds the wire limit", frame.payload.size());
  }
  // Header and payload go out separately (no copy of large KV payloads into one buffer).
  uint8_t header[kFrameHeaderBytes];
  const uint32_t fields[3] = {kWireMagic, uint32_t(kWireVersion) | (uint32_t(frame.type) << 16),
                              uint32_t(frame.payload.size())};
  for (int f = 0; f < 3; ++f) {
    for (int i = 0; i < 4; ++i) header[4 * f + i] = uint8_t(fields[f] >> (8 * i));
  }
  std::lock_guard lock(send_mu_);
  if (closed_) return Unavailable("connection to {} is closed", peer_);
  if (!WriteFull(fd_, header, sizeof(header)) ||
      !WriteFull(fd_, frame.payload.data(), frame.payload.size())) {
    return Unavailable("send to {} failed: {}", peer_, std::strerror(errno));
  }
  return Status::Ok();
}

Result<Frame> TcpConnection::Recv() {
  uint8_t header[kFrameHeaderBytes];
  if (!ReadFull(fd_, header, sizeof(header))) return Unavailable("{} closed the connection", peer_);
  CLEAVE_ASSIGN_OR_RETURN(FrameHeader h, DecodeFrameHeader(header));
  Frame frame{h.type, std::vector<uint8_t>(h.payload_len)};
  if (!ReadFull(fd_, frame.payload.data(), frame.payload.size())) {
    return Unavailable("{} closed the connection mid-frame", peer_);
  }
  return frame;
}

std::string TcpConnection::local_host() const {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof(buf));
  return buf;
}

void TcpConnection::set_recv_timeout_ms(int timeout_ms) {
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void TcpConnection::Close() {
  if (closed_.exchange(true)) return;
  ::shutdown(fd_, SHUT_RDWR);
}

Result<std::unique_ptr<Connection>> TcpConnect(const std::string& host, uint16_t port,
                                               int timeout_ms) {
  CLEAVE_ASSIGN_OR_RETURN(sockaddr_in addr, Resolve(host, port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Unavailable("socket: {}", std::strerror(errno));
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc < 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    rc = ::poll(&p, 1, timeout_ms) == 1 ? 0 : -1;
    int err = 0;
    socklen_t len = sizeof(err);
    if (rc == 0 && (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)) {
      errno = err;
      rc = -1;
    }
  }
  if (rc < 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("cannot connect to {}:{}: {}", host, port, why);
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return std::unique_ptr<Connection>(
      std::make_unique<TcpConnection>(fd, fmt::format("{}:{}", host, port)));
}

Result<std::unique_ptr<TcpListener>> TcpListener::Listen(const std::string& host, uint16_t port) {
  CLEAVE_ASSIGN_OR_RETURN(sockaddr_in addr, Resolve(host, port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable("socket: {}", std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || ::listen(fd, 128) < 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("cannot listen on {}:{}: {}", host, port, why);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<TcpListener>(new TcpListener(fd, ntohs(addr.sin_port)));
}

TcpListener::~TcpListener() {
  Close();
  ::close(fd_);
}

Result<std::unique_ptr<Connection>> TcpListener::Accept() {
  while (true) {
    sockaddr_in peer{};
    socklen_t len = sizeof(peer);
    const int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd >= 0) {
      return std::unique_ptr<Connection>(std::make_unique<TcpConnection>(fd, AddressString(peer)));
    }
    if (closed_) return Unavailable("listener closed");
    if (errno != EINTR && errno != ECONNABORTED) {
      return Unavailable("accept: {}", std::strerror(errno));
    }
  }
}

void TcpListener::Close() {
  if (closed_.exchange(true)) return;
  ::shutdown(fd_, SHUT_RDWR);  // wakes a blocked accept
}

Result<KvFault> ParseKvFault(std::string_view spec) {
  KvFault fault;
  if (spec.empty()) return fault;
  const size_t colon = spec.find(':');
  const std::string_view kind = spec.substr(0, colon);
  if (kind == "cut") {
    fault.kind = KvFault::Kind::kCut;
  } else if (kind == "stall") {
    fault.kind = KvFault::Kind::kStall;
  } else {
    return InvalidArgument("KV fault '{}': expected cut:N or stall:N", spec);
  }
  if (colon == std::string_view::npos) {
    return InvalidArgument("KV fault '{}': expected cut:N or stall:N", spec);
  }
  const char* begin = spec.data() + colon + 1;
  const char* end = spec.data() + spec.size();
  auto [ptr, ec] = std::from_chars(begin, end, fault.after_frames);
  if (ec != std::errc() || ptr != end || begin == end || fault.after_frames < 0) {
    return InvalidArgument("KV fault '{}': N must be a count of frames", spec);
  }
  return fault;
}

FaultyConnection::FaultyConnection(std::shared_ptr<Connection> inner, KvFault fault,
                                   std::chrono::milliseconds stall_limit)
    : inner_(std::move(inner)), fault_(fault), stall_limit_(stall_limit) {}

FaultyConnection::~FaultyConnection() {
  Close();
}

Status FaultyConnection::Send(const Frame& frame) {
  if (frame.type != MessageType::kKvBlock || fault_.kind == KvFault::Kind::kNone ||
      kv_frames_sent_ < fault_.after_frames) {
    Status s = inner_->Send(frame);
    if (s.ok() && frame.type == MessageType::kKvBlock) ++kv_frames_sent_;
    return s;
  }
  if (fault_.kind == KvFault::Kind::kCut) {
    inner_->Close();
    return Unavailable("fault injection: connection to {} cut after {} KV frames", peer(),
                       fault_.after_frames);
  }
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, stall_limit_, [&] { return closed_; });
  return Unavailable("fault injection: send to {} stalled after {} KV frames", peer(),
                     fault_.after_frames);
}

void FaultyConnection::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  inner_->Close();
}

std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>> InProcessPipe() {
  auto a_to_b = std::make_shared<Channel>();
  auto b_to_a = std::make_shared<Channel>();
  return {std::make_unique<InProcessConnection>(b_to_a, a_to_b),
          std::make_unique<InProcessConnection>(a_to_b, b_to_a)};
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("'{}' is not HOST:PORT", address);
  }
  unsigned port = 0;
  const char* begin = address.data() + colon + 1;
  const char* end = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || begin == end || port > 65535) {
    return InvalidArgument("'{}' has no valid port", address);
  }
  return std::make_pair(address.substr(0, colon), uint16_t(port));
}

Result<HelloMsg> AcceptHandshake(Connection& conn, const std::string& secret, WorkerRole role,
                                 const KvLayout& layout) {
  const ChallengeMsg challenge{RandomNonce()};
  CLEAVE_RETURN_IF_ERROR(conn.Send(Encode(challenge)));
  CLEAVE_ASSIGN_OR_RETURN(Frame frame, conn.Recv());
  CLEAVE_ASSIGN_OR_RETURN(HelloMsg hello, DecodeHello(frame));
  if (!MacEquals(hello.mac, HelloMac(secret, challenge.nonce, hello.role))) {
    return Unauthenticated("peer {} failed authentication (wrong shared secret)", conn.peer());
  }
  CLEAVE_RETURN_IF_ERROR(conn.Send(Encode(HelloAckMsg{role, layout})));
  return hello;
}

Result<HelloAckMsg> ConnectHandshake(Connection& conn, const std::string& secret, WorkerRole role,
                                     const KvLayout& layout) {
  CLEAVE_ASSIGN_OR_RETURN(Frame frame, conn.Recv());
  CLEAVE_ASSIGN_OR_RETURN(ChallengeMsg challenge, DecodeChallenge(frame));
  HelloMsg hello;
  hello.mac = HelloMac(secret, challenge.nonce, role);
  hello.role = role;
  hello.layout = layout;
  CLEAVE_RETURN_IF_ERROR(conn.Send(Encode(hello)));
  // A listener that refuses us closes the connection: Recv then fails.
  CLEAVE_ASSIGN_OR_RETURN(Frame ack, conn.Recv());
  return DecodeHelloAck(ack);
}

}  // namespace cleave::cluster
