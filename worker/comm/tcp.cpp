#include "worker/comm/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

namespace ds::worker::tcp {
namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::string deadline_message(const std::string& what) { return what + ": timed out"; }

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

// Waits until `events` is ready on fd; false on deadline.
bool wait_ready(int fd, short events, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw_errno(what + ": poll");
  }
}

using AddrInfoPtr = std::unique_ptr<addrinfo, decltype(&freeaddrinfo)>;

AddrInfoPtr resolve(const HostPort& address, int socktype, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* result = nullptr;
  const std::string port = std::to_string(address.port);
  const int rc = getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0) {
    throw std::runtime_error("cannot resolve " + format_host_port(address) + ": " + gai_strerror(rc));
  }
  return AddrInfoPtr(result, &freeaddrinfo);
}

void set_nodelay(int fd) {
  int one = 1;  // collectives are small request/response exchanges: no Nagle delay
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

HostPort parse_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw std::invalid_argument("address '" + address + "' is not HOST:PORT");
  }
  std::string host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = address.substr(colon + 1);
  unsigned long port = 0;
  size_t used = 0;
  try {
    port = std::stoul(port_text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != port_text.size() || port > 65535) {
    throw std::invalid_argument("address '" + address + "' has no valid port (0-65535)");
  }
  return HostPort{host, static_cast<uint16_t>(port)};
}

std::string format_host_port(const HostPort& address) {
  const bool v6 = address.host.find(':') != std::string::npos;
  return (v6 ? "[" + address.host + "]" : address.host) + ":" + std::to_string(address.port);
}

std::string local_address_towards(const std::string& remote_host) {
  auto info = resolve(HostPort{remote_host, 9}, SOCK_DGRAM, false);
  Socket probe(::socket(info->ai_family, SOCK_DGRAM, 0));
  if (!probe.valid()) throw_errno("socket");
  // Connecting a UDP socket only picks the route and the local address.
  if (::connect(probe.fd(), info->ai_addr, info->ai_addrlen) != 0) throw_errno("no route to " + remote_host);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (::getsockname(probe.fd(), reinterpret_cast<sockaddr*>(&local), &len) != 0) throw_errno("getsockname");
  char text[INET6_ADDRSTRLEN] = {};
  const void* raw = local.ss_family == AF_INET6
                        ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                        : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
  if (!::inet_ntop(local.ss_family, raw, text, sizeof(text))) throw_errno("inet_ntop");
  return text;
}

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

int Socket::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Socket listen_on(const HostPort& address) {
  auto info = resolve(address, SOCK_STREAM, true);
  const std::string what = "listen on " + format_host_port(address);
  Socket s(::socket(info->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) throw_errno(what);
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(s.fd(), info->ai_addr, info->ai_addrlen) != 0) throw_errno(what);
  if (::listen(s.fd(), 64) != 0) throw_errno(what);
  return s;
}

uint16_t bound_port(const Socket& socket) {
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&local), &len) != 0) throw_errno("getsockname");
  return local.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port)
                                     : ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
}

Socket connect_to(const HostPort& address, Clock::time_point deadline) {
  const std::string what = "connect to " + format_host_port(address);
  auto info = resolve(address, SOCK_STREAM, false);
  std::string last_error = "no address";
  for (;;) {
    for (addrinfo* a = info.get(); a; a = a->ai_next) {
      Socket s(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!s.valid()) throw_errno(what);
      if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) == 0) {
        set_nodelay(s.fd());
        return s;
      }
      last_error = std::strerror(errno);
    }
    if (Clock::now() >= deadline) throw std::runtime_error(deadline_message(what) + " (last error: " + last_error + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Socket accept_one(const Socket& listener, Clock::time_point deadline) {
  const std::string what = "accept on port " + std::to_string(bound_port(listener));
  if (!wait_ready(listener.fd(), POLLIN, deadline, what)) throw std::runtime_error(deadline_message(what));
  Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!s.valid()) throw_errno(what);
  set_nodelay(s.fd());
  return s;
}

void send_all(const Socket& socket, const void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    if (!wait_ready(socket.fd(), POLLOUT, deadline, what)) throw std::runtime_error(deadline_message(what));
    const ssize_t n = ::send(socket.fd(), p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == EPIPE || errno == ECONNRESET) throw std::runtime_error(what + ": the peer closed the connection");
      throw_errno(what);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void recv_all(const Socket& socket, void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    if (!wait_ready(socket.fd(), POLLIN, deadline, what)) throw std::runtime_error(deadline_message(what));
    const ssize_t n = ::recv(socket.fd(), p, bytes, MSG_DONTWAIT);
    if (n == 0) throw std::runtime_error(what + ": the peer closed the connection");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == ECONNRESET) throw std::runtime_error(what + ": the peer closed the connection");
      throw_errno(what);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace ds::worker::tcp
