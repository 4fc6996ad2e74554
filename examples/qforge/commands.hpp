#pragma once
// Each subcommand adds itself to the application; its callback stores the exit status.
#include <CLI/CLI.hpp>

namespace cli {
void add_eval(CLI::App& app, int& status);
void add_quantize(CLI::App& app, int& status);
void add_convert(CLI::App& app, int& status);
void add_ppl(CLI::App& app, int& status);
void add_generate(CLI::App& app, int& status);
void add_lens(CLI::App& app, int& status);
void add_neurons(CLI::App& app, int& status);
void add_weights(CLI::App& app, int& status);
void add_imatrix(CLI::App& app, int& status);
void add_allocate(CLI::App& app, int& status);
}  // namespace cli
