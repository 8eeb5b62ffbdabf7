// The worker's `deltaserve` subcommands, registered by server/main.cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace ds::worker {

// `deltaserve worker --connect HOST:PORT --rank R [--device cpu|cuda:N] [--exit-with-parent] ...`
void add_worker_command(CLI::App& app);

}  // namespace ds::worker
