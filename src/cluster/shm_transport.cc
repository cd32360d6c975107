#include "cluster/shm_transport.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cleave::cluster {

namespace {

// Abstract-namespace address: sun_path[0] = 0, then the name (no terminator).
socklen_t AbstractAddress(const std::string& name, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  const size_t n = std::min(name.size(), sizeof(addr.sun_path) - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  return socklen_t(offsetof(sockaddr_un, sun_path) + 1 + n);
}

bool ReadAll(int fd, uint8_t* data, size_t n, int timeout_ms) {
  while (n > 0) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return false;
    const ssize_t got = ::recv(fd, data, n, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      return false;
    }
    data += got;
    n -= size_t(got);
  }
  return true;
}

bool Mul(uint64_t a, uint64_t b, uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace

Result<std::unique_ptr<SharedKvRegion>> SharedKvRegion::Create(uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("empty shared KV region");
  const int fd = ::memfd_create("cleave-kv", MFD_CLOEXEC);
  if (fd < 0) return Unavailable("memfd_create: {}", std::strerror(errno));
  if (::ftruncate(fd, off_t(bytes)) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("ftruncate({}): {}", bytes, why);
  }
  // Populated now (the KV cache's pages are all used sooner or later): otherwise the first
  // decode step over freshly transferred blocks pays a page fault per 4 KiB on the hand-off.
  void* data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (data == MAP_FAILED) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("mmap of {} bytes: {}", bytes, why);
  }
  return std::unique_ptr<SharedKvRegion>(
      new SharedKvRegion(fd, static_cast<uint8_t*>(data), bytes));
}

Result<std::unique_ptr<SharedKvRegion>> SharedKvRegion::Map(int fd, uint64_t expected_bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
      uint64_t(st.st_size) != expected_bytes || expected_bytes == 0) {
    ::close(fd);
    return FailedPrecondition("offered KV region is not a file of {} bytes", expected_bytes);
  }
  // Populated: the peer's pages exist, so this only maps them (no faults while prefilling).
  void* data =
      ::mmap(nullptr, expected_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (data == MAP_FAILED) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("mmap of the offered KV region: {}", why);
  }
  return std::unique_ptr<SharedKvRegion>(
      new SharedKvRegion(fd, static_cast<uint8_t*>(data), expected_bytes));
}

SharedKvRegion::~SharedKvRegion() {
  ::munmap(data_, size_);
  ::close(fd_);
}

Result<uint64_t> KvRegionBytes(const KvLayout& layout) {
  uint64_t blocks = 0, bytes = 0;
  if (!Mul(uint64_t(layout.num_layers) * 2, layout.num_blocks, blocks) ||
      !Mul(blocks, layout.block_bytes, bytes)) {
    return OutOfRange("KV layout overflows");
  }
  return bytes;
}

Result<uint64_t> KvBlockOffset(const KvLayout& layout, uint32_t layer, bool value,
                               uint32_t block_id) {
  if (layer >= layout.num_layers || block_id >= layout.num_blocks) {
    return OutOfRange("KV block (layer {}, block {}) outside {} layers x {} blocks", layer,
                      block_id, layout.num_layers, layout.num_blocks);
  }
  const uint64_t index =
      (uint64_t(2) * layer + (value ? 1 : 0)) * layout.num_blocks + uint64_t(block_id);
  uint64_t offset = 0;
  if (!Mul(index, layout.block_bytes, offset)) return OutOfRange("KV block offset overflows");
  return offset;
}

Result<std::unique_ptr<ShmOfferServer>> ShmOfferServer::Start(int memfd) {
  std::unique_ptr<ShmOfferServer> s(new ShmOfferServer());
  s->memfd_ = memfd;
  const std::array<uint8_t, 32> nonce = RandomNonce();
  s->name_ = fmt::format("cleave-kv-{}-{:02x}", ::getpid(),
                         fmt::join(nonce.begin(), nonce.begin() + 8, ""));
  s->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd_ < 0) return Unavailable("unix socket: {}", std::strerror(errno));
  sockaddr_un addr;
  const socklen_t len = AbstractAddress(s->name_, addr);
  if (::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(s->listen_fd_, 16) != 0) {
    return Unavailable("cannot listen on @{}: {}", s->name_, std::strerror(errno));
  }
  ShmOfferServer* self = s.get();
  s->thread_ = std::thread([self] {
    while (!self->stopped_) {
      const int fd = ::accept4(self->listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (self->stopped_ || (errno != EINTR && errno != ECONNABORTED)) return;
        continue;
      }
      self->Serve(fd);
      ::close(fd);
    }
  });
  return s;
}

void ShmOfferServer::Serve(int fd) {
  std::array<uint8_t, 32> token{};
  if (!ReadAll(fd, token.data(), token.size(), 2000)) return;
  {
    std::lock_guard lock(mu_);
    auto it = tokens_.begin();
    while (it != tokens_.end() && !MacEquals(*it, token)) ++it;
    if (it == tokens_.end()) return;  // unknown or used: refused (the peer sees EOF)
    tokens_.erase(it);
  }
  uint8_t ok = 1;
  iovec iov{&ok, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &memfd_, sizeof(int));
  (void)::sendmsg(fd, &msg, MSG_NOSIGNAL);
}

std::array<uint8_t, 32> ShmOfferServer::NewToken() {
  std::array<uint8_t, 32> token = RandomNonce();
  std::lock_guard lock(mu_);
  tokens_.push_back(token);
  return token;
}

void ShmOfferServer::Stop() {
  if (stopped_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
}

ShmOfferServer::~ShmOfferServer() {
  if (listen_fd_ >= 0) Stop();
}

Result<int> FetchShmFd(const std::string& name, const std::array<uint8_t, 32>& token,
                       int timeout_ms) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable("unix socket: {}", std::strerror(errno));
  sockaddr_un addr;
  const socklen_t len = AbstractAddress(name, addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unavailable("cannot reach @{} (another host?): {}", name, why);
  }
  if (::send(fd, token.data(), token.size(), MSG_NOSIGNAL) != ssize_t(token.size())) {
    ::close(fd);
    return Unavailable("sending the token to @{} failed", name);
  }
  pollfd p{fd, POLLIN, 0};
  uint8_t ok = 0;
  iovec iov{&ok, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t got = ::poll(&p, 1, timeout_ms) == 1 ? ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC) : -1;
  ::close(fd);
  int memfd = -1;
  for (cmsghdr* c = got == 1 ? CMSG_FIRSTHDR(&msg) : nullptr; c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      std::memcpy(&memfd, CMSG_DATA(c), sizeof(int));
    }
  }
  if (memfd < 0 || ok != 1) return Unavailable("@{} refused the KV region offer", name);
  return memfd;
}

}  // namespace cleave::cluster
