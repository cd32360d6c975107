#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace cleave {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

// False when the kernel's transparent huge pages are off ("[never]"): a copy would then only
// cost memory.
bool TransparentHugePagesOn() {
  int fd = ::open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[128] = {};
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  return n > 0 && std::strstr(buf, "[never]") == nullptr;
}

// Reads all of fd into anonymous memory of `rounded` bytes (a multiple of 2 MiB); returns the
// memory or an error. The memory is read-only afterwards.
Result<void*> CopyToHugePages(int fd, const std::string& path, size_t size, size_t rounded) {
  void* p = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return ResourceExhausted("{}: cannot allocate {} bytes for the weights: {}", path, rounded,
                             std::strerror(errno));
  }
  ::madvise(p, rounded, MADV_HUGEPAGE);  // advice: without it the copy still works
  auto* dst = static_cast<uint8_t*>(p);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, dst + done, std::min<size_t>(size - done, size_t{1} << 30),
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::munmap(p, rounded);
      return InvalidArgument("{}: read failed at byte {}: {}", path, done, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::mprotect(p, rounded, PROT_READ);
  return p;
}

}  // namespace

Result<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path, Backing backing) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("{}: no such file", path);
    return InvalidArgument("{}: cannot open: {}", path, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return InvalidArgument("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument("{}: not a regular file", path);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (backing == Backing::kHugePageCopy && (size == 0 || !TransparentHugePagesOn())) {
    backing = Backing::kFileMapping;
  }
  const uint8_t* data = nullptr;
  size_t mapped_size = size;
  if (backing == Backing::kHugePageCopy) {
    mapped_size = (size + kHugePage - 1) / kHugePage * kHugePage;
    Result<void*> copy = CopyToHugePages(fd, path, size, mapped_size);
    ::close(fd);
    if (!copy.ok()) return copy.status();
    data = static_cast<const uint8_t*>(*copy);
  } else {
    if (size > 0) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        return ResourceExhausted("{}: mmap of {} bytes failed: {}", path, size, std::strerror(err));
      }
      data = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
  }
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size, mapped_size, backing));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), mapped_size_);
}

}  // namespace cleave
