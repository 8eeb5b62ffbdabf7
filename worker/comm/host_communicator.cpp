#include "worker/comm/host_communicator.h"

#include <cstring>
#include <stdexcept>

#include "kernels/common.h"

namespace ds::worker {
namespace {

constexpr uint32_t kMagic = 0x43485344;  // "DSHC"

// Wire records (host byte order: every rank of one model runs the same build).
struct Handshake {
  uint32_t magic;
  uint32_t rank;
  uint32_t world;
};

struct RequestHeader {
  uint32_t op;
  uint32_t dtype;
  uint64_t count;
  uint64_t sequence;
};

struct ResponseHeader {
  uint32_t ok;           // 1: the result follows; 0: an error message of `message_bytes` follows
  uint32_t message_bytes;
};

size_t element_bytes(CommDType dtype) { return dtype == CommDType::kFloat32 ? 4 : 2; }

const char* op_name(uint32_t op) {
  switch (static_cast<HostCommunicator::Op>(op)) {
    case HostCommunicator::Op::kAllReduceSum: return "all_reduce_sum";
    case HostCommunicator::Op::kAllGather: return "all_gather";
  }
  return "unknown collective";
}

const char* dtype_name(uint32_t dtype) { return dtype == uint32_t(CommDType::kFloat32) ? "fp32" : "bf16"; }

tcp::Clock::time_point after(std::chrono::milliseconds timeout) { return tcp::Clock::now() + timeout; }

}  // namespace

struct HostCommunicator::Request {
  Op op;
  CommDType dtype;
  size_t count;
  const void* in;  // this rank's contribution
  void* out;       // the result: count elements (all-reduce) or world * count (all-gather)

  size_t in_bytes() const { return count * element_bytes(dtype); }
  size_t out_bytes(int world) const { return op == Op::kAllGather ? in_bytes() * world : in_bytes(); }
};

HostCommListener HostCommListener::open(const std::string& host) {
  HostCommListener listener;
  listener.socket_ = tcp::listen_on(tcp::HostPort{host, 0});
  listener.address_ = tcp::format_host_port(tcp::HostPort{host, tcp::bound_port(listener.socket_)});
  return listener;
}

std::unique_ptr<HostCommunicator> HostCommunicator::connect(HostCommListener listener, int rank,
                                                            const std::vector<std::string>& addresses,
                                                            HostCommOptions options) {
  const int world = static_cast<int>(addresses.size());
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("host communicator: rank " + std::to_string(rank) + " is outside a world of " +
                                std::to_string(world) + " addresses");
  }
  std::unique_ptr<HostCommunicator> comm(new HostCommunicator(rank, world, options));
  const auto deadline = after(options.connect_timeout);
  const std::string me = "host communicator rank " + std::to_string(rank);
  comm->peers_.resize(rank == 0 ? world : 1);
  if (rank == 0) {
    const auto hub = tcp::parse_host_port(addresses[0]);
    if (hub.port != tcp::bound_port(listener.socket())) {
      throw std::invalid_argument(me + ": addresses[0] is " + addresses[0] + " but this rank listens on " +
                                  listener.address());
    }
    for (int accepted = 1; accepted < world; ++accepted) {
      tcp::Socket peer = tcp::accept_one(listener.socket(), deadline);
      Handshake hello{};
      tcp::recv_all(peer, &hello, sizeof(hello), deadline, me + ": handshake");
      if (hello.magic != kMagic || hello.world != uint32_t(world) || hello.rank == 0 || hello.rank >= uint32_t(world) ||
          comm->peers_[hello.rank].valid()) {
        throw std::runtime_error(me + ": bad handshake (rank " + std::to_string(hello.rank) + ", world " +
                                 std::to_string(hello.world) + ", expected world " + std::to_string(world) +
                                 " and a rank seen once)");
      }
      comm->peers_[hello.rank] = std::move(peer);
    }
    // Tell every rank the group is complete, so connect() returns everywhere at about the same time.
    for (int r = 1; r < world; ++r) {
      Handshake ready{kMagic, 0, uint32_t(world)};
      tcp::send_all(comm->peers_[r], &ready, sizeof(ready), deadline, me + ": handshake to rank " + std::to_string(r));
    }
  } else {
    comm->peers_[0] = tcp::connect_to(tcp::parse_host_port(addresses[0]), deadline);
    Handshake hello{kMagic, uint32_t(rank), uint32_t(world)};
    tcp::send_all(comm->peers_[0], &hello, sizeof(hello), deadline, me + ": handshake to rank 0");
    Handshake ready{};
    tcp::recv_all(comm->peers_[0], &ready, sizeof(ready), deadline, me + ": waiting for the group at " + addresses[0]);
    if (ready.magic != kMagic) throw std::runtime_error(me + ": " + addresses[0] + " is not a host communicator hub");
  }
  return comm;
}

void HostCommunicator::all_reduce_sum(void* data, size_t count, CommDType dtype, cudaStream_t) {
  run(Request{Op::kAllReduceSum, dtype, count, data, data});
}

void HostCommunicator::all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t) {
  run(Request{Op::kAllGather, dtype, count, in, out});
}

std::string HostCommunicator::describe(const Request& request) const {
  return "host communicator rank " + std::to_string(rank_) + ": " + op_name(uint32_t(request.op)) + " #" +
         std::to_string(sequence_) + " (" + std::to_string(request.count) + " x " +
         dtype_name(uint32_t(request.dtype)) + ")";
}

