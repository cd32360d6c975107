#include "cluster/transport.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace cleave::cluster {
namespace {

const KvLayout kLayout{2, 16, 64, 1024, 100, 1024};

void ExpectCarriesFrames(Connection& a, Connection& b) {
  ASSERT_TRUE(a.Send(Encode(CancelMsg{7})).ok());
  std::vector<uint8_t> big(3 << 20);  // larger than any socket buffer
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 31);
  std::thread sender([&] { EXPECT_TRUE(a.Send(EncodeKvBlock(1, 2, 3, big, big)).ok()); });
  Result<Frame> f1 = b.Recv();
  ASSERT_TRUE(f1.ok());
  EXPECT_EQ(DecodeCancel(*f1)->request_id, 7u);
  Result<Frame> f2 = b.Recv();
  sender.join();
  ASSERT_TRUE(f2.ok());
  Result<KvBlockMsg> block = DecodeKvBlock(*f2);
  ASSERT_TRUE(block.ok());
  ASSERT_EQ(block->bytes.size(), 2 * big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), block->bytes.begin() + big.size()));
  // Other direction.
  ASSERT_TRUE(b.Send(Encode(KvPullMsg{9, 4, {}})).ok());
  EXPECT_EQ(DecodeKvPull(*a.Recv())->num_blocks, 4u);
  // Close ends the stream on both sides.
  a.Close();
  EXPECT_EQ(b.Recv().status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(a.Send(Encode(CancelMsg{1})).ok());
}

TEST(TransportTest, InProcessPipeCarriesFrames) {
  auto [a, b] = InProcessPipe();
  ExpectCarriesFrames(*a, *b);
}

TEST(TransportTest, TcpLoopbackCarriesFrames) {
  Result<std::unique_ptr<TcpListener>> listener = TcpListener::Listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  const uint16_t port = (*listener)->port();
  ASSERT_NE(port, 0);
  std::unique_ptr<Connection> server;
  std::thread acceptor([&] { server = std::move(*(*listener)->Accept()); });
  Result<std::unique_ptr<Connection>> client = TcpConnect("127.0.0.1", port);
  acceptor.join();
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE(server);
  ExpectCarriesFrames(**client, *server);
}

TEST(TransportTest, TcpRecvRejectsCorruptStream) {
  // A header that claims a 1 GiB payload is refused before anything is allocated.
  std::vector<uint8_t> bytes = EncodeFrame(Encode(CancelMsg{1}));
  bytes[11] = 0x40;
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  TcpConnection reader(fds[0], "pair");  // the framing is the same over any stream socket
  ASSERT_EQ(::write(fds[1], bytes.data(), bytes.size()), ssize_t(bytes.size()));
  EXPECT_EQ(reader.Recv().status().code(), StatusCode::kDataLoss);
  ::close(fds[1]);
}

TEST(TransportTest, ConnectToClosedPortFails) {
  uint16_t port;
  {
    Result<std::unique_ptr<TcpListener>> listener = TcpListener::Listen("127.0.0.1", 0);
    ASSERT_TRUE(listener.ok());
    port = (*listener)->port();
  }
  EXPECT_EQ(TcpConnect("127.0.0.1", port, 500).status().code(), StatusCode::kUnavailable);
}

TEST(TransportTest, HandshakeAcceptsTheSecretAndRefusesOthers) {
  {
    auto [a, b] = InProcessPipe();
    Result<HelloMsg> accepted = Internal("not run");
    std::thread listener(
        [&, &b = b] { accepted = AcceptHandshake(*b, "secret", WorkerRole::kPrefill, kLayout); });
    Result<HelloAckMsg> ack = ConnectHandshake(*a, "secret", WorkerRole::kRouter, {});
    listener.join();
    ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
    ASSERT_TRUE(ack.ok()) << ack.status().ToString();
    EXPECT_EQ(accepted->role, WorkerRole::kRouter);
    EXPECT_EQ(ack->role, WorkerRole::kPrefill);
    EXPECT_EQ(ack->layout, kLayout);
  }
  {
    auto [a, b] = InProcessPipe();
    Result<HelloMsg> accepted = Internal("not run");
    std::thread listener([&, &b = b] {
      accepted = AcceptHandshake(*b, "secret", WorkerRole::kPrefill, kLayout);
      b->Close();  // what a worker does with a refused peer
    });
    Result<HelloAckMsg> ack = ConnectHandshake(*a, "wrong", WorkerRole::kRouter, {});
    listener.join();
    EXPECT_EQ(accepted.status().code(), StatusCode::kUnauthenticated);
    EXPECT_FALSE(ack.ok());
  }
}

