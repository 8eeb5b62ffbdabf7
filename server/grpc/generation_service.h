// The public gRPC API (proto/deltaserve.proto) on the callback API: Generate streams each
// request's output as its RequestStream notifies, without a thread per call; Abort, Health,
// GetModelInfo and GetServerInfo answer at once. With --api-key, every call needs the metadata
// "authorization: Bearer <key>" (else UNAUTHENTICATED).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "proto/deltaserve.grpc.pb.h"
#include "server/api/api_context.h"

namespace ds::server {

namespace api = ::deltaserve::v1;

class GenerationService final : public api::Generation::CallbackService {
 public:
  explicit GenerationService(ApiContext& context) : context_(context) {}

  grpc::ServerWriteReactor<api::GenerateResponse>* Generate(grpc::CallbackServerContext* call,
                                                           const api::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* call, const api::AbortRequest* request,
                                  api::AbortResponse* response) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* call, const api::HealthRequest* request,
                                   api::HealthResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* call, const api::GetModelInfoRequest* request,
                                         api::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* call, const api::GetServerInfoRequest* request,
                                          api::ServerInfo* response) override;

 private:
  ApiContext& context_;
};

// Owns the gRPC server that hosts GenerationService.
class GrpcServer {
 public:
  GrpcServer(ApiContext& context, const std::string& host, int port);
  ~GrpcServer();
  // Throws std::runtime_error naming the address when it cannot listen.
  void start();
  void stop();
  int port() const { return port_; }

 private:
  GenerationService service_;
  std::string address_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// GenerateRequest → engine input; throws ApiError (bad input, unknown model).
GenerateInput to_generate_input(const api::GenerateRequest& request, const ApiContext& context);

}  // namespace ds::server
