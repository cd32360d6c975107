#include "cluster/join.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>

namespace cleave::cluster {

namespace {

// A registration that sends nothing for this long is dropped (registrations are served one at
// a time, so a silent peer must not hold the listener).
constexpr int kRegistrationTimeoutMs = 5000;

}  // namespace

Result<std::unique_ptr<JoinListener>> JoinListener::Start(const std::string& host, uint16_t port,
                                                          std::string secret, AddFn add) {
  std::unique_ptr<JoinListener> j(new JoinListener());
  CLEAVE_ASSIGN_OR_RETURN(j->listener_, TcpListener::Listen(host, port));
  j->secret_ = std::move(secret);
  j->add_ = std::move(add);
  JoinListener* self = j.get();
  j->thread_ = std::thread([self] {
    while (true) {
      Result<std::unique_ptr<Connection>> conn = self->listener_->Accept();
      if (!conn.ok()) return;
      {
        std::lock_guard lock(self->conn_mu_);
        if (self->stopped_) return;
        self->current_ = conn->get();
      }
      self->Serve(**conn);
      std::lock_guard lock(self->conn_mu_);
      self->current_ = nullptr;
    }
  });
  return j;
}

void JoinListener::Serve(Connection& conn) {
  if (auto* tcp = dynamic_cast<TcpConnection*>(&conn))
    tcp->set_recv_timeout_ms(kRegistrationTimeoutMs);
  Result<HelloMsg> hello = AcceptHandshake(conn, secret_, WorkerRole::kRouter, KvLayout{});
  if (!hello.ok()) {
    spdlog::warn("refused a worker registration from {}: {}", conn.peer(),
                 hello.status().ToString());
    conn.Close();
    return;
  }
  Result<Frame> frame = conn.Recv();
  Result<JoinMsg> join = frame.ok() ? DecodeJoin(*frame) : Result<JoinMsg>(frame.status());
  if (!join.ok()) {
    spdlog::warn("bad worker registration from {}: {}", conn.peer(), join.status().ToString());
    conn.Close();
    return;
  }
  const WorkerEndpoint endpoint{join->host, join->port};
  Status added = add_(endpoint);
  if (added.ok()) {
    spdlog::info("{} worker at {}:{} joined (registered from {})", WorkerRoleName(hello->role),
                 endpoint.host, endpoint.port, conn.peer());
  } else {
    spdlog::warn("{} worker at {}:{} could not be adopted: {}", WorkerRoleName(hello->role),
                 endpoint.host, endpoint.port, added.ToString());
  }
  (void)conn.Send(Encode(JoinAckMsg{added.ok(), added.ok() ? "" : added.ToString()}));
  conn.Close();
}

void JoinListener::Stop() {
  {
    std::lock_guard lock(conn_mu_);
    if (stopped_.exchange(true)) return;
    if (current_ != nullptr) current_->Close();
  }
  listener_->Close();
  if (thread_.joinable()) thread_.join();
}

JoinListener::~JoinListener() {
  Stop();
}

Result<std::unique_ptr<JoinedCluster>> JoinedCluster::Start(const std::string& host, uint16_t port,
                                                            RouterConfig router_config,
                                                            double first_timeout_s) {
  std::unique_ptr<JoinedCluster> c(new JoinedCluster());
  auto first_joined = std::make_shared<std::condition_variable>();
  JoinedCluster* self = c.get();
  auto add = [self, router_config, first_joined](const WorkerEndpoint& ep) -> Status {
    std::lock_guard lock(self->mu_);
    if (self->router_) return self->router_->AddWorker(ep);
    RouterConfig rc = router_config;
    rc.workers = {ep};
    CLEAVE_ASSIGN_OR_RETURN(self->router_, Router::Connect(std::move(rc)));
    first_joined->notify_all();
    return Status::Ok();
  };
  CLEAVE_ASSIGN_OR_RETURN(c->listener_,
                          JoinListener::Start(host, port, router_config.secret, std::move(add)));
  spdlog::info("accepting worker registrations on {}:{}; waiting up to {} s for the first", host,
               c->listener_->port(), first_timeout_s);
  std::unique_lock lock(c->mu_);
  if (!first_joined->wait_for(lock, std::chrono::duration<double>(first_timeout_s),
                              [&] { return c->router_ != nullptr; })) {
    lock.unlock();
    c->listener_->Stop();
    return Unavailable("no worker registered on {}:{} within {} s", host, c->listener_->port(),
                       first_timeout_s);
  }
  return c;
}

void JoinedCluster::Stop() {
  if (listener_) listener_->Stop();
  std::lock_guard lock(mu_);
  if (router_) router_->Shutdown();
}

JoinedCluster::~JoinedCluster() {
  Stop();
}

Status JoinCluster(const std::string& host, uint16_t port, const std::string& secret,
                   WorkerRole role, const KvLayout& layout, WorkerEndpoint advertised) {
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, TcpConnect(host, port));
  if (advertised.host.empty() || advertised.host == "0.0.0.0") {
    auto* tcp = dynamic_cast<TcpConnection*>(conn.get());
    if (tcp == nullptr || tcp->local_host().empty()) {
      return FailedPrecondition("cannot tell this host's address: give --advertise");
    }
    advertised.host = tcp->local_host();
  }
  Result<HelloAckMsg> ack = ConnectHandshake(*conn, secret, role, layout);
  if (!ack.ok()) {
    return Unauthenticated("the frontend at {}:{} refused the handshake (shared secret?): {}", host,
                           port, ack.status().message());
  }
  CLEAVE_RETURN_IF_ERROR(conn->Send(Encode(JoinMsg{advertised.host, advertised.port})));
  CLEAVE_ASSIGN_OR_RETURN(Frame frame, conn->Recv());
  CLEAVE_ASSIGN_OR_RETURN(JoinAckMsg reply, DecodeJoinAck(frame));
  conn->Close();
  if (!reply.ok) {
    return FailedPrecondition("the frontend at {}:{} did not adopt {}:{}: {}", host, port,
                              advertised.host, advertised.port, reply.error);
  }
  return Status::Ok();
}

}  // namespace cleave::cluster
