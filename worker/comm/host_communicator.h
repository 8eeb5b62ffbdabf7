// Collectives between CPU ranks that live in separate processes (possibly on separate hosts),
// over TCP. Rank 0 is the hub: every other rank sends it its contribution, rank 0 combines them
// in rank order (sums accumulate in fp32: x0 + x1 + x2 + ...) and sends the one result back, so
// every rank ends with bit-identical data and the result never depends on arrival order.
// Determinism matters more than speed here: this is what runs tensor parallelism in CI.
//
// Failure model: a peer that dies closes its socket, which every waiting rank sees at once; a
// peer that hangs trips the per-collective timeout. Either way the call throws
// std::runtime_error naming the rank and the collective, rank 0 forwards its error to the
// others when it can, and the communicator refuses further calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/comm/tcp.h"
#include "worker/communicator.h"

namespace ds::worker {

struct HostCommOptions {
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(60)};
  // Longest wait inside one collective: covers the compute skew between ranks, not a whole step.
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(10)};
};

// The listening socket a CPU rank opens before it knows its peers, so that its address can go
// into the Hello message (the front end hands every rank the list of all addresses in Init).
class HostCommListener {
 public:
  // Binds host:0 (a free port).
  static HostCommListener open(const std::string& host);

  const std::string& address() const { return address_; }  // "host:port"
  const tcp::Socket& socket() const { return socket_; }

 private:
  tcp::Socket socket_;
  std::string address_;
};

class HostCommunicator final : public Communicator {
 public:
  // Every rank calls this with the same `addresses` (index = rank). Rank 0 accepts the others on
  // `listener`, which must be the one at addresses[0]; the others connect to addresses[0].
  // Returns once the whole group is connected; throws after options.connect_timeout.
  static std::unique_ptr<HostCommunicator> connect(HostCommListener listener, int rank,
                                                   const std::vector<std::string>& addresses,
                                                   HostCommOptions options = {});

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  // `stream` is ignored: host memory, synchronous.
  void all_reduce_sum(void* data, size_t count, CommDType dtype, cudaStream_t stream) override;
  void all_gather(const void* in, void* out, size_t count, CommDType dtype, cudaStream_t stream) override;

  enum class Op : uint32_t { kAllReduceSum = 1, kAllGather = 2 };

 private:
  HostCommunicator(int rank, int world, HostCommOptions options) : rank_(rank), world_(world), options_(options) {}

  struct Request;
  void run(const Request& request);
  void run_hub(const Request& request);
  void run_spoke(const Request& request);
  void check_usable() const;
  std::string describe(const Request& request) const;

  int rank_ = 0;
  int world_ = 1;
  HostCommOptions options_;
  uint64_t sequence_ = 0;      // collectives issued so far: every rank must agree
  std::string broken_;         // the error that ended this communicator, empty while usable
  std::vector<tcp::Socket> peers_;  // rank 0: one per rank (index 0 unused); others: [0] = rank 0
  std::vector<float> scratch_;      // rank 0: one peer's contribution
};

}  // namespace ds::worker
