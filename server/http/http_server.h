// The HTTP front door (Boost.Beast over Asio, a few threads): OpenAI-compatible
// /v1/completions and /v1/chat/completions (SSE or JSON), /v1/models, /health, /metrics and the
// native /generate. One session per connection on its own strand; generation output reaches a
// session through its RequestStream's notification, so a slow client only slows itself.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/api/api_context.h"

namespace ds::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  int threads = 4;
  size_t max_body_bytes = 8 << 20;
};

class HttpServer {
 public:
  HttpServer(ApiContext& context, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving; throws std::runtime_error naming the address when it cannot bind.
  void start();
  // No new connections; open ones carry on.
  void stop_accepting();
  // Closes everything and joins the threads.
  void stop();
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace ds::server
