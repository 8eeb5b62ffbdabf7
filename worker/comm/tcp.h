// Blocking TCP sockets with deadlines, for the host communicator between CPU ranks. Every wait
// is bounded so a peer that hangs gives an error instead of a hang; a peer that dies shows up
// as a closed connection. Errors are std::runtime_error naming the peer and what was going on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ds::worker::tcp {

using Clock = std::chrono::steady_clock;

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// "host:port" or "[ipv6]:port". Throws std::invalid_argument naming the address.
HostPort parse_host_port(const std::string& address);
std::string format_host_port(const HostPort& address);

// The local address this machine uses to reach `remote_host` (no packet is sent): the address
// peers on the same network can most likely reach us at. "127.0.0.1" for a loopback remote.
std::string local_address_towards(const std::string& remote_host);

// An owned socket file descriptor (move-only).
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void close();

 private:
  int fd_ = -1;
};

// A listening socket bound to host:port (port 0 picks a free one).
Socket listen_on(const HostPort& address);
uint16_t bound_port(const Socket& socket);

// Connects, retrying refused connections until the deadline (the peer may not listen yet).
Socket connect_to(const HostPort& address, Clock::time_point deadline);
Socket accept_one(const Socket& listener, Clock::time_point deadline);

// Transfer exactly `bytes` bytes or throw; `what` names the peer and the operation for errors.
void send_all(const Socket& socket, const void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what);
void recv_all(const Socket& socket, void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what);

}  // namespace ds::worker::tcp
