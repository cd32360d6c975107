// Worker::Impl, decode side: reserves blocks, pulls KV from prefill workers (TCP frames or
// their writes into our shared cache), and aborts stalled pulls (see worker_impl.h).
#include "cluster/worker_impl.h"

namespace cleave::cluster {

void Worker::Impl::PeerLoop(std::shared_ptr<Connection> peer, std::string key) {
  while (true) {
    Result<Frame> frame = peer->Recv();
    if (frame.ok()) {
      std::lock_guard lock(mu);
      peer_progress[peer.get()] = std::chrono::steady_clock::now();
    }
    Status s = frame.ok() ? OnPeerFrame(*frame) : frame.status();
    if (!s.ok()) {
      spdlog::warn("KV peer {} lost: {}", key, s.ToString());
      break;
    }
  }
  peer->Close();
  std::vector<std::pair<uint64_t, bool>> failed;
  {
    std::lock_guard lock(mu);
    if (auto it = peers.find(key); it != peers.end() && it->second == peer) peers.erase(it);
    shm_peers.erase(peer.get());
    peer_progress.erase(peer.get());
    for (auto it = transfers.begin(); it != transfers.end();) {
      if (it->second.peer != peer) {
        ++it;
        continue;
      }
      engine.FreeBlocks(it->second.blocks);
      failed.emplace_back(it->first, it->second.cancelled);
      it = transfers.erase(it);
    }
  }
  for (auto [rid, cancelled] : failed) {
    if (!cancelled) {
      FailToRouter(rid,
                   fmt::format("KV transfer failed: connection to the prefill worker {} lost", key),
                   true);
    }
  }
}

Status Worker::Impl::OnPeerFrame(const Frame& frame) {
  if (frame.type == MessageType::kKvBlock) {
    CLEAVE_ASSIGN_OR_RETURN(KvBlockMsg m, DecodeKvBlock(frame));
    std::lock_guard lock(mu);  // held while writing: a cancel cannot free the blocks meanwhile
    auto it = transfers.find(m.request_id);
    if (it == transfers.end()) return DataLoss("KV block for unknown request {}", m.request_id);
    Transfer& t = it->second;
    const uint64_t block_bytes = KvBlockByteSize(*cache);
    if (m.layer >= cache->num_layers() || m.block_index >= t.blocks.size() ||
        m.bytes.size() != 2 * block_bytes) {
      return DataLoss("KV block (layer {}, block {}, {} bytes) does not fit the reservation",
                      m.layer, m.block_index, m.bytes.size());
    }
    const BlockId block = t.blocks[m.block_index];
    t.last_progress = std::chrono::steady_clock::now();
    if (!t.first_frame) t.first_frame = t.last_progress;
    std::memcpy(KvBlockBytes(*cache, false, m.layer, block).data(), m.bytes.data(), block_bytes);
    std::memcpy(KvBlockBytes(*cache, true, m.layer, block).data(), m.bytes.data() + block_bytes,
                block_bytes);
    ++t.num_received;
    kv_bytes_received += m.bytes.size();
    return Status::Ok();
  }
  if (frame.type == MessageType::kKvDone) {
    CLEAVE_ASSIGN_OR_RETURN(KvDoneMsg m, DecodeKvDone(frame));
    std::string error;
    {
      std::lock_guard lock(mu);
      auto it = transfers.find(m.request_id);
      if (it == transfers.end()) return Status::Ok();
      Transfer& t = it->second;
      const bool complete =
          t.shm || t.num_received == cache->num_layers() * int64_t(t.blocks.size());
      if (m.ok && t.shm) {
        kv_bytes_received +=
            uint64_t(cache->num_layers()) * t.blocks.size() * 2 * KvBlockByteSize(*cache);
        t.last_progress = std::chrono::steady_clock::now();
      }
      if (!t.first_frame) t.first_frame = std::chrono::steady_clock::now();
      // The prefill's sampled tokens follow the earlier attempts' output.
      t.msg.output_tokens.insert(t.msg.output_tokens.end(), m.output_tokens.begin(),
                                 m.output_tokens.end());
      if (m.ok && m.output_tokens.empty()) {
        m.ok = false;
        m.error = "the prefill worker sent no first token";
      }
      if (m.ok && complete && !t.cancelled) {
        ready.push_back(m.request_id);
        Wake();
        return Status::Ok();
      }
      if (!t.cancelled) error = m.ok ? "KV transfer incomplete" : "KV transfer failed: " + m.error;
      engine.FreeBlocks(t.blocks);
      transfers.erase(it);
    }
    if (!error.empty()) FailToRouter(m.request_id, error, true);
    return Status::Ok();
  }
  if (frame.type == MessageType::kHeartbeat) return Status::Ok();
  return InvalidArgument("unexpected message type {} from a KV peer", uint16_t(frame.type));
}

Status Worker::Impl::ShareCache() {
  CLEAVE_ASSIGN_OR_RETURN(uint64_t bytes, KvRegionBytes(Layout()));
  if (bytes != uint64_t(cache->bytes())) {
    return FailedPrecondition("the KV cache ({} bytes) is not the layout's {}", cache->bytes(),
                              bytes);
  }
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<SharedKvRegion> region, SharedKvRegion::Create(bytes));
  CLEAVE_ASSIGN_OR_RETURN(shm_server, ShmOfferServer::Start(region->fd()));
  cache->UseExternalStorage(region->bytes(), /*keep_contents=*/false);
  shm_region = std::move(region);
  return Status::Ok();
}

