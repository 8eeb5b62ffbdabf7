// `deltaserve bench`: the load-generating benchmark client.
#pragma once

#include <CLI/CLI.hpp>

namespace ds::bench {

void add_bench_command(CLI::App& app);

}  // namespace ds::bench