void HostCommunicator::check_usable() const {
  if (!broken_.empty()) throw std::runtime_error("host communicator is unusable after an earlier error: " + broken_);
}

void HostCommunicator::run(const Request& request) {
  check_usable();
  if (world_ == 1) {
    if (request.op == Op::kAllGather && request.in != request.out) std::memmove(request.out, request.in, request.in_bytes());
    ++sequence_;
    return;
  }
  try {
    if (rank_ == 0) {
      run_hub(request);
    } else {
      run_spoke(request);
    }
    ++sequence_;
  } catch (const std::exception& e) {
    broken_ = e.what();
    throw;
  }
}

void HostCommunicator::run_spoke(const Request& request) {
  const std::string what = describe(request);
  const auto deadline = after(options_.collective_timeout);
  const tcp::Socket& hub = peers_[0];
  RequestHeader header{uint32_t(request.op), uint32_t(request.dtype), request.count, sequence_};
  tcp::send_all(hub, &header, sizeof(header), deadline, what + ": sending to rank 0");
  tcp::send_all(hub, request.in, request.in_bytes(), deadline, what + ": sending to rank 0");
  ResponseHeader response{};
  tcp::recv_all(hub, &response, sizeof(response), deadline, what + ": waiting for rank 0");
  if (!response.ok) {
    std::string message(response.message_bytes, '\0');
    tcp::recv_all(hub, message.data(), message.size(), deadline, what + ": reading rank 0's error");
    throw std::runtime_error(what + ": rank 0 reports: " + message);
  }
  tcp::recv_all(hub, request.out, request.out_bytes(world_), deadline, what + ": receiving the result from rank 0");
}

void HostCommunicator::run_hub(const Request& request) {
  const std::string what = describe(request);
  const auto deadline = after(options_.collective_timeout);
  const size_t in_bytes = request.in_bytes();
  auto* out = static_cast<char*>(request.out);
  if (request.op == Op::kAllGather) std::memmove(out, request.in, in_bytes);
  try {
    for (int r = 1; r < world_; ++r) {
      const std::string from = what + ": from rank " + std::to_string(r);
      RequestHeader header{};
      tcp::recv_all(peers_[r], &header, sizeof(header), deadline, from);
      if (header.op != uint32_t(request.op) || header.dtype != uint32_t(request.dtype) ||
          header.count != request.count || header.sequence != sequence_) {
        throw std::runtime_error(from + ": rank " + std::to_string(r) + " called " + op_name(header.op) + " #" +
                                 std::to_string(header.sequence) + " (" + std::to_string(header.count) + " x " +
                                 dtype_name(header.dtype) + "): the ranks are out of step");
      }
      if (request.op == Op::kAllGather) {
        tcp::recv_all(peers_[r], out + r * in_bytes, in_bytes, deadline, from);
        continue;
      }
      // Sum in rank order, accumulating in fp32 (bf16 is rounded once, after the last rank).
      if (request.dtype == CommDType::kFloat32) {
        scratch_.resize(request.count);
        tcp::recv_all(peers_[r], scratch_.data(), in_bytes, deadline, from);
        auto* acc = static_cast<float*>(request.out);
        for (size_t i = 0; i < request.count; ++i) acc[i] += scratch_[i];
      } else {
        scratch_.resize(request.count + (request.count + 1) / 2);  // fp32 sums, then the bf16 contribution
        float* acc = scratch_.data();
        auto* incoming = reinterpret_cast<kernels::bf16*>(scratch_.data() + request.count);
        const auto* mine = static_cast<const kernels::bf16*>(request.in);
        if (r == 1) {
          for (size_t i = 0; i < request.count; ++i) acc[i] = kernels::bf16_to_float(mine[i]);
        }
        tcp::recv_all(peers_[r], incoming, in_bytes, deadline, from);
        for (size_t i = 0; i < request.count; ++i) acc[i] += kernels::bf16_to_float(incoming[i]);
      }
    }
    if (request.op == Op::kAllReduceSum && request.dtype == CommDType::kBFloat16) {
      auto* result = static_cast<kernels::bf16*>(request.out);
      for (size_t i = 0; i < request.count; ++i) result[i] = kernels::float_to_bf16(scratch_[i]);
    }
  } catch (const std::exception& e) {
    // Pass the reason on, so the other ranks fail with it instead of "rank 0 closed the connection".
    const std::string message = e.what();
    ResponseHeader failed{0, uint32_t(message.size())};
    const auto soon = after(std::chrono::seconds(1));
    for (int r = 1; r < world_; ++r) {
      try {
        tcp::send_all(peers_[r], &failed, sizeof(failed), soon, what);
        tcp::send_all(peers_[r], message.data(), message.size(), soon, what);
      } catch (const std::exception&) {
        // That rank is gone or stuck as well; it learns from the closed connection.
      }
    }
    throw;
  }
  const ResponseHeader ok{1, 0};
  for (int r = 1; r < world_; ++r) {
    const std::string to = what + ": sending the result to rank " + std::to_string(r);
    tcp::send_all(peers_[r], &ok, sizeof(ok), deadline, to);
    tcp::send_all(peers_[r], out, request.out_bytes(world_), deadline, to);
  }
}

}  // namespace ds::worker