Result<std::shared_ptr<Connection>> Worker::Impl::PeerFor(const std::string& host, uint16_t port) {
  const std::string key = fmt::format("{}:{}", host, port);
  {
    std::lock_guard lock(mu);
    if (auto it = peers.find(key); it != peers.end()) return it->second;
  }
  CLEAVE_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, TcpConnect(host, port));
  std::shared_ptr<Connection> conn = std::move(c);
  CLEAVE_ASSIGN_OR_RETURN(HelloAckMsg ack,
                          ConnectHandshake(*conn, config.secret, config.role, Layout()));
  if (!(ack.layout == Layout())) return FailedPrecondition("{} has another KV layout", key);
  bool shm = false;
  if (shm_server) {  // offer our cache; the peer maps it if it is on this host
    ShmOfferMsg offer{shm_server->name(), shm_server->NewToken(), uint64_t(cache->bytes())};
    CLEAVE_RETURN_IF_ERROR(conn->Send(Encode(offer)));
    CLEAVE_ASSIGN_OR_RETURN(Frame f, conn->Recv());
    CLEAVE_ASSIGN_OR_RETURN(ShmAcceptMsg accept, DecodeShmAccept(f));
    shm = accept.ok;
    if (!shm && config.kv_transport == KvTransport::kShm) {
      return FailedPrecondition("{} cannot map our KV cache: {}", key, accept.error);
    }
    spdlog::info("KV from {} over {}{}", key, shm ? "shared memory" : "TCP",
                 shm ? "" : " (" + accept.error + ")");
  }
  std::lock_guard lock(mu);
  if (shm) shm_peers.insert(conn.get());
  peers[key] = conn;
  conns.push_back(conn);
  conn_threads.emplace_back([this, conn, key] { PeerLoop(conn, key); });
  return conn;
}

void Worker::Impl::StartPulls() {
  while (true) {
    AddRequestMsg m;
    std::vector<BlockId> blocks;
    {
      std::lock_guard lock(mu);
      if (pulls.empty()) return;
      const int32_t n = CeilDiv(KvTokens(pulls.front()), cache->block_size());
      const int32_t free_blocks = engine.block_stats().num_free_blocks;
      const bool idle = engine.num_running() == 0 && transfers.empty();
      if (free_blocks - n < config.decode_reserve_blocks && !(idle && free_blocks >= n)) return;
      std::optional<std::vector<BlockId>> got = engine.AllocateBlocks(n);
      if (!got) return;
      blocks = std::move(*got);
      m = std::move(pulls.front());
      pulls.pop_front();
    }
    Result<std::shared_ptr<Connection>> peer = PeerFor(m.source_host, m.source_port);
    const uint64_t rid = m.request_id;
    const uint32_t n = uint32_t(blocks.size());
    KvPullMsg pull{rid, n, {}};
    if (!peer.ok()) {
      engine.FreeBlocks(blocks);
      FailToRouter(
          rid, "KV transfer failed: cannot reach the prefill worker: " + peer.status().message(),
          true);
      continue;
    }
    {
      std::lock_guard lock(mu);
      Transfer t;
      t.msg = std::move(m);
      t.blocks = std::move(blocks);
      t.peer = *peer;
      t.last_progress = t.pull_sent = std::chrono::steady_clock::now();
      t.kv_tokens = KvTokens(t.msg);
      t.early = t.msg.mode == RequestMode::kDecodeLayerwise;
      t.shm = shm_peers.count(peer->get()) > 0;
      if (t.shm) pull.block_ids.assign(t.blocks.begin(), t.blocks.end());
      transfers.emplace(rid, std::move(t));
    }
    if (!(*peer)->Send(Encode(pull)).ok()) {
      // PeerLoop sees the broken connection and fails the transfer.
      (*peer)->Close();
    }
  }
}

void Worker::Impl::AbortStalledTransfers() {
  const auto now = std::chrono::steady_clock::now();
  const auto limit = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(config.kv_transfer_timeout_s));
  std::vector<uint64_t> failed;
  std::vector<std::shared_ptr<Connection>> stuck;
  {
    std::lock_guard lock(mu);
    for (const auto& [rid, t] : transfers) {
      auto heard = peer_progress.find(t.peer.get());
      const auto last =
          heard == peer_progress.end() ? t.last_progress : std::max(t.last_progress, heard->second);
      if (now - last >= limit && std::find(stuck.begin(), stuck.end(), t.peer) == stuck.end()) {
        stuck.push_back(t.peer);
      }
    }
    int64_t quarantined = 0;
    for (auto it = transfers.begin(); it != transfers.end();) {
      Transfer& t = it->second;
      if (std::find(stuck.begin(), stuck.end(), t.peer) == stuck.end()) {
        ++it;
        continue;
      }
      if (t.shm) {
        quarantined += int64_t(t.blocks.size());
      } else {
        engine.FreeBlocks(t.blocks);
      }
      if (!t.cancelled) failed.push_back(it->first);
      it = transfers.erase(it);
    }
    if (quarantined > 0) {
      quarantined_blocks += quarantined;
      spdlog::warn("{} KV blocks of stalled shared-memory pulls quarantined ({} in all)",
                   quarantined, quarantined_blocks);
    }
  }
  for (const auto& peer : stuck) {
    spdlog::warn("KV transfer from {} stalled for {} s: aborted", peer->peer(),
                 config.kv_transfer_timeout_s);
    peer->Close();
  }
  for (uint64_t rid : failed) {
    FailToRouter(rid,
                 fmt::format("KV transfer failed: no progress for {} s (stalled)",
                             config.kv_transfer_timeout_s),
                 true);
  }
}

}  // namespace cleave::cluster
