#include "server/http/http_session.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>

#include "server/api/openai.h"

namespace ds::server {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr auto kIdleTimeout = std::chrono::seconds(300);

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ApiContext& context, const HttpOptions& options)
      : stream_(std::move(socket)), context_(context), options_(options) {}

  ~Session() {
    if (generation_ && !generation_done_) context_.engine.abort(generation_->seq_id(), "client disconnected");
  }

  void run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

 private:
  // ---- reading ----
  void read_request() {
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(kIdleTimeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      context_.metrics.count_request(Outcome::kRejected);
      send_error(ApiError(413, "the request body exceeds the limit of " + std::to_string(options_.max_body_bytes) + " bytes",
                          "invalid_request_error", "", "request_too_large"));
      return;
    }
    if (ec) return close();  // end of stream, timeout or a malformed request line
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    handle();
  }

  // ---- routing ----
  void handle() {
    std::string_view target(request_.target().data(), request_.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    bool generation = path == "/v1/completions" || path == "/v1/chat/completions" || path == "/generate";
    try {
      if (path == "/health") return require_method(http::verb::get), health();
      auto auth = request_.find(http::field::authorization);
      if (!authorized(context_, auth == request_.end() ? std::string_view() : std::string_view(auth->value().data(), auth->value().size()))) {
        throw ApiError(401, "a valid API key is required (Authorization: Bearer <key>)", "invalid_request_error", "",
                       "invalid_api_key");
      }
      if (path == "/metrics") return require_method(http::verb::get), metrics();
      if (path == "/v1/models") return require_method(http::verb::get), models();
      if (generation) {
        require_method(http::verb::post);
        ApiKind kind = path == "/v1/completions" ? ApiKind::kCompletion : path == "/v1/chat/completions" ? ApiKind::kChat : ApiKind::kNative;
        return start_generation(parse_generate(kind, request_.body(), context_));
      }
      throw ApiError(404, "no route " + std::string(path), "invalid_request_error", "", "not_found");
    } catch (const ApiError& e) {
      if (generation) context_.metrics.count_request(Outcome::kRejected);
      send_error(e);
    }
  }

  void require_method(http::verb verb) {
    if (request_.method() != verb) {
      throw ApiError(405, "method " + std::string(request_.method_string().data(), request_.method_string().size()) + " is not allowed on " + std::string(request_.target().data(), request_.target().size()),
                     "invalid_request_error", "", "method_not_allowed");
    }
  }

  void health() {
    if (context_.engine.healthy()) return send(200, "application/json", R"({"status":"ok"})");
    nlohmann::json body = {{"status", "unhealthy"}, {"message", context_.engine.health_message()}};
    send(503, "application/json", body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  void metrics() { send(200, "text/plain; version=0.0.4; charset=utf-8", context_.metrics.render(context_.engine.gauges())); }

  void models() {
    nlohmann::json body = {{"object", "list"},
                           {"data",
                            {{{"id", context_.model.id},
                              {"object", "model"},
                              {"created", 0},
                              {"owned_by", "deltaserve"},
                              {"max_model_len", context_.model.max_context_len}}}}};
    send(200, "application/json", body.dump());
  }

  // ---- plain responses ----
  void send_error(const ApiError& e) { send(e.http_status, "application/json", error_json(e)); }

  void send(int status, const char* content_type, std::string body) {
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), request_.version());
    response->set(http::field::server, "deltaserve");
    response->set(http::field::content_type, content_type);
    response->keep_alive(keep_alive_);
    response->body() = std::move(body);
    response->prepare_payload();
    writing_ = true;
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->after_response();
    });
  }

  void after_response() {
    generation_.reset();
    if (closed_) return close();
    if (!keep_alive_) return drain_and_close();
    if (watching_) return;  // the disconnect watch holds the socket's read side; it resumes reading
    read_request();
  }

  // ---- generation ----
  void start_generation(ParsedGenerate parsed) {
    generation_done_ = false;
    streaming_ = parsed.stream;
    generation_ = submit_or_throw(context_, std::move(parsed.input));
    const char* prefix = parsed.kind == ApiKind::kChat ? "chatcmpl-" : parsed.kind == ApiKind::kCompletion ? "cmpl-" : "";
    formatter_.emplace(parsed, context_, prefix + generation_->request_id());
    stream_.expires_never();
    if (streaming_) write_stream_header();
    watch_disconnect();
    std::weak_ptr<Session> weak = weak_from_this();
    generation_->set_notify([weak, executor = stream_.get_executor()] {
      net::post(executor, [weak] {
        if (auto self = weak.lock()) self->on_output();
      });
    });
  }

  // A client that goes away mid-request aborts it; bytes that arrive instead (a pipelined next
  // request) are kept for the next read.
  void watch_disconnect() {
    watching_ = true;
    stream_.socket().async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) {
        if (self->generation_ && !self->generation_done_) {
          self->context_.engine.abort(self->generation_->seq_id(), "client disconnected");
        }
        self->closed_ = true;
        if (!self->writing_) self->close();
        return;
      }
      self->buffer_.commit(n);
      if (!self->generation_ && !self->writing_) self->read_request();  // the response already went out
    });
  }

  void write_stream_header() {
    std::string header = fmt::format(
        "HTTP/1.1 200 OK\r\nServer: deltaserve\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "Connection: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        keep_alive_ ? "keep-alive" : "close");
    write_raw(std::move(header), false);
  }

  void on_output() {
    if (closed_ || !generation_ || writing_ || generation_done_) return;
    OutputDelta delta = generation_->take();
    if (delta.empty()) return;
    if (delta.finish) generation_done_ = true;
    if (!streaming_) {
      formatter_->accumulate(delta);
      if (!generation_done_) return;
      auto [status, body] = formatter_->final_response();
      return send(status, "application/json", std::move(body));
    }
    std::string events = formatter_->sse_events(delta);
    std::string chunked = fmt::format("{:x}\r\n{}\r\n", events.size(), events);
    if (generation_done_) chunked += "0\r\n\r\n";
    write_raw(std::move(chunked), generation_done_);
  }

  void write_raw(std::string data, bool last) {
    writing_ = true;
    auto buffer = std::make_shared<std::string>(std::move(data));
    net::async_write(stream_.socket(), net::buffer(*buffer), [self = shared_from_this(), buffer, last](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec || self->closed_) {
        if (self->generation_ && !self->generation_done_) self->context_.engine.abort(self->generation_->seq_id(), "client disconnected");
        return self->close();
      }
      if (last) return self->after_response();
      self->on_output();
    });
  }

  // Closing a socket with unread input resets the connection, and the client may lose the response
  // (a 413 sent while it is still uploading): send FIN, then read and discard for a while first.
  void drain_and_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(5));
    drain_buffer_.resize(64 * 1024);
    stream_.async_read_some(net::buffer(drain_buffer_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->drain_and_close();
    });
  }

  void close() {
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  ApiContext& context_;
  const HttpOptions& options_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  bool keep_alive_ = true;
  bool writing_ = false;
  bool watching_ = false;
  bool closed_ = false;
  std::shared_ptr<RequestStream> generation_;
  bool generation_done_ = false;
  bool streaming_ = false;
  std::optional<ResponseFormatter> formatter_;
  std::vector<char> drain_buffer_;
};

}  // namespace

void start_http_session(tcp::socket socket, ApiContext& context, const HttpOptions& options) {
  std::make_shared<Session>(std::move(socket), context, options)->run();
}

}  // namespace ds::server
