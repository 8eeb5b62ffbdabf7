#include "server/http/http_server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include "server/http/http_session.h"

namespace ds::server {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct HttpServer::Impl {
  Impl(ApiContext& context, HttpOptions options) : context(context), options(std::move(options)), acceptor(io) {}

  void accept() {
    acceptor.async_accept(net::make_strand(io), [this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) {
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        start_http_session(std::move(socket), context, options);
      } else {
        spdlog::warn("http accept: {}", ec.message());
      }
      accept();
    });
  }

  ApiContext& context;
  HttpOptions options;
  net::io_context io;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
};

HttpServer::HttpServer(ApiContext& context, HttpOptions options) : impl_(std::make_unique<Impl>(context, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  const auto& o = impl_->options;
  boost::system::error_code ec;
  auto address = net::ip::make_address(o.host, ec);
  if (ec) throw std::runtime_error("--host " + o.host + " is not an IP address: " + ec.message());
  tcp::endpoint endpoint(address, static_cast<unsigned short>(o.port));
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen for HTTP on " + o.host + ":" + std::to_string(o.port) + ": " + ec.message());
  port_ = acceptor.local_endpoint().port();
  impl_->accept();
  for (int i = 0; i < std::max(1, o.threads); ++i) impl_->threads.emplace_back([this] { impl_->io.run(); });
  spdlog::info("HTTP API listening on {}:{}", o.host, port_);
}

void HttpServer::stop_accepting() {
  net::post(impl_->io, [impl = impl_.get()] {
    boost::system::error_code ec;
    impl->acceptor.close(ec);
  });
}

void HttpServer::stop() {
  if (!impl_) return;
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace ds::server
