// `deltaserve worker`: one tensor-parallel rank. It dials the front end's WorkerControl endpoint
// and then only obeys (proto/worker.proto): Hello -> Init -> MemoryReport -> AllocatePools ->
// PoolsReady -> StepPlan/StepResult ... -> Shutdown.
#pragma once

#include <string>

namespace ds::worker {

struct WorkerProcessOptions {
  std::string connect;            // HOST:PORT of the front end's control endpoint
  int rank = 0;
  std::string device = "cpu";     // "cpu" or "cuda:N"
  std::string comm_host;          // CPU ranks: where the host communicator listens; empty: the
                                  // local address that routes to the front end
  double connect_timeout_s = 60;  // to reach the front end, and for the ranks to find each other
  bool exit_with_parent = false;  // die with the process that spawned us (local workers); ignore
                                  // SIGTERM: the spawner drains, then sends Shutdown
  int parent_pid = 0;             // with exit_with_parent: the spawner's pid, which closes the race
                                  // of a parent dying before the worker could ask to die with it
};

// Exit codes of the worker process.
enum WorkerExit : int {
  kExitShutdown = 0,      // told to stop
  kExitError = 1,         // this rank failed (reported to the front end as WorkerError when possible)
  kExitFrontEndGone = 3,  // the control stream broke: the front end died or dropped us
};

// Runs the rank until Shutdown, an error, or the loss of the front end; returns a WorkerExit.
int run_worker_process(const WorkerProcessOptions& options);

}  // namespace ds::worker
