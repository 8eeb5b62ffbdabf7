#include "server/grpc/generation_service.h"

#include <spdlog/spdlog.h>

#include <limits>
#include <mutex>

namespace ds::server {

namespace {

constexpr int kDefaultMaxTokens = 16;

grpc::Status status_of(const ApiError& e) {
  switch (e.http_status) {
    case 401: return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, e.what());
    case 404: return grpc::Status(grpc::StatusCode::NOT_FOUND, e.what());
    case 413: return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, e.what());
    case 503: return grpc::Status(grpc::StatusCode::UNAVAILABLE, e.what());
    default: return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
  }
}

bool call_authorized(const ApiContext& context, grpc::CallbackServerContext* call) {
  if (context.api_key.empty()) return true;
  const auto& metadata = call->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return false;
  return authorized(context, std::string_view(it->second.data(), it->second.size()));
}

const grpc::Status kUnauthenticated(grpc::StatusCode::UNAUTHENTICATED, "a valid API key is required (metadata authorization: Bearer <key>)");

api::FinishReason to_proto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return api::FINISH_REASON_STOP;
    case FinishReason::kLength: return api::FINISH_REASON_LENGTH;
    case FinishReason::kAbort: return api::FINISH_REASON_ABORT;
    case FinishReason::kError: return api::FINISH_REASON_ERROR;
  }
  return api::FINISH_REASON_UNSPECIFIED;
}

grpc::ServerUnaryReactor* finish_unary(grpc::CallbackServerContext* call, const grpc::Status& status) {
  auto* reactor = call->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// Streams one request. The engine's notification and gRPC's write completions both call pump();
// the reactor lives until OnDone, and `Link` lets a late notification find it gone.
class GenerateReactor final : public grpc::ServerWriteReactor<api::GenerateResponse> {
 public:
  GenerateReactor(ApiContext& context, grpc::CallbackServerContext* call, const api::GenerateRequest& request) : context_(context) {
    if (!call_authorized(context, call)) {
      Finish(kUnauthenticated);
      return;
    }
    try {
      stream_ = submit_or_throw(context_, to_generate_input(request, context_));
    } catch (const ApiError& e) {
      context_.metrics.count_request(Outcome::kRejected);
      Finish(status_of(e));
      return;
    }
    link_ = std::make_shared<Link>();
    link_->reactor = this;
    stream_->set_notify([link = link_] {
      std::lock_guard lock(link->mutex);
      if (link->reactor) link->reactor->pump_locked();
    });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(link_->mutex);
    writing_ = false;
    if (!ok) {
      abort_request("client went away");
      // The last message was the one lost: nothing more will come to pump, so end the call here.
      if (finished_) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    if (finished_) {
      Finish(grpc::Status::OK);
      return;
    }
    pump_locked();
  }

  void OnCancel() override {
    if (!link_) return;  // refused before it started
    std::lock_guard lock(link_->mutex);
    abort_request("client cancelled");
  }

  void OnDone() override {
    if (link_) {
      std::lock_guard lock(link_->mutex);
      link_->reactor = nullptr;
    }
    if (stream_ && !finished_) context_.engine.abort(stream_->seq_id(), "client went away");
    delete this;
  }

 private:
  struct Link {
    std::mutex mutex;
    GenerateReactor* reactor = nullptr;
  };

  void abort_request(const char* why) {
    if (finished_ || cancelled_) return;
    cancelled_ = true;
    context_.engine.abort(stream_->seq_id(), why);
  }

  void pump_locked() {
    if (writing_ || finished_) return;
    OutputDelta delta = stream_->take();
    if (delta.empty()) return;
    response_.Clear();
    response_.set_request_id(stream_->request_id());
    for (int32_t id : delta.token_ids) response_.add_token_ids(static_cast<uint32_t>(id));
    response_.set_text(delta.text);
    for (float lp : delta.logprobs) response_.add_logprobs(lp);
    if (delta.finish) {
      finished_ = true;
      auto* finished = response_.mutable_finished();
      finished->set_reason(to_proto(*delta.finish));
      finished->set_message(delta.finish_message);
      finished->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(delta.prompt_tokens));
      finished->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(delta.completion_tokens));
    }
    if (cancelled_) {
      if (finished_) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    writing_ = true;
    StartWrite(&response_);
  }

  ApiContext& context_;
  std::shared_ptr<RequestStream> stream_;
  std::shared_ptr<Link> link_;
  api::GenerateResponse response_;
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
};

}  // namespace

