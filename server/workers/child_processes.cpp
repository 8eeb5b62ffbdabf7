#include "server/workers/child_processes.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace ds::server {

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

ChildProcesses::~ChildProcesses() { terminate_all(std::chrono::seconds(5)); }

pid_t ChildProcesses::spawn(const std::vector<std::string>& argv, ExitCallback on_exit) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // A clean signal state: the front end blocks SIGINT/SIGTERM for sigwait and ignores SIGPIPE.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  std::lock_guard lock(mutex_);
  posix_spawnattr_setpgroup(&attr, group_);  // 0 for the first child: it leads a new group
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv.at(0).c_str(), nullptr, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  if (group_ == 0) group_ = pid;
  ++alive_;
  reapers_.emplace_back([this, pid, cb = std::move(on_exit)] { reap(pid, cb); });
  return pid;
}

void ChildProcesses::reap(pid_t pid, ExitCallback on_exit) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (on_exit) on_exit(pid, describe_wait_status(status));
  std::lock_guard lock(mutex_);
  --alive_;
  exited_.notify_all();
}

void ChildProcesses::terminate_all(std::chrono::milliseconds grace) {
  std::vector<std::thread> reapers;
  std::thread killer;
  {
    std::unique_lock lock(mutex_);
    if (group_ != 0 && alive_ > 0) {
      killpg(group_, SIGTERM);
      if (!exited_.wait_for(lock, grace, [&] { return alive_ == 0; })) killpg(group_, SIGKILL);
    }
    reapers.swap(reapers_);
    killer.swap(killer_);
  }
  for (auto& t : reapers) t.join();
  if (killer.joinable()) killer.join();
}

void ChildProcesses::terminate_all_async(std::chrono::milliseconds grace) {
  std::lock_guard lock(mutex_);
  if (group_ == 0 || alive_ == 0 || killer_.joinable()) return;
  killpg(group_, SIGTERM);
  killer_ = std::thread([this, grace] {
    std::unique_lock lock(mutex_);
    // alive_ > 0 means some child is not reaped yet, so the group id still names our group.
    if (!exited_.wait_for(lock, grace, [&] { return alive_ == 0; })) killpg(group_, SIGKILL);
  });
}

int ChildProcesses::num_alive() const {
  std::lock_guard lock(mutex_);
  return alive_;
}

}  // namespace ds::server
