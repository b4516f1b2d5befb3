#include "phase_times.h"

#include <torch/library.h>

#include <algorithm>
#include <mutex>

namespace actrec {
namespace phase {
namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;
double g_acc[kCount] = {};

}  // namespace

bool on() { return g_on.load(std::memory_order_relaxed); }

double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

void add(Phase p, double us) {
  if (!on()) return;
  std::lock_guard<std::mutex> g(g_mu);  // a few adds per thread and step: no contention to speak of
  g_acc[p] += us;
}

Region::Region(bool fwd, int threads) : on_(phase::on()), fwd_(fwd) {
  if (!on_) return;
  gemm_.assign(threads, 0.0);
  tiles_.assign(threads, 0.0);
  start_ = now_us();
}

void Region::task(int tid, double gemm_us, double tiles_us) {
  if (!on_ || tid < 0 || tid >= static_cast<int>(gemm_.size())) return;
  gemm_[tid] += gemm_us;
  tiles_[tid] += tiles_us;
}

void Region::done() {
  if (!on_) return;
  const double wall = now_us() - start_;
  double gemm = 0.0, tiles = 0.0, busy = 0.0;
  int used = 0;
  for (size_t i = 0; i < gemm_.size(); ++i) {
    gemm += gemm_[i];
    tiles += tiles_[i];
    busy = std::max(busy, gemm_[i] + tiles_[i]);
    used += (gemm_[i] + tiles_[i]) > 0.0;
  }
  std::lock_guard<std::mutex> g(g_mu);
  if (!g_on.load()) return;
  g_acc[fwd_ ? kFwdRegion : kBwdRegion] += wall;
  g_acc[fwd_ ? kFwdGemm : kBwdGemm] += gemm;
  g_acc[fwd_ ? kFwdTiles : kBwdTiles] += tiles;
  g_acc[fwd_ ? kFwdBusy : kBwdBusy] += busy;
  g_acc[fwd_ ? kFwdSteps : kBwdSteps] += 1.0;
  g_acc[kThreads] = std::max(g_acc[kThreads], static_cast<double>(used));
}

}  // namespace phase
}  // namespace actrec

namespace {

void phase_times_start() {
  using namespace actrec::phase;
  std::lock_guard<std::mutex> g(g_mu);
  for (double& v : g_acc) v = 0.0;
  g_on.store(true);
}

std::vector<double> phase_times_stop() {
  using namespace actrec::phase;
  g_on.store(false);
  std::lock_guard<std::mutex> g(g_mu);
  return std::vector<double>(g_acc, g_acc + kCount);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(actrec, m) {
  // Start: zero the accumulators and time every phase of the fused layer ops from now on.
  m.def("ddlstm_phase_times_start() -> ()", &phase_times_start);
  // Stop timing; the accumulated values in actrec::phase::Phase order (microseconds, counts).
  m.def("ddlstm_phase_times_stop() -> float[]", &phase_times_stop);
}
