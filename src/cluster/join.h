// Workers on other hosts: `cleave worker --join HOST:PORT` registers with a frontend started
// with `cleave serve --accept-workers HOST:PORT`.
//
//   worker                                        frontend (JoinListener)
//     | -- TCP connect ------------------------------> |
//     | <- Challenge / Hello (secret, role, layout) -> |   the cluster handshake (transport.h)
//     | -- Join { host, port } ----------------------> |   the worker's own listen address
//     |                                                |   add(host:port): Router::AddWorker
//     |                                                |   connects back and authenticates
//     | <- JoinAck { ok, error } --------------------- |
//
// The registration connection is closed after the ack; from then on the router talks to the
// worker over its own connection, as to a local worker. Both ends need CLEAVE_CLUSTER_SECRET.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/router.h"
#include "cluster/transport.h"
#include "core/status.h"

namespace cleave::cluster {

class JoinListener {
 public:
  // Adopts one registered worker (e.g. Router::AddWorker); its Status is sent back.
  using AddFn = std::function<Status(const WorkerEndpoint&)>;
  // Listens on host:port (port 0: a free one) and serves registrations on its own thread, one
  // at a time.
  static Result<std::unique_ptr<JoinListener>> Start(const std::string& host, uint16_t port,
                                                     std::string secret, AddFn add);
  ~JoinListener();  // Stop()
  void Stop();
  uint16_t port() const { return listener_->port(); }

 private:
  JoinListener() = default;
  void Serve(Connection& conn);

  std::unique_ptr<TcpListener> listener_;
  std::string secret_;
  AddFn add_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  std::mutex conn_mu_;
  Connection* current_ = nullptr;  // the registration being served, closed by Stop
};

// A frontend with no local workers: listens for registrations, waits up to first_timeout_s for
// the first one, creates the Router with it, and adds every later one (Router::AddWorker).
class JoinedCluster {
 public:
  static Result<std::unique_ptr<JoinedCluster>> Start(const std::string& host, uint16_t port,
                                                      RouterConfig router_config,
                                                      double first_timeout_s);
  ~JoinedCluster();
  Router& router() { return *router_; }
  uint16_t port() const { return listener_->port(); }
  void Stop();  // stops listening and closes the router's connections

 private:
  JoinedCluster() = default;
  std::mutex mu_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<JoinListener> listener_;
};

// Worker side: registers `advertised` (its listen address; host "" or "0.0.0.0" is replaced
// by the address this host has on the route to the frontend) with the frontend at host:port.
// Unavailable while the frontend cannot be reached; the frontend's refusal otherwise.
Status JoinCluster(const std::string& host, uint16_t port, const std::string& secret,
                   WorkerRole role, const KvLayout& layout, WorkerEndpoint advertised);

}  // namespace cleave::cluster
