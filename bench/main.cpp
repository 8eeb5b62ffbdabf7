// `deltaserve-bench`: the benchmark client alone (the same options as `deltaserve bench`), for
// load-generating hosts that have neither CUDA nor the server installed.
#include <CLI/CLI.hpp>

#include "bench/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"deltaserve-bench: benchmark a deltaserve, SGLang or vLLM endpoint"};
  app.require_subcommand(1);
  ds::bench::add_bench_command(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
