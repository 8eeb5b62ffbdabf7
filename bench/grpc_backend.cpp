#include "bench/grpc_backend.h"

#include <grpcpp/grpcpp.h>

#include <stdexcept>

namespace ds::bench {
namespace {

namespace v1 = deltaserve::v1;

constexpr int kConnections = 4;
constexpr auto kSetupDeadline = std::chrono::seconds(10);

std::string status_reason(const grpc::Status& s) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int code = int(s.error_code());
  std::string name = code >= 0 && code < int(std::size(kNames)) ? kNames[code] : std::to_string(code);
  return "gRPC " + name + ": " + s.error_message();
}

std::string finish_reason_name(v1::FinishReason r) { return v1::FinishReason_Name(r); }

v1::GenerateRequest generate_request(const RequestSpec& spec, const BackendOptions& options) {
  v1::GenerateRequest req;
  req.set_request_id("bench-" + std::to_string(spec.index));
  if (auto* text = std::get_if<std::string>(&spec.prompt)) {
    req.set_text(*text);
  } else {
    const auto& ids = std::get<std::vector<uint32_t>>(spec.prompt);
    req.mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
  }
  auto* sampling = req.mutable_sampling();
  sampling->set_temperature(0);
  sampling->set_max_tokens(uint32_t(spec.output_len));
  sampling->set_ignore_eos(options.ignore_eos);
  if (!options.model.empty()) req.set_model(options.model);
  return req;
}

// One Generate stream. Messages arrive one at a time (gRPC never overlaps OnReadDone calls of one
// reactor), so the record needs no lock; `done` hands it over at the end.
class GenerateCall : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(v1::Generation::Stub& stub, v1::GenerateRequest request, double timeout_s, RequestRecord& record,
               const Timeline& timeline, std::function<void()> done)
      : request_(std::move(request)), record_(record), timeline_(timeline), done_(std::move(done)) {
    if (timeout_s > 0)
      context_.set_deadline(std::chrono::system_clock::now() +
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(timeout_s)));
    stub.async()->Generate(&context_, &request_, this);
  }

  void start() {
    record_.send_time = timeline_.now();
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows with the status
    double time = timeline_.now();
    if (response_.token_ids_size() > 0) record_.chunks.push_back({time, response_.token_ids_size()});
    if (response_.has_finished()) on_finished(response_.finished());
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    if (!status.ok()) {
      fail(status_reason(status));
    } else if (!finished_) {
      fail("stream ended without a finished message");
    }
    auto done = std::move(done_);
    delete this;
    done();
  }

 private:
  void on_finished(const v1::Finished& f) {
    finished_ = true;
    record_.usage_prompt_tokens = int(f.usage().prompt_tokens());
    record_.usage_completion_tokens = int(f.usage().completion_tokens());
    if (f.reason() == v1::FINISH_REASON_ERROR || f.reason() == v1::FINISH_REASON_ABORT) {
      fail(finish_reason_name(f.reason()) + (f.message().empty() ? "" : ": " + f.message()));
    } else if (record_.chunks.empty()) {
      fail("stream completed without any token");
    } else {
      record_.success = true;
    }
  }

  void fail(std::string reason) {
    record_.success = false;
    record_.error = std::move(reason);
  }

  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  RequestRecord& record_;
  const Timeline& timeline_;
  std::function<void()> done_;
  bool finished_ = false;
};

}  // namespace

GrpcBackend::GrpcBackend(BackendOptions options) : options_(std::move(options)) {
  std::string target = options_.host + ":" + std::to_string(options_.port);
  for (int i = 0; i < kConnections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own per channel
    args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    stubs_.push_back(v1::Generation::NewStub(channel));
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kSetupDeadline);
  grpc::Status status = stubs_[0]->GetModelInfo(&context, v1::GetModelInfoRequest{}, &model_info_);
  if (!status.ok()) throw std::runtime_error("GetModelInfo on " + target + " failed: " + status_reason(status));
}

void GrpcBackend::send(const RequestSpec& spec, RequestRecord& record, const Timeline& timeline,
                       std::function<void()> done) {
  auto& stub = *stubs_[next_stub_++ % stubs_.size()];
  auto* call = new GenerateCall(stub, generate_request(spec, options_), options_.request_timeout_s, record, timeline, std::move(done));
  call->start();  // the call deletes itself in OnDone
}

}  // namespace ds::bench
