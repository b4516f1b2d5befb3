// Wall-clock time per phase of the fused layer ops, for the benchmark (python -m actrec.bench
// ddlstm): where a train step's time goes inside the op, which no profiler shows once the
// per-step GEMMs run inside the step's parallel region. Off unless started; when off, a phase
// costs one relaxed atomic load.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace actrec {
namespace phase {

// Per call: kFwdTotal, kXProj, kXStats, kWGrad, kBwdTotal (wall, calling thread).
// Per step: k*Region (wall of the step's parallel region, seen by the calling thread);
// k*Gemm, k*Tiles (the step's recurrent GEMM and its fused element-wise kernel, summed over
// the region's threads); k*Busy (the busiest thread's GEMM + kernel time; Region - Busy is
// the fork/join and waiting); k*GemmOut (recurrent GEMMs run outside the regions, on the
// calling thread: every step's for small layers or without MKL, grad_h0's);
// k*Steps (steps timed); kThreads (most threads in one region).
enum Phase : int {
  kFwdTotal, kXProj, kXStats, kFwdRegion, kFwdGemm, kFwdTiles, kFwdBusy, kFwdSteps,
  kBwdTotal, kBwdRegion, kBwdGemm, kBwdTiles, kBwdBusy, kBwdSteps, kWGrad,
  kFwdGemmOut, kBwdGemmOut, kThreads,
  kCount
};

bool on();
double now_us();
// Adds us to phase p (any thread). No-op when off.
void add(Phase p, double us);

// The per-thread times of one step's parallel region: each task reports its own, the calling
// thread adds them to the phases once the region has ended (no locking inside the region).
class Region {
 public:
  // fwd: the forward's phases, else the backward's; threads: the most the region may use.
  Region(bool fwd, int threads);
  bool on() const { return on_; }
  // From task `tid` (0 .. threads - 1) inside the region.
  void task(int tid, double gemm_us, double tiles_us);
  // Right after the region (calling thread): adds everything.
  void done();

 private:
  bool on_, fwd_;
  double start_ = 0.0;
  std::vector<double> gemm_, tiles_;
};

// Measures from construction to destruction into p (when on at construction).
class Scope {
 public:
  explicit Scope(Phase p) : p_(p), t0_(on() ? now_us() : -1.0) {}
  ~Scope() { end(); }
  // Stops early (once).
  void end() {
    if (t0_ >= 0.0) add(p_, now_us() - t0_);
    t0_ = -1.0;
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Phase p_;
  double t0_;
};

}  // namespace phase
}  // namespace actrec
