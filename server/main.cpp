// `deltaserve` — one binary, one subcommand per job. Subcommands are defined next to the code
// they drive (server/, worker/, bench/, weights/) and registered here.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/commands.h"
#include "kernels/device.h"
#include "server/commands.h"
#include "weights/commands.h"
#include "worker/commands.h"

namespace {

void add_info_command(CLI::App& app) {
  auto* info = app.add_subcommand("info", "Print the version, linked CUDA libraries and visible GPUs");
  info->callback([] {
    std::printf("deltaserve %s\n%s\n", DELTASERVE_VERSION, ds::kernels::cuda_library_versions().c_str());
    auto devices = ds::kernels::list_cuda_devices();
    if (devices.empty()) std::printf("no GPU visible: the CPU backend will be used\n");
    for (const auto& d : devices) {
      std::printf("cuda:%d %s sm_%d%d %.1f/%.1f GiB free\n", d.index, d.name.c_str(), d.sm_major, d.sm_minor,
                  d.free_bytes / 1073741824.0, d.total_bytes / 1073741824.0);
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"deltaserve: serving Qwen3.5 and Qwen3-Next (Gated DeltaNet hybrids) from C++/CUDA"};
  app.require_subcommand(1);
  add_info_command(app);
  ds::bench::add_bench_command(app);
  ds::weights::add_gen_model_command(app);
  ds::server::add_serve_command(app);
  ds::worker::add_worker_command(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