GenerateInput to_generate_input(const api::GenerateRequest& request, const ApiContext& context) {
  if (!request.model().empty() && request.model() != context.model.id) {
    throw ApiError(404, "The model '" + request.model() + "' does not exist; this server serves '" + context.model.id + "'",
                   "invalid_request_error", "model", "model_not_found");
  }
  GenerateInput in;
  in.request_id = request.request_id();
  switch (request.input_case()) {
    case api::GenerateRequest::kText:
      try {
        in.prompt = context.tokenizer.encode(request.text(), true);
      } catch (const std::invalid_argument& e) {
        throw ApiError(400, std::string("text: ") + e.what());
      }
      break;
    case api::GenerateRequest::kTokenIds:
      for (uint32_t id : request.token_ids().ids()) {
        if (id >= static_cast<uint32_t>(context.model.vocab_size)) {
          throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(context.model.vocab_size) + ")");
        }
        in.prompt.push_back(static_cast<int32_t>(id));
      }
      break;
    default: throw ApiError(400, "the request needs text or token_ids");
  }
  if (in.prompt.empty()) throw ApiError(400, "the prompt is empty");
  const auto& s = request.sampling();
  if (s.has_temperature() && !(s.temperature() >= 0.f && s.temperature() <= 100.f)) throw ApiError(400, "temperature must be in [0, 100]");
  if (s.has_top_p() && !(s.top_p() > 0.f && s.top_p() <= 1.f)) throw ApiError(400, "top_p must be in (0, 1]");
  if (s.has_min_p() && !(s.min_p() >= 0.f && s.min_p() < 1.f)) throw ApiError(400, "min_p must be in [0, 1)");
  in.sampling.temperature = s.has_temperature() ? s.temperature() : 1.f;
  in.sampling.top_p = s.has_top_p() ? s.top_p() : 1.f;
  in.sampling.top_k = s.has_top_k() && s.top_k() > 0 ? s.top_k() : 0;
  in.sampling.min_p = s.has_min_p() ? s.min_p() : 0.f;
  in.sampling.seed = s.has_seed() ? s.seed() : 0;
  in.sampling.logprobs = s.logprobs();
  for (const auto& stop : s.stop()) {
    if (stop.empty()) throw ApiError(400, "stop strings must not be empty");
    in.stop_strings.push_back(stop);
  }
  for (uint32_t id : s.stop_token_ids()) in.stop.stop_token_ids.push_back(static_cast<int32_t>(id));
  in.stop.ignore_eos = s.ignore_eos();
  in.skip_special_tokens = s.skip_special_tokens();
  if (s.has_max_tokens()) {
    if (s.max_tokens() < 1) throw ApiError(400, "max_tokens must be at least 1");
    check_context_length(context, in.prompt.size(), static_cast<int>(std::min<uint32_t>(s.max_tokens(), INT32_MAX)), "text");
    in.stop.max_tokens = static_cast<int>(s.max_tokens());
  } else {
    check_context_length(context, in.prompt.size(), 1, "text");
    in.stop.max_tokens = std::min(kDefaultMaxTokens, context.model.max_context_len - static_cast<int>(in.prompt.size()));
  }
  return in;
}

grpc::ServerWriteReactor<api::GenerateResponse>* GenerationService::Generate(grpc::CallbackServerContext* call,
                                                                            const api::GenerateRequest* request) {
  return new GenerateReactor(context_, call, *request);
}

grpc::ServerUnaryReactor* GenerationService::Abort(grpc::CallbackServerContext* call, const api::AbortRequest* request,
                                                   api::AbortResponse* response) {
  if (!call_authorized(context_, call)) return finish_unary(call, kUnauthenticated);
  response->set_found(context_.engine.abort(request->request_id(), "aborted by the client"));
  return finish_unary(call, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::Health(grpc::CallbackServerContext* call, const api::HealthRequest*,
                                                    api::HealthResponse* response) {
  response->set_healthy(context_.engine.healthy());
  response->set_message(context_.engine.health_message());
  return finish_unary(call, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* call, const api::GetModelInfoRequest*,
                                                          api::ModelInfo* response) {
  if (!call_authorized(context_, call)) return finish_unary(call, kUnauthenticated);
  response->set_model_id(context_.model.id);
  response->set_model_type(context_.model.model_type);
  response->set_max_context_length(static_cast<uint32_t>(context_.model.max_context_len));
  response->set_vocab_size(static_cast<uint32_t>(context_.model.vocab_size));
  for (int32_t id : context_.model.eos_token_ids) response->add_eos_token_ids(static_cast<uint32_t>(id));
  return finish_unary(call, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::GetServerInfo(grpc::CallbackServerContext* call, const api::GetServerInfoRequest*,
                                                           api::ServerInfo* response) {
  if (!call_authorized(context_, call)) return finish_unary(call, kUnauthenticated);
  const auto& f = context_.server;
  GaugeSnapshot g = context_.engine.gauges();
  response->set_version(f.version);
  response->set_tensor_parallel_size(static_cast<uint32_t>(f.tensor_parallel_size));
  response->set_max_running_requests(static_cast<uint32_t>(f.max_running_requests));
  response->set_max_num_batched_tokens(static_cast<uint32_t>(f.max_num_batched_tokens));
  response->set_kv_pages_total(static_cast<uint32_t>(f.kv_pages_total));
  response->set_kv_page_size(static_cast<uint32_t>(f.kv_page_size));
  response->set_gdn_slots_total(static_cast<uint32_t>(f.gdn_slots_total));
  response->set_running_requests(static_cast<uint32_t>(g.running_requests));
  response->set_waiting_requests(static_cast<uint32_t>(g.waiting_requests));
  return finish_unary(call, grpc::Status::OK);
}

GrpcServer::GrpcServer(ApiContext& context, const std::string& host, int port)
    : service_(context), address_(host + ":" + std::to_string(port)) {}

GrpcServer::~GrpcServer() { stop(); }

void GrpcServer::start() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address_, grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("cannot listen for gRPC on " + address_);
  spdlog::info("gRPC API listening on {} (port {})", address_, port_);
}

void GrpcServer::stop() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_.reset();
}

}  // namespace ds::server
