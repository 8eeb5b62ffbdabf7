// One HTTP connection: reads requests (keep-alive), routes them, and streams generation output.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include "server/api/api_context.h"
#include "server/http/http_server.h"

namespace ds::server {

// Starts serving the accepted socket; the session keeps itself alive until the connection ends.
void start_http_session(boost::asio::ip::tcp::socket socket, ApiContext& context, const HttpOptions& options);

}  // namespace ds::server
