// Worker: one Engine behind the wire protocol, in one of three roles.
//
//   mixed    runs requests to the end (colocated, chunked prefill).
//   prefill  runs the prompt (max_tokens = 1 semantics), samples the first token, and stages
//            the prompt's KV until a decode worker pulls it. Staged KV counts against
//            max_staged_blocks; while that is full no new prompt is admitted (requests wait in
//            the worker's queue, nothing is dropped).
//   decode   queues prefilled requests, reserves blocks (Engine::AllocateBlocks) only when it
//            has room, then pulls the KV from the prefill worker (kKvPull), writes each block
//            into its own cache and adds the sequence with Engine::AddPrefilledRequest.
//
//   router ──AddRequest(prefill-only)──► prefill ──TokenOutput(t1, kv_staged)──► router
//   router ──AddRequest(decode, src)───► decode ──KvPull──► prefill ──KvBlock × L·n, KvDone──►
//   decode ──TokenOutput(t2..)─────────► router
//
// Threads: one accepting, one per accepted connection (reads and dispatches frames), one per
// outgoing peer connection (decode → prefill), and the engine thread, which alone admits
// requests into the engine and turns engine ids into router ids (so the two can never race).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/transport.h"
#include "cluster/wire.h"
#include "core/status.h"
#include "engine/engine.h"
#include "model/kv_cache.h"

namespace cleave::cluster {

// How a decode worker receives KV from prefill workers. kAuto: shared memory with prefill
// workers that can map it (same host and network namespace), TCP with the others. kShm: shared
// memory or fail the pull; kTcp: never shared memory (either role).
enum class KvTransport : uint8_t { kAuto, kTcp, kShm };
// "auto" | "tcp" | "shm".
Result<KvTransport> ParseKvTransport(std::string_view name);

struct WorkerConfig {
  WorkerRole role = WorkerRole::kMixed;
  std::string host = "127.0.0.1";  // listen address: loopback unless told otherwise
  uint16_t port = 0;               // 0: pick a free one (see Worker::port)
  std::string secret;              // shared with the router and the other workers
  EngineConfig engine;
  int32_t max_staged_blocks = 0;       // prefill: KV held for decode workers; 0: engine.num_blocks
  int32_t decode_reserve_blocks = -1;  // decode: pull only if this many stay free; -1: 1/16
  // decode: a pull that receives nothing for this long is aborted (blocks freed, the request
  // reported to the router as a KV transfer failure, the connection to that peer dropped).
  double kv_transfer_timeout_s = 10.0;
  KvTransport kv_transport = KvTransport::kAuto;
  KvFault kv_fault;  // test only (CLEAVE_FAULT_KV): see FaultyConnection in transport.h
};

class Worker {
 public:
  // executor and tokenizer must outlive the worker; cache is the executor's KV storage. A decode
  // worker with shared memory (kv_transport auto/shm) moves the cache's storage into a mapping
  // it owns at Start: the cache must not be used after the worker is destroyed.
  Worker(WorkerConfig config, Executor* executor, KvCache* cache, const Tokenizer* tokenizer);
  ~Worker();  // Stop()

  // Listens and starts the threads.
  Status Start();
  uint16_t port() const;
  // Stops the threads and closes every connection; in-flight requests are dropped.
  void Stop();

  WorkerStats stats() const;
  KvLayout layout() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bytes of K (or V) of one block of one layer, as the cache stores it. The one place that
// knows the cache's element type: KV moves between workers as these opaque bytes.
std::span<uint8_t> KvBlockBytes(KvCache& cache, bool value, int64_t layer, int64_t block);
uint64_t KvBlockByteSize(const KvCache& cache);

}  // namespace cleave::cluster
