// The `cleave` command line: one binary, one subcommand per job.
//   cleave inspect MODEL      metadata, tensors and a summary of a GGUF file
//   cleave generate -p TEXT   run a prompt through the model and stream the continuation
//   cleave chat               interactive multi-turn chat
//   cleave profile            prompt/generation throughput of the forward pass
//   cleave bench              goodput and latency of any OpenAI-compatible server
//   cleave serve              OpenAI-compatible HTTP server
//   cleave synth -o FILE      write a synthetic model with random weights
//   cleave plan               simulate placements and rank them by goodput per GPU
//   cleave worker             cluster worker (prefill / decode / mixed) behind `serve`
#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "core/log.h"

int main(int argc, char** argv) {
  CLI::App app{"cleave: an LLM inference server built for goodput"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Debug logging (or set CLEAVE_LOG_LEVEL)");
  int exit_code = 0;
  cleave::app::RegisterInspect(app, exit_code);
  cleave::app::RegisterGenerate(app, exit_code);
  cleave::app::RegisterChat(app, exit_code);
  cleave::app::RegisterProfile(app, exit_code);
  cleave::app::RegisterBench(app, exit_code);
  cleave::app::RegisterServe(app, exit_code);
  cleave::app::RegisterSynth(app, exit_code);
  cleave::app::RegisterPlan(app, exit_code);
  cleave::app::RegisterWorker(app, exit_code);
  app.parse_complete_callback([&] { cleave::InitLogging(verbose); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