TEST(TransportTest, ParseKvFault) {
  EXPECT_EQ(ParseKvFault("")->kind, KvFault::Kind::kNone);
  Result<KvFault> cut = ParseKvFault("cut:3");
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->kind, KvFault::Kind::kCut);
  EXPECT_EQ(cut->after_frames, 3);
  Result<KvFault> stall = ParseKvFault("stall:0");
  ASSERT_TRUE(stall.ok());
  EXPECT_EQ(stall->kind, KvFault::Kind::kStall);
  EXPECT_EQ(stall->after_frames, 0);
  for (const char* bad : {"cut", "cut:", "cut:-1", "cut:2x", "drop:1", "stall:1:2"}) {
    EXPECT_FALSE(ParseKvFault(bad).ok()) << bad;
  }
}

std::vector<uint8_t> BlockBytes() {
  return std::vector<uint8_t>(64, 7);
}

TEST(TransportTest, FaultyConnectionCutsAfterNKvFrames) {
  auto [a, b] = InProcessPipe();
  FaultyConnection faulty(std::move(a), KvFault{KvFault::Kind::kCut, 2});
  const std::vector<uint8_t> kv = BlockBytes();
  // Other frames never count and never trip the fault.
  ASSERT_TRUE(faulty.Send(Encode(KvDoneMsg{1, true, "", {}})).ok());
  ASSERT_TRUE(faulty.Send(EncodeKvBlock(1, 0, 0, kv, kv)).ok());
  ASSERT_TRUE(faulty.Send(Encode(HeartbeatMsg{})).ok());
  ASSERT_TRUE(faulty.Send(EncodeKvBlock(1, 0, 1, kv, kv)).ok());
  EXPECT_EQ(faulty.kv_frames_sent(), 2);
  Status third = faulty.Send(EncodeKvBlock(1, 1, 0, kv, kv));
  EXPECT_EQ(third.code(), StatusCode::kUnavailable);
  EXPECT_NE(third.message().find("fault injection"), std::string::npos);
  // The peer gets exactly the frames sent before the cut, then the end of the stream.
  EXPECT_EQ(b->Recv()->type, MessageType::kKvDone);
  EXPECT_EQ(b->Recv()->type, MessageType::kKvBlock);
  EXPECT_EQ(b->Recv()->type, MessageType::kHeartbeat);
  EXPECT_EQ(DecodeKvBlock(*b->Recv())->block_index, 1u);
  EXPECT_EQ(b->Recv().status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(faulty.Send(Encode(HeartbeatMsg{})).ok());
}

TEST(TransportTest, FaultyConnectionStallsUntilClosed) {
  auto [a, b] = InProcessPipe();
  auto faulty = std::make_shared<FaultyConnection>(std::move(a), KvFault{KvFault::Kind::kStall, 1});
  const std::vector<uint8_t> kv = BlockBytes();
  ASSERT_TRUE(faulty->Send(EncodeKvBlock(1, 0, 0, kv, kv)).ok());
  std::atomic<bool> returned{false};
  Status stalled = Status::Ok();
  std::thread sender([&] {
    stalled = faulty->Send(EncodeKvBlock(1, 0, 1, kv, kv));
    returned = true;
  });
  EXPECT_EQ(DecodeKvBlock(*b->Recv())->block_index, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(returned) << "the stalled send returned early";
  faulty->Close();  // what the worker does when it gives up on the transfer, or at Stop
  sender.join();
  EXPECT_EQ(stalled.code(), StatusCode::kUnavailable);
  EXPECT_EQ(b->Recv().status().code(), StatusCode::kUnavailable);  // nothing more was sent
  // A bounded stall ends by itself.
  auto [c, d] = InProcessPipe();
  FaultyConnection bounded(std::move(c), KvFault{KvFault::Kind::kStall, 0},
                           std::chrono::milliseconds(50));
  EXPECT_EQ(bounded.Send(EncodeKvBlock(1, 0, 0, kv, kv)).code(), StatusCode::kUnavailable);
}

TEST(TransportTest, ParseHostPort) {
  EXPECT_EQ(*ParseHostPort("127.0.0.1:8080"),
            std::make_pair(std::string("127.0.0.1"), uint16_t(8080)));
  EXPECT_FALSE(ParseHostPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseHostPort("h:").ok());
  EXPECT_FALSE(ParseHostPort("h:70000").ok());
  EXPECT_FALSE(ParseHostPort(":80").ok());
}

}  // namespace
}  // namespace cleave::cluster
