#include "cluster/kv_sender.h"

#include <utility>

namespace cleave::cluster {

KvSender::KvSender(std::shared_ptr<Connection> conn, std::chrono::milliseconds idle_heartbeat)
    : conn_(std::move(conn)), idle_heartbeat_(idle_heartbeat) {
  thread_ = std::thread([this] { Loop(); });
}

KvSender::~KvSender() {
  Stop();
}

void KvSender::Send(Frame frame) {
  std::lock_guard lock(mu_);
  if (stopped_ || failed_) return;
  queue_.push_back(std::move(frame));
  cv_.notify_one();
}

void KvSender::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    queue_.clear();
    cv_.notify_one();
  }
  conn_->Close();
  if (thread_.joinable()) thread_.join();
}

size_t KvSender::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void KvSender::set_region(std::unique_ptr<SharedKvRegion> region) {
  std::lock_guard lock(mu_);
  region_ = std::move(region);
}

SharedKvRegion* KvSender::region() const {
  std::lock_guard lock(mu_);
  return region_.get();
}

void KvSender::Loop() {
  std::unique_lock lock(mu_);
  while (true) {
    const bool woken =
        cv_.wait_for(lock, idle_heartbeat_, [&] { return stopped_ || !queue_.empty(); });
    if (stopped_) return;
    Frame frame = woken ? std::move(queue_.front()) : Encode(HeartbeatMsg{});
    if (woken) queue_.pop_front();
    lock.unlock();
    const bool sent = conn_->Send(frame).ok();
    lock.lock();
    if (!sent) {
      failed_ = true;  // the reader sees the broken stream and cleans up
      queue_.clear();
      return;
    }
  }
}

}  // namespace cleave::cluster
