#include "bench/openai_backend.h"

// GCC's -Wmaybe-uninitialized misfires on boost::optional inside Beast's parser when it is
// inlined here at -O2 with sanitizers (a known false positive); nothing in this file needs it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <boost/asio/connect.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <stdexcept>

#include "bench/openai_protocol.h"

namespace ds::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr std::uint64_t kMaxBodyBytes = 1ull << 32;  // streams of long outputs exceed Beast's 8 MB default

// One streamed completion: connect, send, read the header, then read the body piece by piece,
// handing each piece to the stream reader with the time it arrived.
class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(asio::io_context& io, http::request<http::string_body> request, double timeout_s, RequestRecord& record,
                 const Timeline& timeline, std::function<void()> done)
      : socket_(io), timer_(io), timeout_s_(timeout_s), request_(std::move(request)), record_(record), reader_(record),
        timeline_(timeline), done_(std::move(done)) {
    parser_.body_limit(kMaxBodyBytes);
  }

  void start(const tcp::resolver::results_type& endpoints) {
    record_.send_time = timeline_.now();
    if (timeout_s_ > 0) {  // closing the socket makes the pending operation fail, which ends the call
      timer_.expires_after(std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::duration<double>(timeout_s_)));
      timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec) return;  // cancelled: the call finished first
        self->timed_out_ = true;
        error_code ignored;
        self->socket_.close(ignored);
      });
    }
    asio::async_connect(socket_, endpoints, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
      if (ec) return self->finish_with("connect: " + ec.message());
      http::async_write(self->socket_, self->request_, [self](error_code ec, size_t) { self->on_written(ec); });
    });
  }

 private:
  void on_written(error_code ec) {
    if (ec) return finish_with("send: " + ec.message());
    http::async_read_header(socket_, buffer_, parser_, [self = shared_from_this()](error_code ec, size_t) {
      self->on_header(ec);
    });
  }

  void on_header(error_code ec) {
    if (ec) return finish_with("response: " + ec.message());
    int status = int(parser_.get().result_int());
    if (status != 200) {  // an error response: read it whole for its message
      http::async_read(socket_, buffer_, parser_, [self = shared_from_this(), status](error_code, size_t) {
        self->finish_with(http_error_reason(status, self->parser_.get().body()));
      });
      return;
    }
    read_body();
  }

  void read_body() {
    consume_body(timeline_.now());  // bytes that came with the header
    if (reader_.state() != CompletionStreamReader::State::kStreaming) return finish();
    if (parser_.is_done()) return finish_at_end_of_body();
    http::async_read_some(socket_, buffer_, parser_, [self = shared_from_this()](error_code ec, size_t) {
      self->on_body(ec);
    });
  }

  void on_body(error_code ec) {
    consume_body(timeline_.now());
    if (reader_.state() != CompletionStreamReader::State::kStreaming) return finish();
    // The server closed the connection, between messages or inside one: the stream was cut.
    if (ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof)
      return finish_at_end_of_body();
    if (ec) return finish_with("stream: " + ec.message());
    read_body();
  }

  void consume_body(double time) {
    auto& body = parser_.get().body();
    if (body.empty()) return;
    reader_.feed(body, time);
    body.clear();  // the parser appends at the body's current end, so drained bytes are not kept
  }

  void finish_at_end_of_body() {
    if (timed_out_) return finish_with("");
    reader_.end_of_body();
    finish();
  }

  void finish_with(std::string reason) {
    record_.success = false;
    record_.error = timed_out_ ? timeout_reason() : std::move(reason);
    finish();
  }

  std::string timeout_reason() const {
    char text[64];
    std::snprintf(text, sizeof text, "timed out after %g s", timeout_s_);
    return text;
  }

  void finish() {
    timer_.cancel();
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    done_();
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  double timeout_s_;
  bool timed_out_ = false;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response_parser<http::string_body> parser_;
  RequestRecord& record_;
  CompletionStreamReader reader_;
  const Timeline& timeline_;
  std::function<void()> done_;
};

std::string host_header(const std::string& host, int port) { return host + ":" + std::to_string(port); }

}  // namespace

std::pair<int, std::string> http_get(const std::string& host, int port, const std::string& target) {
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  stream.connect(resolver.resolve(host, std::to_string(port)));
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, host_header(host, port));
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response);
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return {int(response.result_int()), response.body()};
}

OpenAiBackend::OpenAiBackend(asio::io_context& io, BackendOptions options) : io_(io), options_(std::move(options)) {
  std::string where = options_.host + ":" + std::to_string(options_.port);
  try {
    endpoints_ = tcp::resolver(io_).resolve(options_.host, std::to_string(options_.port));
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot resolve " + where + ": " + e.what());
  }
  if (!options_.model.empty()) return;
  std::pair<int, std::string> models;
  try {
    models = http_get(options_.host, options_.port, "/v1/models");
  } catch (const std::exception& e) {
    throw std::runtime_error("GET http://" + where + "/v1/models failed: " + e.what());
  }
  auto j = nlohmann::json::parse(models.second, nullptr, false);
  if (models.first != 200 || !j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id"))
    throw std::runtime_error("GET http://" + where + "/v1/models gave no model (status " + std::to_string(models.first) +
                             "); pass --model");
  options_.model = j["data"][0]["id"].get<std::string>();
}

void OpenAiBackend::send(const RequestSpec& spec, RequestRecord& record, const Timeline& timeline,
                         std::function<void()> done) {
  http::request<http::string_body> request(http::verb::post, "/v1/completions", 11);
  request.set(http::field::host, host_header(options_.host, options_.port));
  request.set(http::field::content_type, "application/json");
  request.set(http::field::accept, "text/event-stream");
  request.body() = completion_request_body(spec, options_.model, options_.ignore_eos).dump();
  request.prepare_payload();
  auto call = std::make_shared<CompletionCall>(io_, std::move(request), options_.request_timeout_s, record, timeline, std::move(done));
  call->start(endpoints_);
}

}  // namespace ds::bench
