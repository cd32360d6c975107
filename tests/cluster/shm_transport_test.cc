// Shared-memory KV transport pieces: block offsets checked against the layout (the ids come
// from the peer), the memfd region and its size check, the fd hand-over by token, and the
// KvCache allocation hook.
#include "cluster/shm_transport.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <limits>
#include <vector>

#include "model/kv_cache.h"

namespace cleave::cluster {
namespace {

// 3 layers, 5 blocks of 64 bytes (K) + 64 bytes (V).
const KvLayout kLayout{3, 16, 5, 64, 100, 80};

TEST(ShmTransportTest, BlockOffsetsFollowTheCacheLayoutAndRefuseHostileIds) {
  EXPECT_EQ(*KvRegionBytes(kLayout), 3u * 2 * 5 * 64);
  EXPECT_EQ(*KvBlockOffset(kLayout, 0, false, 0), 0u);
  EXPECT_EQ(*KvBlockOffset(kLayout, 0, false, 4), 4u * 64);
  EXPECT_EQ(*KvBlockOffset(kLayout, 0, true, 0), 5u * 64);  // V of layer 0 follows its K
  EXPECT_EQ(*KvBlockOffset(kLayout, 2, true, 4), (2u * 2 * 5 + 5 + 4) * 64);
  // The last block's bytes end exactly at the region's end.
  EXPECT_EQ(*KvBlockOffset(kLayout, 2, true, 4) + 64, *KvRegionBytes(kLayout));
  for (uint32_t bad_block : {5u, 6u, 1u << 31, std::numeric_limits<uint32_t>::max()}) {
    EXPECT_EQ(KvBlockOffset(kLayout, 0, false, bad_block).status().code(), StatusCode::kOutOfRange)
        << bad_block;
  }
  EXPECT_EQ(KvBlockOffset(kLayout, 3, false, 0).status().code(), StatusCode::kOutOfRange);
  KvLayout huge = kLayout;
  huge.num_layers = std::numeric_limits<uint32_t>::max();
  huge.num_blocks = std::numeric_limits<uint32_t>::max();
  huge.block_bytes = uint64_t{1} << 40;
  EXPECT_FALSE(KvRegionBytes(huge).ok());
  EXPECT_FALSE(KvBlockOffset(huge, huge.num_layers - 1, true, huge.num_blocks - 1).ok());
}

TEST(ShmTransportTest, KvPullWithBlockIdsRoundTripsAndCountsMustAgree) {
  KvPullMsg m{7, 3, {4, 0, 2}};
  Result<KvPullMsg> back = DecodeKvPull(Encode(m));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->block_ids, m.block_ids);
  m.num_blocks = 2;  // ids that do not match the reservation's size
  EXPECT_FALSE(DecodeKvPull(Encode(m)).ok());
  Frame f = Encode(KvPullMsg{7, 3, {4, 0, 2}});
  f.payload[15] = 0xff;  // claims ~4 billion ids: refused before allocating
  EXPECT_FALSE(DecodeKvPull(f).ok());
}

TEST(ShmTransportTest, RegionIsSharedAcrossMappingsAndItsSizeIsChecked) {
  Result<std::unique_ptr<SharedKvRegion>> region = SharedKvRegion::Create(4096);
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  std::span<uint8_t> a = (*region)->bytes();
  ASSERT_EQ(a.size(), 4096u);
  EXPECT_EQ(a[100], 0);  // fresh regions are zeroed
  Result<std::unique_ptr<SharedKvRegion>> mapped =
      SharedKvRegion::Map(::dup((*region)->fd()), 4096);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  (*mapped)->bytes()[100] = 42;  // what the prefill worker does
  EXPECT_EQ(a[100], 42);         // seen by the decode worker without a copy
  EXPECT_EQ(SharedKvRegion::Map(::dup((*region)->fd()), 8192).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(SharedKvRegion::Map(::dup((*region)->fd()), 1024).status().code(),
            StatusCode::kFailedPrecondition);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  EXPECT_FALSE(SharedKvRegion::Map(pipe_fds[0], 4096).ok());  // not a memory file
  ::close(pipe_fds[1]);
}

TEST(ShmTransportTest, FdGoesOnlyToTheHolderOfAnIssuedTokenOnce) {
  Result<std::unique_ptr<SharedKvRegion>> region = SharedKvRegion::Create(8192);
  ASSERT_TRUE(region.ok());
  Result<std::unique_ptr<ShmOfferServer>> server = ShmOfferServer::Start((*region)->fd());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::array<uint8_t, 32> token = (*server)->NewToken();
  std::array<uint8_t, 32> forged = token;
  forged[0] ^= 1;
  EXPECT_EQ(FetchShmFd((*server)->name(), forged).status().code(), StatusCode::kUnavailable);
  Result<int> fd = FetchShmFd((*server)->name(), token);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  Result<std::unique_ptr<SharedKvRegion>> mapped = SharedKvRegion::Map(*fd, 8192);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  (*mapped)->bytes()[8191] = 7;
  EXPECT_EQ((*region)->bytes()[8191], 7);
  // Used once: the same token is refused now.
  EXPECT_FALSE(FetchShmFd((*server)->name(), token).ok());
  EXPECT_FALSE(FetchShmFd("cleave-kv-no-such-socket", token).ok());
  (*server)->Stop();
}

TEST(ShmTransportTest, KvCacheMovesIntoExternalStorage) {
  KvCache cache(2, 4, 16, 2, 32, DType::kF32);
  std::vector<float> k(64), v(64), out(64);
  for (int i = 0; i < 64; ++i) {
    k[i] = float(i);
    v[i] = -float(i);
  }
  cache.Write(1, 3, 5, k.data(), v.data());
  Result<std::unique_ptr<SharedKvRegion>> region = SharedKvRegion::Create(cache.bytes());
  ASSERT_TRUE(region.ok());
  cache.UseExternalStorage((*region)->bytes());
  cache.ReadK(1, 3, 5, out.data());
  EXPECT_EQ(out, k);  // contents kept
  // BlockBytes now points into the region, at the offset KvBlockOffset computes.
  KvLayout layout{2, 16, 4, uint64_t(cache.block_bytes()), 0, 0};
  std::span<uint8_t> v_block = cache.BlockBytes(true, 1, 3);
  EXPECT_EQ(v_block.data(), (*region)->bytes().data() + *KvBlockOffset(layout, 1, true, 3));
  // A write through the region (the prefill worker) is what the cache reads.
  std::vector<uint8_t> bytes(v_block.begin(), v_block.end());
  std::fill(v_block.begin(), v_block.end(), 0);
  cache.ReadV(1, 3, 5, out.data());
  EXPECT_EQ(out, std::vector<float>(64, 0.0f));
  std::copy(bytes.begin(), bytes.end(),
            (*region)->bytes().data() + *KvBlockOffset(layout, 1, true, 3));
  cache.ReadV(1, 3, 5, out.data());
  EXPECT_EQ(out, v);
}

}  // namespace
}  // namespace cleave::cluster
