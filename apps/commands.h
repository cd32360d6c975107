// Each `cleave` subcommand registers itself on the CLI11 app; apps/cleave.cpp wires them.
// A Register* function adds the subcommand and its flags; the callback runs the command and
// stores its exit code in the int it was given.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "cluster/router.h"
#include "core/status.h"

namespace cleave::cluster {
class JoinedCluster;
class JoinListener;
}  // namespace cleave::cluster

namespace cleave::app {

void RegisterInspect(CLI::App& app, int& exit_code);
void RegisterGenerate(CLI::App& app, int& exit_code);
void RegisterChat(CLI::App& app, int& exit_code);
void RegisterProfile(CLI::App& app, int& exit_code);
void RegisterBench(CLI::App& app, int& exit_code);
void RegisterServe(CLI::App& app, int& exit_code);
void RegisterSynth(CLI::App& app, int& exit_code);
void RegisterPlan(CLI::App& app, int& exit_code);
void RegisterWorker(CLI::App& app, int& exit_code);

// KV transport flags shared by `cleave worker` and `cleave serve` (which passes them on to the
// workers it starts). Defined in cmd_worker.cc.
struct WorkerTransportFlags {
  double kv_transfer_timeout_s = 10.0;
  std::string kv_transport = "auto";  // auto | tcp | shm
};
void AddWorkerTransportFlags(CLI::App* cmd, WorkerTransportFlags& flags);
std::vector<std::string> WorkerTransportArgs(const WorkerTransportFlags& flags);
// `cleave serve --accept-workers HOST:PORT` with no local workers: the router is made of the
// workers that register (`cleave worker --join`), authenticated with CLEAVE_CLUSTER_SECRET.
// Waits for the first registration. Defined in cmd_worker.cc.
// CLEAVE_CLUSTER_SECRET if set and at least 16 characters long, else null.
const char* ClusterSecret();
// ClusterSecret(), or an InvalidArgument naming --accept-workers.
Result<std::string> RequireClusterSecret();
// Listens at address for `cleave worker --join` and adds each worker to `router` (which must
// outlive the listener); needs CLEAVE_CLUSTER_SECRET, the same as the router's.
Result<std::unique_ptr<cluster::JoinListener>> AcceptWorkersInto(const std::string& address,
                                                                 cluster::Router& router);
// `routing` carries the routing knobs; secret and wait_for_worker_s are set here.
Result<std::unique_ptr<cluster::JoinedCluster>> StartJoinedCluster(const std::string& address,
                                                                   cluster::RouterConfig routing);

}  // namespace cleave::app
