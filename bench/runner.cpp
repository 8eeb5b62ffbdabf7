#include "bench/runner.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <deque>
#include <optional>
#include <stdexcept>

namespace ds::bench {
namespace {

namespace asio = boost::asio;

// "[#########           ] 45/100 (3 failed) 12.4 s" on stderr, redrawn at most 10 times a second.
class ProgressBar {
 public:
  ProgressBar(int total, bool enabled) : total_(total), enabled_(enabled) {}

  void update(int finished, int failed, double seconds, bool force = false) {
    if (!enabled_ || (!force && seconds - last_draw_ < 0.1)) return;
    last_draw_ = seconds;
    constexpr int kWidth = 40;
    int filled = total_ ? finished * kWidth / total_ : kWidth;
    std::fprintf(stderr, "\r[%s%s] %d/%d", std::string(filled, '#').c_str(), std::string(kWidth - filled, ' ').c_str(),
                 finished, total_);
    if (failed) std::fprintf(stderr, " (%d failed)", failed);
    std::fprintf(stderr, " %.1f s ", seconds);
    if (finished == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  int total_;
  bool enabled_;
  double last_draw_ = -1;
};

class Dispatcher {
 public:
  Dispatcher(asio::io_context& io, Backend& backend, const std::vector<RequestSpec>& specs,
             const std::vector<double>& arrivals, int max_concurrency, bool show_progress)
      : io_(io), backend_(backend), specs_(specs), arrivals_(arrivals), max_concurrency_(max_concurrency),
        timer_(io), guard_(asio::make_work_guard(io)), progress_(int(specs.size()), show_progress) {
    records_.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      records_[i].index = specs[i].index;
      records_[i].prompt_len = specs[i].prompt_len;
      records_[i].requested_output_len = specs[i].output_len;
    }
  }

  RunResult run() {
    io_.restart();
    if (specs_.empty()) return {};
    asio::post(io_, [this] { release_arrived(); });
    io_.run();
    return {std::move(records_), duration_};
  }

 private:
  void release_arrived() {
    double now = timeline_.now();
    while (next_arrival_ < specs_.size() && arrivals_[next_arrival_] <= now) queue_.push_back(next_arrival_++);
    send_queued();
    if (next_arrival_ == specs_.size()) return;
    timer_.expires_at(timeline_.at(arrivals_[next_arrival_]));
    timer_.async_wait([this](boost::system::error_code) { release_arrived(); });
  }

  void send_queued() {
    while (!queue_.empty() && (max_concurrency_ <= 0 || in_flight_ < max_concurrency_)) {
      size_t i = queue_.front();
      queue_.pop_front();
      ++in_flight_;
      backend_.send(specs_[i], records_[i], timeline_, [this, i] { asio::post(io_, [this, i] { on_done(i); }); });
    }
  }

  void on_done(size_t i) {
    --in_flight_;
    ++finished_;
    if (!records_[i].success) ++failed_;
    double now = timeline_.now();
    progress_.update(finished_, failed_, now, finished_ == int(specs_.size()));
    if (finished_ == int(specs_.size())) {
      duration_ = now;
      guard_.reset();
      return;
    }
    send_queued();
  }

  asio::io_context& io_;
  Backend& backend_;
  const std::vector<RequestSpec>& specs_;
  const std::vector<double>& arrivals_;
  int max_concurrency_;
  Timeline timeline_;
  asio::steady_timer timer_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  ProgressBar progress_;
  std::vector<RequestRecord> records_;
  std::deque<size_t> queue_;
  size_t next_arrival_ = 0;
  int in_flight_ = 0;
  int finished_ = 0;
  int failed_ = 0;
  double duration_ = 0;
};

}  // namespace

RunResult run_requests(asio::io_context& io, Backend& backend, const std::vector<RequestSpec>& specs,
                       const std::vector<double>& arrivals, int max_concurrency, bool show_progress) {
  if (arrivals.size() != specs.size())
    throw std::invalid_argument("run_requests: " + std::to_string(arrivals.size()) + " arrival times for " +
                                std::to_string(specs.size()) + " requests");
  Dispatcher dispatcher(io, backend, specs, arrivals, max_concurrency, show_progress);
  return dispatcher.run();
}

}  // namespace ds::bench
