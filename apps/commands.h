// Each `cleave` subcommand registers itself on the CLI11 app; apps/cleave.cpp wires them.
// A Register* function adds the subcommand and its flags; the callback runs the command and
// stores its exit code in the int it was given.
#pragma once

#include <CLI/CLI.hpp>

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

}  // namespace cleave::app
