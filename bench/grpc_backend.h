// deltaserve's gRPC API (deltaserve.v1.Generation/Generate, server streaming) on the gRPC
// callback API: each request is a reactor, gRPC's own threads deliver its messages.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "bench/backend.h"
#include "proto/deltaserve.grpc.pb.h"

namespace ds::bench {

class GrpcBackend : public Backend {
 public:
  // Connects and asks GetModelInfo (which fails with a clear message when the server is absent).
  explicit GrpcBackend(BackendOptions options);

  void send(const RequestSpec& spec, RequestRecord& record, const Timeline& timeline, std::function<void()> done) override;
  const deltaserve::v1::ModelInfo& model_info() const { return model_info_; }

 private:
  BackendOptions options_;
  // Several HTTP/2 connections, so thousands of streams are not bound by one connection's limit.
  std::vector<std::unique_ptr<deltaserve::v1::Generation::Stub>> stubs_;
  std::atomic<size_t> next_stub_{0};
  deltaserve::v1::ModelInfo model_info_;
};

}  // namespace ds::bench
