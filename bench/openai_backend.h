// OpenAI-compatible /v1/completions over HTTP/1.1 with SSE streaming (deltaserve, SGLang, vLLM),
// on Beast: one connection per request, every socket driven by the caller's io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>

#include "bench/backend.h"

namespace ds::bench {

class OpenAiBackend : public Backend {
 public:
  // Resolves the host and, without options.model, asks GET /v1/models for the served model.
  // Throws std::runtime_error naming host:port when the server cannot be reached.
  OpenAiBackend(boost::asio::io_context& io, BackendOptions options);

  void send(const RequestSpec& spec, RequestRecord& record, const Timeline& timeline, std::function<void()> done) override;
  const std::string& model() const { return options_.model; }

 private:
  boost::asio::io_context& io_;
  BackendOptions options_;
  boost::asio::ip::tcp::resolver::results_type endpoints_;
};

// GET `target` on host:port, blocking (set-up only); returns {status, body}. Throws on I/O errors.
std::pair<int, std::string> http_get(const std::string& host, int port, const std::string& target);

}  // namespace ds::bench
