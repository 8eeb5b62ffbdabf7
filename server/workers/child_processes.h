// The worker processes this front end spawned: one process group, a reaper thread per child, and
// termination of the whole group (SIGTERM, then SIGKILL after a grace period) so that nothing
// is left behind. Children also get --exit-with-parent, for the case where we are SIGKILLed
// (workers started so ignore SIGTERM: only Shutdown, SIGKILL or our death stops them).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ds::server {

class ChildProcesses {
 public:
  using ExitCallback = std::function<void(pid_t pid, const std::string& how)>;

  ChildProcesses() = default;
  ~ChildProcesses();
  ChildProcesses(const ChildProcesses&) = delete;
  ChildProcesses& operator=(const ChildProcesses&) = delete;

  // Starts argv[0] with argv; `on_exit` runs on the child's reaper thread when it ends.
  // Throws std::runtime_error naming the program when it cannot be started.
  pid_t spawn(const std::vector<std::string>& argv, ExitCallback on_exit);
  // SIGTERM to the group, SIGKILL to whatever is left after `grace`; returns once all are reaped.
  // (Workers spawned with --exit-with-parent ignore SIGTERM, so for them the SIGKILL is what counts.)
  void terminate_all(std::chrono::milliseconds grace);
  // The same without waiting (callable from a reaper thread): SIGTERM now, SIGKILL to whatever
  // is left after `grace` (from a watchdog thread that terminate_all joins).
  void terminate_all_async(std::chrono::milliseconds grace);
  int num_alive() const;

 private:
  void reap(pid_t pid, ExitCallback on_exit);

  pid_t group_ = 0;  // process group id (the first child's pid)
  mutable std::mutex mutex_;
  std::condition_variable exited_;
  int alive_ = 0;
  std::vector<std::thread> reapers_;
  std::thread killer_;  // terminate_all_async's watchdog
};

// "exited with status 1", "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

}  // namespace ds::server
