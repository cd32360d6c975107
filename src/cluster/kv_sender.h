// KvSender: everything a prefill worker sends to one decode worker (KvBlock, KvDone), queued and
// written in order by a thread of its own. The engine thread queues a layer's KV blocks the
// moment the forward pass has written them and goes on computing the next layers, so transfer
// overlaps compute, and a slow or stalled peer blocks only this thread, never the engine.
//
// When nothing has been queued for `idle_heartbeat`, the thread sends a Heartbeat: a decode
// worker waiting for a prompt that is still queued or computing here sees a live peer, while a
// peer whose writes are stuck (or a frozen process) goes silent and trips its transfer timeout.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "cluster/shm_transport.h"
#include "cluster/transport.h"
#include "cluster/wire.h"

namespace cleave::cluster {

class KvSender {
 public:
  KvSender(std::shared_ptr<Connection> conn, std::chrono::milliseconds idle_heartbeat);
  ~KvSender();  // Stop()
  KvSender(const KvSender&) = delete;
  KvSender& operator=(const KvSender&) = delete;

  // Queues a frame. Frames queued after Stop, or after a write failed, are dropped (the
  // connection is gone; the peer learns that from the closed stream).
  void Send(Frame frame);
  // Closes the connection (a blocked write returns), joins the thread, drops what is queued.
  void Stop();
  // Frames queued and not yet written.
  size_t queued() const;

  // The decode worker's KV cache mapped here (shared memory), or null. Set once, when the peer's
  // ShmOffer is accepted and before any pull that names block ids; lives as long as the sender.
  void set_region(std::unique_ptr<SharedKvRegion> region);
  SharedKvRegion* region() const;

 private:
  void Loop();

  std::shared_ptr<Connection> conn_;
  const std::chrono::milliseconds idle_heartbeat_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Frame> queue_;
  bool stopped_ = false;
  bool failed_ = false;
  std::unique_ptr<SharedKvRegion> region_;
  std::thread thread_;
};

}  // namespace cleave::cluster
