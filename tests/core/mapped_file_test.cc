// MappedFile: both backings give the file's bytes; a copy is rounded to whole huge pages
// internally but reports the file's size; errors are clear.
#include "core/mapped_file.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/testing/paths.h"

namespace cleave {
namespace {

std::string WriteFile(const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::string path = testing::TempDir() + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  return path;
}

TEST(MappedFileTest, BothBackingsGiveTheFileBytes) {
  // Larger than one 2 MiB page and not a multiple of it.
  std::vector<uint8_t> bytes((size_t{5} << 20) + 12345);
  std::mt19937 rng(3);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const std::string path = WriteFile("mapped_file_test.bin", bytes);
  for (auto backing : {MappedFile::Backing::kFileMapping, MappedFile::Backing::kHugePageCopy}) {
    auto file = MappedFile::Open(path, backing);
    ASSERT_TRUE(file.ok()) << file.status().message();
    ASSERT_EQ((*file)->size(), bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), (*file)->data()));
    if (backing == MappedFile::Backing::kFileMapping) {
      EXPECT_EQ((*file)->backing(), MappedFile::Backing::kFileMapping);
    }
  }
}

TEST(MappedFileTest, EmptyFileAndErrors) {
  const std::string empty = WriteFile("mapped_file_empty.bin", {});
  for (auto backing : {MappedFile::Backing::kFileMapping, MappedFile::Backing::kHugePageCopy}) {
    auto file = MappedFile::Open(empty, backing);
    ASSERT_TRUE(file.ok()) << file.status().message();
    EXPECT_EQ((*file)->size(), 0u);
    EXPECT_TRUE((*file)->bytes().empty());
    auto missing = MappedFile::Open(testing::TempDir() + "/no_such_file.bin", backing);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find("no such file"), std::string::npos);
    auto dir = MappedFile::Open(testing::TempDir(), backing);
    ASSERT_FALSE(dir.ok());
    EXPECT_NE(dir.status().message().find("not a regular file"), std::string::npos);
  }
}

}  // namespace
}  // namespace cleave
