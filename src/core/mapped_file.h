// A read-only file in memory: mapped (zero copy, pages shared with the page cache and with other
// processes mapping it) or copied into anonymous memory backed by 2 MiB transparent huge pages.
// Model weights are used in place from either; the memory lives as long as the MappedFile.
//
// Why a copy: a decode step streams every weight once, ~100 MB to GBs per token. Through 4 KiB
// file pages that is a TLB miss per 4 KiB, and the hardware prefetchers stop at every page
// boundary; on 2 MiB pages SmolLM2 decodes 11-14% faster and the 1B file 12-18% faster on one
// thread (docs/performance.md "Weights on huge pages"; llama.cpp's best setting, -mmp 0, is the
// same idea). The cost: each process holds its own copy (the local workers of a disaggregated
// server do not share one), and loading reads the whole file once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

namespace cleave {

class MappedFile {
 public:
  enum class Backing {
    kFileMapping,   // mmap of the file
    kHugePageCopy,  // read into 2 MiB-aligned anonymous memory advised MADV_HUGEPAGE, then
                    // made read-only; the file mapping when the kernel has THP set to never
  };
  // The whole file, read-only. An empty file gives an empty span.
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path,
                                                  Backing backing = Backing::kFileMapping);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Which backing Open gave (kFileMapping also when a copy was asked for but THP is off).
  Backing backing() const { return backing_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, size_t mapped_size,
             Backing backing)
      : path_(std::move(path)),
        data_(data),
        size_(size),
        mapped_size_(mapped_size),
        backing_(backing) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
  size_t mapped_size_;  // what to munmap: size_, or size_ rounded up to 2 MiB for a copy
  Backing backing_;
};

}  // namespace cleave
