// Worker registration (cleave worker --join): the frontend's JoinListener adopts a worker that
// knows the shared secret, with the address it advertises, and refuses one that does not.
#include "cluster/join.h"

#include <gtest/gtest.h>

#include <mutex>
#include <vector>

namespace cleave::cluster {
namespace {

const KvLayout kLayout{2, 16, 64, 1024, 100, 1024};
const std::string kSecret = "join-test-secret-0123456789";

struct Adopted {
  std::mutex mu;
  std::vector<WorkerEndpoint> endpoints;
  Status answer = Status::Ok();
};

std::unique_ptr<JoinListener> StartListener(Adopted& adopted) {
  Result<std::unique_ptr<JoinListener>> listener =
      JoinListener::Start("127.0.0.1", 0, kSecret, [&](const WorkerEndpoint& ep) {
        std::lock_guard lock(adopted.mu);
        adopted.endpoints.push_back(ep);
        return adopted.answer;
      });
  EXPECT_TRUE(listener.ok()) << listener.status().ToString();
  return listener.ok() ? std::move(*listener) : nullptr;
}

TEST(JoinTest, RegistersTheAdvertisedAddress) {
  Adopted adopted;
  std::unique_ptr<JoinListener> listener = StartListener(adopted);
  ASSERT_TRUE(listener);
  Status s = JoinCluster("127.0.0.1", listener->port(), kSecret, WorkerRole::kPrefill, kLayout,
                         {"10.1.2.3", 7001});
  ASSERT_TRUE(s.ok()) << s.ToString();
  // "0.0.0.0" is replaced by this host's address on the route to the frontend.
  s = JoinCluster("127.0.0.1", listener->port(), kSecret, WorkerRole::kDecode, kLayout,
                  {"0.0.0.0", 7002});
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::lock_guard lock(adopted.mu);
  ASSERT_EQ(adopted.endpoints.size(), 2u);
  EXPECT_EQ(adopted.endpoints[0], (WorkerEndpoint{"10.1.2.3", 7001}));
  EXPECT_EQ(adopted.endpoints[1], (WorkerEndpoint{"127.0.0.1", 7002}));
}

TEST(JoinTest, RefusesAWrongSecretAndReportsARefusedAdoption) {
  Adopted adopted;
  std::unique_ptr<JoinListener> listener = StartListener(adopted);
  ASSERT_TRUE(listener);
  Status wrong = JoinCluster("127.0.0.1", listener->port(), "not-the-secret-0123456789",
                             WorkerRole::kPrefill, kLayout, {"10.1.2.3", 7001});
  EXPECT_EQ(wrong.code(), StatusCode::kUnauthenticated) << wrong.ToString();
  {
    std::lock_guard lock(adopted.mu);
    EXPECT_TRUE(adopted.endpoints.empty());
    adopted.answer = Unavailable("cannot connect back");
  }
  Status refused = JoinCluster("127.0.0.1", listener->port(), kSecret, WorkerRole::kPrefill,
                               kLayout, {"10.1.2.3", 7001});
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("cannot connect back"), std::string::npos) << refused.ToString();
  listener->Stop();
  // Nobody listening: Unavailable (the worker retries that one).
  EXPECT_EQ(JoinCluster("127.0.0.1", listener->port(), kSecret, WorkerRole::kPrefill, kLayout,
                        {"10.1.2.3", 7001})
                .code(),
            StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cleave::cluster
