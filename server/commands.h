// `deltaserve serve`: the front end (HTTP + gRPC APIs, scheduler, worker supervision).
#pragma once

namespace CLI {
class App;
}

namespace ds::server {

void add_serve_command(CLI::App& app);

}  // namespace ds::server
