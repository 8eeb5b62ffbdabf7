#include "worker/commands.h"

#include <memory>

#include "worker/process/worker_process.h"

namespace ds::worker {

void add_worker_command(CLI::App& app) {
  auto options = std::make_shared<WorkerProcessOptions>();
  auto* cmd = app.add_subcommand("worker", "Run one tensor-parallel rank for a front end (deltaserve serve)");
  cmd->add_option("--connect", options->connect, "The front end's worker control endpoint, HOST:PORT")->required();
  cmd->add_option("--rank", options->rank, "This worker's tensor-parallel rank")->required()->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", options->device, "cpu or cuda:N")->capture_default_str();
  cmd->add_option("--comm-host", options->comm_host,
                  "CPU ranks: the address peers reach this rank's host communicator at "
                  "(default: the local address that routes to the front end)");
  cmd->add_option("--connect-timeout", options->connect_timeout_s,
                  "Seconds to wait for the front end and for the other ranks")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--exit-with-parent", options->exit_with_parent,
                "Exit when the spawning process dies, and ignore SIGTERM: the spawner stops this worker "
                "with Shutdown after draining (for workers that `serve` starts)");
  cmd->add_option("--parent-pid", options->parent_pid,
                  "The spawner's pid: implies --exit-with-parent and also catches a spawner that died "
                  "before this worker started")
      ->check(CLI::PositiveNumber);
  cmd->callback([options] {
    const int code = run_worker_process(*options);
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace ds::worker
