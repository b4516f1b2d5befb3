// CPU kernels of the whole-sequence DDLSTM / BNLSTM layer (schemas in csrc/ddlstm.cpp).
//
// Forward: per chunk of steps, one GEMM for x W_ih^T over the chunk's rows and one read-only
// pass for its per-step DDBN statistics (turned into a per-(t, domain, column) scale and
// shift); then per step one GEMM h_{t-1} W_hh^T and ONE fused parallel region. A task owns a
// tile of kTile hidden units with their four gate columns (i, f, g, o) over all N rows, so the
// DDBN of W_hh h and the batch norm of c_t reduce locally: no cross-thread reduction anywhere
// in the step.
// Backward mirrors it in reverse time; the weight gradients are GEMMs over chunks of steps,
// dL/dw (the contribution weights, from which autograd reaches alpha) comes from per-row
// partials kept per tile and reduced after each step. The weights themselves are inputs
// (actrec.ops.domains makes them); padded rows have weight 0 and enter no statistic.
// See shared/design/ddbn.md (the formulas) and ddlstm-performance-study.md, section 4.

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <tuple>
#include <vector>

// The kernels below are compiled without FP-exception semantics (no code here reads the FP
// status flags) or errno from maths functions (every sqrt here is of var + eps > 0): that lets
// gcc if-convert the clamps of exp_approx, vectorise the gate loops and inline sqrt;
// and short copy loops stay inline instead of becoming memcpy calls (millions per sequence).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "no-math-errno", "no-tree-loop-distribute-patterns")
#endif
#include "ddlstm_math.h"
#include "phase_times.h"
#include "workspace.h"
#include "../common/ddlstm_cell.h"

// at::parallel_for is a header template: with ATen's OpenMP backend it only forks threads in
// translation units compiled with -fopenmp. Without it every step runs on one thread (correct,
// about 1.4x slower per train step on 2 cores).
#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#pragma message("ddlstm_layer_cpu.cpp built without -fopenmp: the fused DDLSTM step runs single-threaded")
#endif

namespace actrec {
namespace ddlstm {
namespace {

constexpr int64_t kTile = 16;  // hidden units per task: 16 floats = one AVX-512 vector per gate

// Kernels are force-inlined into the ISA clones below, so each clone vectorises for its ISA.
#if defined(__GNUC__)
#define ACTREC_INLINE inline __attribute__((always_inline))
#else
#define ACTREC_INLINE inline
#endif

// Statistics accumulate as the DDBN op's do (csrc/cpu/ddbn_cpu.cpp): inner sums in the kernel's
// type over groups of kRows rows (vectorisable), each group's partial sum added into a double
// accumulator, then scaled by 1/S in double; the rounding error stays that of a kRows-term sum.
constexpr int64_t kRows = 16;

// Per-call pointers of one forward step. Statistics pointers address domain slot 0 at step t;
// slot 1 is dstride elements further. Weights are those of step t (RowWeights in ddlstm_math.h).
template <typename T>
struct StepFwd {
  int64_t N, H, n1;
  const T* w0;     // [N] raw contribution weights of domain 0 at step t (0 on padding)
  const T* w1;     // [N] domain 1
  double inv_s0;   // 1 / S_0(t), 0 where no row contributes
  double inv_s1;
  const T* wc;     // [N] BN(c) weights at step t (the 0/1 mask)
  double inv_sc;
  const T* gh;   // [N, 4H] h_{t-1} W_hh^T
  const T* xp;   // [N, 4H] x_t W_ih^T
  const T* sx;   // [2, 4H] x-path scale gamma_x r_x
  const T* shx;  // [2, 4H] x-path shift beta_x - mu_x scale + beta_h + bias
  const T* gamma_h;
  const T* gamma_c;
  const T* beta_c;
  const T* cprev;  // [N, H]
  T* c;            // [N, H]
  T* h;            // [N, H]
  T* mean_h;
  T* var_h;
  int64_t dstride;
  T* mean_c;  // [H] at step t
  T* var_c;
  T eps;
  bool has_next;  // step t + 1 exists (its operands are prefetched during step t)
};

// Prefetching (AheadFwd, Ahead): while a task runs a tile it prefetches into L2, one row at a
// time, the operands of the tile it runs next. Each row of a tile is a few 64-byte lines a whole
// row stride apart, which the hardware prefetchers do not follow, so without this every tile
// starts with cache misses.
//
// The tile a task runs after tile t of its range [b, e): the next tile of this step (*steps = 0),
// else, when the time loop has a next step, its first tile there (*steps = 1: the caller moves
// every operand one step in its own direction); false when there is none. *k: its first column.
inline bool next_tile(int64_t t, int64_t b, int64_t e, bool next_step, int64_t* k, int64_t* steps) {
  if (t + 1 < e) {
    *k = (t + 1) * kTile;
    *steps = 0;
    return true;
  }
  *k = b * kTile;
  *steps = 1;
  return next_step;
}

// The forward operands of the next tile (the next step is t + 1).
template <typename T>
struct AheadFwd {
  const T* xp = nullptr;  // at the tile's first column; nullptr: nothing ahead
  T* c = nullptr;
  T* h = nullptr;
  const T* sx = nullptr;  // [2, 4H] scale / shift of the x path
  const T* shx = nullptr;
  T* stats[2] = {};  // mean_h, var_h (slot stride dstride)
  T* stats_c[2] = {};
  int64_t dstride = 0;
  ACTREC_INLINE void row(int64_t j, int64_t H) const {
    const int64_t G = 4 * H;
    if (j == 0) {
      for (int d = 0; d < 2; ++d) {
        for (int q = 0; q < 4; ++q) {
          __builtin_prefetch(sx + d * G + q * H, 0, 2);
          __builtin_prefetch(shx + d * G + q * H, 0, 2);
          __builtin_prefetch(stats[0] + d * dstride + q * H, 1, 2);
          __builtin_prefetch(stats[1] + d * dstride + q * H, 1, 2);
        }
      }
      __builtin_prefetch(stats_c[0], 1, 2);
      __builtin_prefetch(stats_c[1], 1, 2);
    }
    for (int q = 0; q < 4; ++q) __builtin_prefetch(xp + j * G + q * H, 0, 2);
    __builtin_prefetch(c + j * H, 1, 2);
    __builtin_prefetch(h + j * H, 1, 2);
  }
};

template <typename T>
AheadFwd<T> ahead_of(const StepFwd<T>& a, int64_t t, int64_t b, int64_t e) {
  AheadFwd<T> n;
  const int64_t N = a.N, H = a.H, G = 4 * H;
  int64_t k = 0, step = 0;
  if (!next_tile(t, b, e, a.has_next, &k, &step)) return n;
  n.dstride = a.dstride;
  n.xp = a.xp + step * N * G + k;
  n.c = a.c + step * N * H + k;
  n.h = a.h + step * N * H + k;
  n.sx = a.sx + step * 2 * G + k;
  n.shx = a.shx + step * 2 * G + k;
  n.stats[0] = a.mean_h + step * G + k;
  n.stats[1] = a.var_h + step * G + k;
  n.stats_c[0] = a.mean_c + step * H + k;
  n.stats_c[1] = a.var_c + step * H + k;
  return n;
}

// Weighted mean (mu == nullptr) or centred weighted square sum (about mu) of the J <= kTile
// columns k0.. of the four gate blocks of z [N, 4H], for ND domains; out[d] = sum * inv_s[d],
// rounded to T. Lanes u >= J come out 0.
template <typename T, int ND, bool Full>
ACTREC_INLINE void gate_moments(const T* z, int64_t N, int64_t H, int64_t k0, int64_t J,
                                const T* w0, const T* w1, const double* inv_s,
                                const T (*mu)[4 * kTile], T (*out)[4 * kTile]) {
  constexpr int64_t W = 4 * kTile;
  const int64_t G = 4 * H;
  double acc[2][W] = {};
  if constexpr (Full) {
    // GCC vector operations, one vector per gate block: the partial sums stay in registers
    // (as arrays indexed in loops gcc kept them in stack memory, each row a load-add-store
    // chain per accumulator). Same operations in the same order as the loop below.
    typedef T V __attribute__((vector_size(kTile * sizeof(T))));
    V m[2][4];
    if (mu != nullptr)
      for (int d = 0; d < 2; ++d)
        for (int q = 0; q < 4; ++q) std::memcpy(&m[d][q], mu[d] + q * kTile, sizeof(V));
    for (int64_t jb = 0; jb < N; jb += kRows) {
      V p0[4] = {}, p1[4] = {};
      for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
        const T v0 = w0[j], v1 = ND == 2 ? w1[j] : T(0);
        const T* row = z + j * G + k0;
        for (int q = 0; q < 4; ++q) {
          V r;
          std::memcpy(&r, row + q * H, sizeof(V));
          if (mu == nullptr) {
            p0[q] += v0 * r;
            if (ND == 2) p1[q] += v1 * r;
          } else {
            const V e0 = r - m[0][q];
            p0[q] += v0 * e0 * e0;
            if (ND == 2) {
              const V e1 = r - m[1][q];
              p1[q] += v1 * e1 * e1;
            }
          }
        }
      }
      for (int q = 0; q < 4; ++q)
        for (int64_t u = 0; u < kTile; ++u) {
          acc[0][q * kTile + u] += static_cast<double>(p0[q][u]);
          if (ND == 2) acc[1][q * kTile + u] += static_cast<double>(p1[q][u]);
        }
    }
    for (int d = 0; d < ND; ++d)
      for (int64_t i = 0; i < W; ++i) out[d][i] = static_cast<T>(acc[d][i] * inv_s[d]);
    return;
  }
  for (int64_t jb = 0; jb < N; jb += kRows) {
    T part[2][W] = {};
    for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
      const T v0 = w0[j], v1 = ND == 2 ? w1[j] : T(0);
      const T* row = z + j * G + k0;
      for (int q = 0; q < 4; ++q) {
        const T* r = row + q * H;
        T* s0 = part[0] + q * kTile;
        T* s1 = part[1] + q * kTile;
        for (int64_t u = 0; u < J; ++u) {
          if (mu == nullptr) {
            s0[u] += v0 * r[u];
            if (ND == 2) s1[u] += v1 * r[u];
          } else {
            const T e0 = r[u] - mu[0][q * kTile + u];
            s0[u] += v0 * e0 * e0;
            if (ND == 2) {
              const T e1 = r[u] - mu[1][q * kTile + u];
              s1[u] += v1 * e1 * e1;
            }
          }
        }
      }
    }
    for (int d = 0; d < ND; ++d)
      for (int64_t i = 0; i < W; ++i) acc[d][i] += static_cast<double>(part[d][i]);
  }
  for (int d = 0; d < ND; ++d)
    for (int64_t i = 0; i < W; ++i) out[d][i] = static_cast<T>(acc[d][i] * inv_s[d]);
}

// Full: the tile has all kTile columns (H a multiple of kTile, the usual case). Its column loops
// then have a compile-time trip count, so gcc keeps the per-column arrays in vector registers
// instead of stack memory; partial tiles keep the runtime count.
template <typename T, int ND, bool Full>
ACTREC_INLINE void fwd_tile(const StepFwd<T>& a, int64_t k0, int64_t Jin, const AheadFwd<T>& ahead) {
  const int64_t J = Full ? kTile : Jin;
  const int64_t N = a.N, H = a.H, G = 4 * H;
  constexpr int64_t W = 4 * kTile;
  const double inv_s[2] = {a.inv_s0, a.inv_s1};
  T m[2][W] = {}, v[2][W] = {};  // DDBN_h statistics per domain (two-pass)
  gate_moments<T, ND, Full>(a.gh, N, H, k0, J, a.w0, a.w1, inv_s, nullptr, m);
  gate_moments<T, ND, Full>(a.gh, N, H, k0, J, a.w0, a.w1, inv_s, m, v);
  T ah[2][W], bh[2][W];  // DDBN_h as gh * ah + bh (beta_h is folded in shx)
  for (int q = 0; q < 4; ++q) {
    for (int64_t u = 0; u < J; ++u) {
      const int64_t c = q * H + k0 + u, i = q * kTile + u;
      for (int d = 0; d < 2; ++d) {
        const int s = ND == 2 ? d : 0;
        const T r = T(1) / sqrt_(v[s][i] + a.eps);
        ah[d][i] = a.gamma_h[c] * r;
        bh[d][i] = -m[s][i] * ah[d][i];
        a.mean_h[d * a.dstride + c] = m[s][i];
        a.var_h[d * a.dstride + c] = v[s][i];
      }
    }
  }
  double csum[kTile] = {};
  T pre[4 * kTile] = {};  // one row's pre-activations, then activations
  for (int64_t jb = 0; jb < N; jb += kRows) {  // gates, c_t; o parked in h until BN(c) is known
    T cpart[kTile] = {};
    for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      if (ahead.xp != nullptr) ahead.row(j, H);
      if (a.has_next) {  // this tile's columns of step t + 1's GEMM output, which this task writes
        for (int q = 0; q < 4; ++q) __builtin_prefetch(a.gh + N * G + j * G + q * H + k0, 1, 2);
      }
      const T* g = a.gh + j * G + k0;
      const T* x = a.xp + j * G + k0;
      const T* sx = a.sx + dom * G + k0;
      const T* sh = a.shx + dom * G + k0;
      for (int q = 0; q < 4; ++q) {
        const T* A = ah[dom] + q * kTile;
        const T* B = bh[dom] + q * kTile;
        T* pq = pre + q * kTile;
        for (int64_t u = 0; u < J; ++u)
          pq[u] = g[q * H + u] * A[u] + B[u] + x[q * H + u] * sx[q * H + u] + sh[q * H + u];
      }
      sigmoid_n<2 * kTile>(pre);             // i, f
      tanh_n<kTile>(pre + 2 * kTile);        // g
      sigmoid_n<kTile>(pre + 3 * kTile);     // o
      const T* cp = a.cprev + j * H + k0;
      T* cc = a.c + j * H + k0;
      T* hh = a.h + j * H + k0;
      const T wj = a.wc[j];
#pragma GCC ivdep  // c_t, h_t and c_{t-1} never overlap: no runtime overlap checks per row
      for (int64_t u = 0; u < J; ++u) {
        const T cv = cell::cell_state(pre[u], pre[kTile + u], pre[2 * kTile + u], cp[u]);
        cc[u] = cv;
        hh[u] = pre[3 * kTile + u];
        cpart[u] += wj * cv;
      }
    }
    for (int64_t u = 0; u < J; ++u) csum[u] += static_cast<double>(cpart[u]);
  }
  T mc[kTile] = {};
  double cvar[kTile] = {};
  for (int64_t u = 0; u < J; ++u) mc[u] = static_cast<T>(csum[u] * a.inv_sc);
  for (int64_t jb = 0; jb < N; jb += kRows) {
    T vpart[kTile] = {};
    if (Full) {
      // In GCC vector operations: written as loops over the lanes, these sums were vectorised
      // across rows instead, each lane's values gathered one float at a time (a tenth of the
      // forward kernel's time).
      typedef T V __attribute__((vector_size(kTile * sizeof(T))));
      V mv, acc = {};
      std::memcpy(&mv, mc, sizeof(mv));
      for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
        V cv;
        std::memcpy(&cv, a.c + j * H + k0, sizeof(cv));
        const V e = cv - mv;
        acc += a.wc[j] * e * e;
      }
      std::memcpy(vpart, &acc, sizeof(acc));
    } else {
      for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
        const T* cc = a.c + j * H + k0;
        const T wj = a.wc[j];
        for (int64_t u = 0; u < J; ++u) {
          const T e = cc[u] - mc[u];
          vpart[u] += wj * e * e;
        }
      }
    }
    for (int64_t u = 0; u < J; ++u) cvar[u] += static_cast<double>(vpart[u]);
  }
  T sc[kTile], sb[kTile];  // BN(c) as c * sc + sb
  for (int64_t u = 0; u < J; ++u) {
    const T var = static_cast<T>(cvar[u] * a.inv_sc);
    a.mean_c[k0 + u] = mc[u];
    a.var_c[k0 + u] = var;
    sc[u] = a.gamma_c[k0 + u] / sqrt_(var + a.eps);
    sb[u] = a.beta_c[k0 + u] - mc[u] * sc[u];
  }
  for (int64_t j = 0; j < N; ++j) {
    const T* cc = a.c + j * H + k0;
    T* hh = a.h + j * H + k0;
    for (int64_t u = 0; u < J; ++u) pre[u] = cc[u] * sc[u] + sb[u];
    tanh_n<kTile>(pre);
    if constexpr (Full) {  // as a loop gcc multiplied lane by lane in scalar code
      typedef T V __attribute__((vector_size(kTile * sizeof(T))));
      V o, th;
      std::memcpy(&o, hh, sizeof(V));
      std::memcpy(&th, pre, sizeof(V));
      o *= th;
      std::memcpy(hh, &o, sizeof(V));
    } else {
      for (int64_t u = 0; u < J; ++u) hh[u] *= pre[u];
    }
  }
}

// Per-step DDBN statistics of x W_ih^T for one step t (raw weights w0, w1 and 1/S of step t),
// folded into scale/shift [2, 4H].
template <typename T, int ND>
ACTREC_INLINE void x_stats_step(const T* xp, int64_t N, int64_t G, const T* w0, const T* w1,
                                const double* inv_s, T eps, const T* gamma_x, const T* beta_x,
                                const T* beta_h, const T* bias, T* mean, T* var, int64_t dstride,
                                T* sx, T* shx, double* work /*[4G]*/, T* part /*[2G]*/) {
  double* m0 = work;
  double* m1 = work + G;
  double* v0 = work + 2 * G;
  double* v1 = work + 3 * G;
  std::fill(work, work + 4 * G, 0.0);
  T* p0 = part;
  T* p1 = part + G;
  for (int pass = 0; pass < 2; ++pass) {  // 0: weighted sums, 1: centred squares (two-pass)
    double* a0 = pass == 0 ? m0 : v0;
    double* a1 = pass == 0 ? m1 : v1;
    for (int64_t jb = 0; jb < N; jb += kRows) {
      std::fill(part, part + 2 * G, T(0));
      for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
        const T u0 = w0[j], u1 = ND == 2 ? w1[j] : T(0);
        const T* r = xp + j * G;
        if (pass == 0) {
          for (int64_t c = 0; c < G; ++c) {
            p0[c] += u0 * r[c];
            if (ND == 2) p1[c] += u1 * r[c];
          }
        } else {
          for (int64_t c = 0; c < G; ++c) {
            const T e0 = r[c] - sx[c];  // sx, sx + G hold the rounded means during pass 1
            p0[c] += u0 * e0 * e0;
            if (ND == 2) {
              const T e1 = r[c] - sx[G + c];
              p1[c] += u1 * e1 * e1;
            }
          }
        }
      }
      for (int64_t c = 0; c < G; ++c) {
        a0[c] += static_cast<double>(p0[c]);
        if (ND == 2) a1[c] += static_cast<double>(p1[c]);
      }
    }
    for (int d = 0; d < ND; ++d) {
      double* ad = d == 0 ? a0 : a1;
      for (int64_t c = 0; c < G; ++c) ad[c] = static_cast<double>(static_cast<T>(ad[c] * inv_s[d]));
    }
    if (pass == 0) {
      for (int64_t c = 0; c < G; ++c) {
        sx[c] = static_cast<T>(m0[c]);
        sx[G + c] = static_cast<T>(ND == 2 ? m1[c] : m0[c]);
      }
    }
  }
  for (int d = 0; d < 2; ++d) {
    const double* md = (ND == 2 && d == 1) ? m1 : m0;
    const double* vd = (ND == 2 && d == 1) ? v1 : v0;
    for (int64_t c = 0; c < G; ++c) {
      const T mu = static_cast<T>(md[c]), va = static_cast<T>(vd[c]);
      const T s = gamma_x[c] / sqrt_(va + eps);
      mean[d * dstride + c] = mu;
      var[d * dstride + c] = va;
      sx[d * G + c] = s;
      shx[d * G + c] = beta_x[c] - mu * s + beta_h[c] + bias[c];
    }
  }
}

template <typename T>
struct StepBwd {
  int64_t N, H, n1;
  const T* wn0;  // [N] normalised weights w / S of domain 0 at step t (0 on padding)
  const T* wn1;
  const T* wnc;  // [N] normalised BN(c) weights at step t
  const T* gh;  // [N, 4H] step t
  const T* xp;
  const T* mean_h;  // slot 0 at step t; slot 1 at + dstride
  const T* var_h;
  const T* mean_x;
  const T* var_x;
  int64_t dstride;
  const T* mean_c;  // [H] at step t
  const T* var_c;
  const T* gamma_h;
  const T* beta_h;
  const T* gamma_x;
  const T* beta_x;
  const T* bias;
  const T* gamma_c;
  const T* beta_c;
  const T* c;      // [N, H] c_t
  const T* cprev;  // [N, H] c_{t-1}
  const T* gout;   // [N, H] dL/dout_t
  const T* dhrec;  // [N, H] dL/dh_t through the recurrence (or grad_h_n)
  T* dc;           // [N, H] dL/dc_t carried through time, updated to dL/dc_{t-1}
  T* dgh;          // [N, 4H] dL/d(h_{t-1} W_hh^T)
  T* dxp;          // [N, 4H] dL/d(x_t W_ih^T)
  double* acc_gamma_h;  // [4H], each tile owns its columns
  double* acc_gamma_x;
  double* acc_bias;
  double* acc_gamma_c;  // [H]
  double* acc_beta_c;
  T eps;
  bool has_next;        // step t - 1 exists (its operands are prefetched during step t)
  const T* cprev_next;  // [N, H] c_{t-2}, the c_{t-1} of step t - 1 (c0 when that is step 0)
};

// The backward operands of the next tile (the next step is t - 1).
template <typename T>
struct Ahead {
  const T* gh = nullptr;  // at the tile's first column; nullptr: nothing ahead
  const T* xp = nullptr;
  const T* cprev = nullptr;
  const T* gout = nullptr;
  const T* stats[4] = {};  // mean_h, var_h, mean_x, var_x at the tile's first column
  const T* stats_c[2] = {};  // mean_c, var_c
  int64_t dstride = 0;
  ACTREC_INLINE void row(int64_t j, int64_t N, int64_t H) const {
    const int64_t G = 4 * H;
    if (j == 0) {
      for (int k = 0; k < 4; ++k)
        for (int d = 0; d < 2; ++d)
          for (int q = 0; q < 4; ++q) __builtin_prefetch(stats[k] + d * dstride + q * H, 0, 2);
      __builtin_prefetch(stats_c[0], 0, 2);
      __builtin_prefetch(stats_c[1], 0, 2);
    }
    for (int q = 0; q < 4; ++q) {
      __builtin_prefetch(gh + j * G + q * H, 0, 2);
      __builtin_prefetch(xp + j * G + q * H, 0, 2);
    }
    __builtin_prefetch(cprev + j * H, 0, 2);
    __builtin_prefetch(gout + j * H, 0, 2);
    // dgh and dxp are not prefetched: their chunk buffers (chunk_steps) are still in cache.
  }
};

template <typename T>
Ahead<T> ahead_of(const StepBwd<T>& a, int64_t t, int64_t b, int64_t e) {
  Ahead<T> n;
  const int64_t N = a.N, H = a.H, G = 4 * H;
  int64_t k = 0, step = 0;
  if (!next_tile(t, b, e, a.has_next, &k, &step)) return n;
  n.dstride = a.dstride;
  n.gh = a.gh - step * N * G + k;
  n.xp = a.xp - step * N * G + k;
  n.cprev = (step == 0 ? a.cprev : a.cprev_next) + k;
  n.gout = a.gout - step * N * H + k;
  n.stats[0] = a.mean_h - step * G + k;
  n.stats[1] = a.var_h - step * G + k;
  n.stats[2] = a.mean_x - step * G + k;
  n.stats[3] = a.var_x - step * G + k;
  n.stats_c[0] = a.mean_c - step * H + k;
  n.stats_c[1] = a.var_c - step * H + k;
  return n;
}

// The sum of v[0 .. kTile) as a tree over the lanes: v[u] + v[u + 8], then + 4, + 2, + 1.
// Written with GCC vector types, each level one vector add of two halves: as loops gcc kept
// the order but added lane by lane (about 35 instructions per sum, 5 % of the backward).
template <typename T>
ACTREC_INLINE T lane_sum(const T* v) {
  static_assert(kTile == 16, "lane_sum's levels are written for 16 lanes");
  typedef T V16 __attribute__((vector_size(16 * sizeof(T))));
  typedef T V8 __attribute__((vector_size(8 * sizeof(T))));
  typedef T V4 __attribute__((vector_size(4 * sizeof(T))));
  typedef T V2 __attribute__((vector_size(2 * sizeof(T))));
  V16 a;
  std::memcpy(&a, v, sizeof(a));
  const V8 b = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 c = __builtin_shufflevector(b, b, 0, 1, 2, 3) + __builtin_shufflevector(b, b, 4, 5, 6, 7);
  const V2 d = __builtin_shufflevector(c, c, 0, 1) + __builtin_shufflevector(c, c, 2, 3);
  return d[0] + d[1];
}

// One tile of the backward step. act: [N, 4 kTile], da: [N, 4 kTile], dyv: [N, kTile] scratch;
// dw_part: this tile's [2, N] partials of S_d(t) dL/dw_d(t, j) at this step (written, not added).
// Full: as fwd_tile's.
template <typename T, int ND, bool Full>
ACTREC_INLINE void bwd_tile(const StepBwd<T>& a, int64_t k0, int64_t Jin, T* act, T* da, T* dyv,
                     double* dw_part, const Ahead<T>& ahead) {
  const int64_t J = Full ? kTile : Jin;
  const int64_t N = a.N, H = a.H, G = 4 * H;
  constexpr int64_t W = 4 * kTile;
  T muh[2][W], rh[2][W], ah[2][W], mux[2][W], rx[2][W], ax[2][W], b0[2][W];
  for (int q = 0; q < 4; ++q) {
    for (int64_t u = 0; u < J; ++u) {
      const int64_t c = q * H + k0 + u, i = q * kTile + u;
      for (int d = 0; d < ND; ++d) {
        muh[d][i] = a.mean_h[d * a.dstride + c];
        rh[d][i] = T(1) / sqrt_(a.var_h[d * a.dstride + c] + a.eps);
        ah[d][i] = a.gamma_h[c] * rh[d][i];
        mux[d][i] = a.mean_x[d * a.dstride + c];
        rx[d][i] = T(1) / sqrt_(a.var_x[d * a.dstride + c] + a.eps);
        ax[d][i] = a.gamma_x[c] * rx[d][i];
        b0[d][i] = a.beta_h[c] + a.beta_x[c] + a.bias[c] - muh[d][i] * ah[d][i] - mux[d][i] * ax[d][i];
      }
    }
  }
  T mc[kTile] = {}, rc[kTile] = {}, gc[kTile] = {}, bc[kTile] = {};
  for (int64_t u = 0; u < J; ++u) {
    mc[u] = a.mean_c[k0 + u];
    rc[u] = T(1) / sqrt_(a.var_c[k0 + u] + a.eps);
    gc[u] = a.gamma_c[k0 + u];
    bc[u] = a.beta_c[k0 + u];
  }

  // Pass A: recompute the gates; output gate gradient; BN(c) backward reductions (sums over
  // every row: each row's output is normalised with the batch statistics).
  double sdy_d[kTile] = {}, sdych_d[kTile] = {};
  T thv[kTile] = {};
  if (J < kTile) {  // a partial tile: lanes u >= J must stay finite
    for (int64_t j = 0; j < N * W; ++j) act[j] = T(0);
    for (int64_t j = 0; j < N * kTile; ++j) dyv[j] = T(0);
  }
  for (int64_t jb = 0; jb < N; jb += kRows) {
    T sdy[kTile] = {}, sdych[kTile] = {};
    for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      if (ahead.gh != nullptr) ahead.row(j, N, H);
      // The scratch and outputs never overlap the inputs: __restrict__ and GCC ivdep (here and
      // in pass C) spare the runtime overlap checks gcc otherwise emits before every vector
      // loop, scalar code on each row.
      const T* __restrict__ g = a.gh + j * G + k0;
      const T* __restrict__ x = a.xp + j * G + k0;
      const T* __restrict__ cc = a.c + j * H + k0;
      const T* __restrict__ go = a.gout + j * H + k0;
      const T* __restrict__ dr = a.dhrec + j * H + k0;
      T* __restrict__ ac = act + j * W;
      T* __restrict__ dd = da + j * W;
      T* __restrict__ dy = dyv + j * kTile;
      for (int q = 0; q < 4; ++q) {
        const T* A = ah[dom] + q * kTile;
        const T* X = ax[dom] + q * kTile;
        const T* B = b0[dom] + q * kTile;
        const T* __restrict__ gq = g + q * H;
        const T* __restrict__ xq = x + q * H;
        T* __restrict__ aq = ac + q * kTile;
#pragma GCC ivdep  // see above
        for (int64_t u = 0; u < J; ++u) aq[u] = gq[u] * A[u] + xq[u] * X[u] + B[u];
      }
      sigmoid_n<2 * kTile>(ac);
      tanh_n<kTile>(ac + 2 * kTile);
      sigmoid_n<kTile>(ac + 3 * kTile);
#pragma GCC ivdep
      for (int64_t u = 0; u < J; ++u) thv[u] = gc[u] * (cc[u] - mc[u]) * rc[u] + bc[u];
      tanh_n<kTile>(thv);
#pragma GCC ivdep
      for (int64_t u = 0; u < J; ++u) {
        const T o = ac[3 * kTile + u];
        const T ch = (cc[u] - mc[u]) * rc[u];
        const T th = thv[u];
        const T dh = go[u] + dr[u];
        dd[3 * kTile + u] = cell::gate_grad_o(dh, o, th);
        const T dyu = cell::grad_bn_c_out(dh, o, th);
        dy[u] = dyu;
        sdy[u] += dyu;
        sdych[u] += dyu * ch;
      }
    }
    for (int64_t u = 0; u < J; ++u) {
      sdy_d[u] += static_cast<double>(sdy[u]);
      sdych_d[u] += static_cast<double>(sdych[u]);
    }
  }
  T mg[kTile] = {}, mgc[kTile] = {};  // dL/dmu_c = -r mg, dL/dvar_c = -r^2 mgc / 2
  for (int64_t u = 0; u < J; ++u) {
    a.acc_gamma_c[k0 + u] += sdych_d[u];
    a.acc_beta_c[k0 + u] += sdy_d[u];
    mg[u] = gc[u] * static_cast<T>(sdy_d[u]);
    mgc[u] = gc[u] * static_cast<T>(sdych_d[u]);
  }

  // Pass B: dL/dc_t, gate gradients, per-domain DDBN reductions of both paths. A row reaches
  // the BN(c) statistics only with its weight wnc (0 for padding).
  double sg_d[2][W] = {}, sgh_d[2][W] = {}, sgx_d[2][W] = {};
  // dL/dc_t of row j (carried on to dL/dc_{t-1}) and its gate gradients into da.
  auto cell_grads = [&](int64_t j) __attribute__((always_inline)) {
    // Fixed-width loop over local copies (lanes >= J are finite scratch): vectorises cleanly.
    T lc[kTile] = {}, lcp[kTile] = {}, ldc[kTile] = {};
    T* dcj = a.dc + j * H + k0;
    for (int64_t u = 0; u < J; ++u) {
      lc[u] = a.c[j * H + k0 + u];
      lcp[u] = a.cprev[j * H + k0 + u];
      ldc[u] = dcj[u];
    }
    const T wcj = a.wnc[j];
    const T* __restrict__ ac = act + j * W;
    T* __restrict__ dd = da + j * W;
    const T* __restrict__ dy = dyv + j * kTile;
    for (int64_t u = 0; u < kTile; ++u) {
      const T ch = (lc[u] - mc[u]) * rc[u];
      const T dcv = ldc[u] + rc[u] * (gc[u] * dy[u] - wcj * (mg[u] + ch * mgc[u]));
      const T ig = ac[u], fg = ac[kTile + u], gg = ac[2 * kTile + u];
      cell::gate_grads_ifg(dcv, ig, fg, gg, lcp[u], &dd[u], &dd[kTile + u], &dd[2 * kTile + u]);
      ldc[u] = dcv * fg;
    }
    for (int64_t u = 0; u < J; ++u) dcj[u] = ldc[u];
  };
  if constexpr (Full) {
    // The rows of a block split at n1, each part summed for its one domain with that domain as
    // a constant: the partial sums are then GCC vectors in registers (indexed by the row's
    // domain they lived in stack memory, a load-add-store chain per row). The same rows add
    // in the same order as the loop below.
    typedef T V __attribute__((vector_size(kTile * sizeof(T))));
    auto rows = [&](int64_t lo, int64_t hi, auto domain) __attribute__((always_inline)) {
      constexpr int d = decltype(domain)::value;
      V mh[4], mx[4], sg[4] = {}, sgh[4] = {}, sgx[4] = {};
      for (int q = 0; q < 4; ++q) {
        std::memcpy(&mh[q], muh[d] + q * kTile, sizeof(V));
        std::memcpy(&mx[q], mux[d] + q * kTile, sizeof(V));
      }
      for (int64_t j = lo; j < hi; ++j) {
        cell_grads(j);
        const T* g = a.gh + j * G + k0;
        const T* x = a.xp + j * G + k0;
        const T* dd = da + j * W;
        for (int q = 0; q < 4; ++q) {
          V gq, xq, dq;
          std::memcpy(&gq, g + q * H, sizeof(V));
          std::memcpy(&xq, x + q * H, sizeof(V));
          std::memcpy(&dq, dd + q * kTile, sizeof(V));
          sg[q] += dq;
          sgh[q] += dq * (gq - mh[q]);
          sgx[q] += dq * (xq - mx[q]);
        }
      }
      for (int q = 0; q < 4; ++q)
        for (int64_t u = 0; u < kTile; ++u) {
          sg_d[d][q * kTile + u] += static_cast<double>(sg[q][u]);
          sgh_d[d][q * kTile + u] += static_cast<double>(sgh[q][u]);
          sgx_d[d][q * kTile + u] += static_cast<double>(sgx[q][u]);
        }
    };
    for (int64_t jb = 0; jb < N; jb += kRows) {
      const int64_t je = std::min(N, jb + kRows);
      const int64_t split = ND == 2 ? std::clamp(a.n1, jb, je) : je;
      if (jb < split) rows(jb, split, std::integral_constant<int, 0>{});
      if (split < je) rows(split, je, std::integral_constant<int, ND - 1>{});
    }
  } else {
    for (int64_t jb = 0; jb < N; jb += kRows) {
      T sg[2][W] = {}, sgh[2][W] = {}, sgx[2][W] = {};
      for (int64_t j = jb; j < std::min(N, jb + kRows); ++j) {
        const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
        cell_grads(j);
        const T* __restrict__ dd = da + j * W;
        const T* g = a.gh + j * G + k0;
        const T* x = a.xp + j * G + k0;
        for (int q = 0; q < 4; ++q) {
          const T* gq = g + q * H;
          const T* xq = x + q * H;
          const T* dq = dd + q * kTile;
          const T* mh = muh[dom] + q * kTile;
          const T* mx = mux[dom] + q * kTile;
          T* s = sg[dom] + q * kTile;
          T* sh = sgh[dom] + q * kTile;
          T* sx = sgx[dom] + q * kTile;
          for (int64_t u = 0; u < J; ++u) {
            s[u] += dq[u];
            sh[u] += dq[u] * (gq[u] - mh[u]);
            sx[u] += dq[u] * (xq[u] - mx[u]);
          }
        }
      }
      for (int d = 0; d < ND; ++d) {
        for (int64_t i = 0; i < W; ++i) {
          sg_d[d][i] += static_cast<double>(sg[d][i]);
          sgh_d[d][i] += static_cast<double>(sgh[d][i]);
          sgx_d[d][i] += static_cast<double>(sgx[d][i]);
        }
      }
    }
  }

  // Coefficients: dL/dz_k = a_D(k) g_k + sum_d wn_d(k) (K_d + L_d z_k) for z = gh and xp, and
  // S_d dL/dw_d(k) = sum_c P_d (z_k - mu_d) + D_d ((z_k - mu_d)^2 - var_d): P = dL/dmu,
  // D = dL/dvar summed over the rows normalised with domain d.
  T Kh[2][W] = {}, Lh[2][W] = {}, Ph[2][W] = {}, Dh[2][W] = {};
  T Kx[2][W] = {}, Lx[2][W] = {}, Px[2][W] = {}, Dx[2][W] = {};
  double cst[2] = {0.0, 0.0};
  for (int q = 0; q < 4; ++q) {
    for (int64_t u = 0; u < J; ++u) {
      const int64_t c = q * H + k0 + u, i = q * kTile + u;
      double bias_g = 0.0, gam_h = 0.0, gam_x = 0.0;
      for (int d = 0; d < ND; ++d) {
        const T sg = static_cast<T>(sg_d[d][i]);
        const T sgh = static_cast<T>(sgh_d[d][i]);
        const T sgx = static_cast<T>(sgx_d[d][i]);
        bias_g += sg_d[d][i];
        gam_h += sgh_d[d][i] * static_cast<double>(rh[d][i]);
        gam_x += sgx_d[d][i] * static_cast<double>(rx[d][i]);
        const cell::DdbnCoef<T> ch = cell::ddbn_coef(a.gamma_h[c], rh[d][i], muh[d][i], sg, sgh);
        const cell::DdbnCoef<T> cx = cell::ddbn_coef(a.gamma_x[c], rx[d][i], mux[d][i], sg, sgx);
        Ph[d][i] = ch.P; Dh[d][i] = ch.Dv; Lh[d][i] = ch.L; Kh[d][i] = ch.K;
        Px[d][i] = cx.P; Dx[d][i] = cx.Dv; Lx[d][i] = cx.L; Kx[d][i] = cx.K;
        if (ND == 2) {
          cst[d] -= static_cast<double>(Dh[d][i] * a.var_h[d * a.dstride + c]) +
                    static_cast<double>(Dx[d][i] * a.var_x[d * a.dstride + c]);
        }
      }
      a.acc_bias[c] += bias_g;
      a.acc_gamma_h[c] += gam_h;
      a.acc_gamma_x[c] += gam_x;
    }
  }

  // Pass C: input gradients of both DDBNs and the per-row weight partials.
  for (int64_t j = 0; j < N; ++j) {
    const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
    const T w0 = a.wn0[j], w1 = ND == 2 ? a.wn1[j] : T(0);
    const T* __restrict__ g = a.gh + j * G + k0;
    const T* __restrict__ x = a.xp + j * G + k0;
    T* __restrict__ og = a.dgh + j * G + k0;
    T* __restrict__ ox = a.dxp + j * G + k0;
    const T* __restrict__ dd = da + j * W;
    // The weight partials sum over the row's 4 kTile columns: per lane first, then a tree over
    // the lanes; one running scalar would be a chain of 4 kTile dependent adds (gcc may not
    // reorder float sums), the slowest part of the whole step.
    T t0[kTile] = {}, t1[kTile] = {};
    for (int q = 0; q < 4; ++q) {
      const int64_t o = q * kTile;
      const T* __restrict__ gq = g + q * H;
      const T* __restrict__ xq = x + q * H;
      T* __restrict__ ogq = og + q * H;
      T* __restrict__ oxq = ox + q * H;
      const T* __restrict__ dq = dd + o;
      const T* A = ah[dom] + o;
      const T* X = ax[dom] + o;
#pragma GCC ivdep
      for (int64_t u = 0; u < J; ++u) {
        const T hv = gq[u], xv = xq[u], gv = dq[u];
        T dh = A[u] * gv + w0 * (Kh[0][o + u] + Lh[0][o + u] * hv);
        T dx = X[u] * gv + w0 * (Kx[0][o + u] + Lx[0][o + u] * xv);
        if (ND == 2) {
          dh += w1 * (Kh[1][o + u] + Lh[1][o + u] * hv);
          dx += w1 * (Kx[1][o + u] + Lx[1][o + u] * xv);
          const T eh0 = hv - muh[0][o + u], eh1 = hv - muh[1][o + u];
          const T ex0 = xv - mux[0][o + u], ex1 = xv - mux[1][o + u];
          t0[u] += (Ph[0][o + u] + Dh[0][o + u] * eh0) * eh0 + (Px[0][o + u] + Dx[0][o + u] * ex0) * ex0;
          t1[u] += (Ph[1][o + u] + Dh[1][o + u] * eh1) * eh1 + (Px[1][o + u] + Dx[1][o + u] * ex1) * ex1;
        }
        ogq[u] = dh;
        oxq[u] = dx;
      }
    }
    if (ND == 2) {
      dw_part[j] = static_cast<double>(lane_sum(t0)) + cst[0];
      dw_part[N + j] = static_cast<double>(lane_sum(t1)) + cst[1];
    }
  }
}

// Tile loops, compiled for several x86 ISAs (runtime dispatch) for float, where vectorisation
// of the activations matters; double (gradcheck) uses the generic build.
template <typename T, int ND>
ACTREC_INLINE void fwd_tiles(const StepFwd<T>& a, int64_t b, int64_t e) {
  for (int64_t t = b; t < e; ++t) {
    const int64_t k0 = t * kTile;
    const int64_t J = std::min(kTile, a.H - k0);
    if (J == kTile)
      fwd_tile<T, ND, true>(a, k0, J, ahead_of(a, t, b, e));
    else
      fwd_tile<T, ND, false>(a, k0, J, ahead_of(a, t, b, e));
  }
}

template <typename T, int ND>
ACTREC_INLINE void bwd_tiles(const StepBwd<T>& a, int64_t b, int64_t e, T* scratch, double* dw_part) {
  const int64_t per = a.N * 9 * kTile;
  for (int64_t t = b; t < e; ++t) {
    const int64_t k0 = t * kTile;
    T* s = scratch + t * per;
    const int64_t J = std::min(kTile, a.H - k0);
    T* act = s;
    T* da = s + a.N * 4 * kTile;
    T* dyv = s + a.N * 8 * kTile;
    if (J == kTile)
      bwd_tile<T, ND, true>(a, k0, J, act, da, dyv, dw_part + t * 2 * a.N, ahead_of(a, t, b, e));
    else
      bwd_tile<T, ND, false>(a, k0, J, act, da, dyv, dw_part + t * 2 * a.N, ahead_of(a, t, b, e));
  }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(_WIN32)
#define ACTREC_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define ACTREC_CLONES
#endif

ACTREC_CLONES void fwd_tiles_f1(const StepFwd<float>& a, int64_t b, int64_t e) { fwd_tiles<float, 1>(a, b, e); }
ACTREC_CLONES void fwd_tiles_f2(const StepFwd<float>& a, int64_t b, int64_t e) { fwd_tiles<float, 2>(a, b, e); }
ACTREC_CLONES void bwd_tiles_f1(const StepBwd<float>& a, int64_t b, int64_t e, float* s, double* dt) {
  bwd_tiles<float, 1>(a, b, e, s, dt);
}
ACTREC_CLONES void bwd_tiles_f2(const StepBwd<float>& a, int64_t b, int64_t e, float* s, double* dt) {
  bwd_tiles<float, 2>(a, b, e, s, dt);
}
template <typename T>
using XStatsFn = void (*)(const T*, int64_t, int64_t, const T*, const T*, const double*, T,
                          const T*, const T*, const T*, const T*, T*, T*, int64_t, T*, T*,
                          double*, T*);

ACTREC_CLONES void x_stats_f1(const float* xp, int64_t N, int64_t G, const float* w0,
                              const float* w1, const double* inv_s, float eps, const float* gx,
                              const float* bx, const float* bh, const float* bias, float* mean,
                              float* var, int64_t ds, float* sx, float* shx, double* work,
                              float* part) {
  x_stats_step<float, 1>(xp, N, G, w0, w1, inv_s, eps, gx, bx, bh, bias, mean, var, ds, sx, shx,
                         work, part);
}
ACTREC_CLONES void x_stats_f2(const float* xp, int64_t N, int64_t G, const float* w0,
                              const float* w1, const double* inv_s, float eps, const float* gx,
                              const float* bx, const float* bh, const float* bias, float* mean,
                              float* var, int64_t ds, float* sx, float* shx, double* work,
                              float* part) {
  x_stats_step<float, 2>(xp, N, G, w0, w1, inv_s, eps, gx, bx, bh, bias, mean, var, ds, sx, shx,
                         work, part);
}

void run_fwd_tiles(int nd, const StepFwd<float>& a, int64_t b, int64_t e) {
  nd == 2 ? fwd_tiles_f2(a, b, e) : fwd_tiles_f1(a, b, e);
}
void run_fwd_tiles(int nd, const StepFwd<double>& a, int64_t b, int64_t e) {
  nd == 2 ? fwd_tiles<double, 2>(a, b, e) : fwd_tiles<double, 1>(a, b, e);
}
void run_bwd_tiles(int nd, const StepBwd<float>& a, int64_t b, int64_t e, float* s, double* dt) {
  nd == 2 ? bwd_tiles_f2(a, b, e, s, dt) : bwd_tiles_f1(a, b, e, s, dt);
}
void run_bwd_tiles(int nd, const StepBwd<double>& a, int64_t b, int64_t e, double* s, double* dt) {
  nd == 2 ? bwd_tiles<double, 2>(a, b, e, s, dt) : bwd_tiles<double, 1>(a, b, e, s, dt);
}
XStatsFn<float> x_stats_fn(int nd, float) { return nd == 2 ? &x_stats_f2 : &x_stats_f1; }
template <int ND>
void x_stats_d(const double* xp, int64_t N, int64_t G, const double* w0, const double* w1,
               const double* inv_s, double eps, const double* gx, const double* bx,
               const double* bh, const double* bias, double* mean, double* var, int64_t ds,
               double* sx, double* shx, double* work, double* part) {
  x_stats_step<double, ND>(xp, N, G, w0, w1, inv_s, eps, gx, bx, bh, bias, mean, var, ds, sx, shx,
                           work, part);
}
XStatsFn<double> x_stats_fn(int nd, double) { return nd == 2 ? &x_stats_d<2> : &x_stats_d<1>; }

// Tiny per-step GEMMs run here, on the calling thread: for a few thousand multiply-adds the
// BLAS call (dispatch, and a thread fork/join when torch has several threads) costs 10-50x more.
constexpr int64_t kSmallGemmMacs = 1 << 16;

template <typename T>
void small_mm_nt(const T* a, const T* w, T* out, int64_t N, int64_t G, int64_t K) {
  // out [N, G] = a [N, K] w[G, K]^T
  for (int64_t j = 0; j < N; ++j) {
    const T* aj = a + j * K;
    for (int64_t c = 0; c < G; ++c) {
      const T* wc = w + c * K;
      T s = 0;
      for (int64_t k = 0; k < K; ++k) s += aj[k] * wc[k];
      out[j * G + c] = s;
    }
  }
}

template <typename T>
void small_mm_nn(const T* a, const T* w, T* out, int64_t N, int64_t G, int64_t K) {
  // out [N, K] = a [N, G] w [G, K]
  for (int64_t j = 0; j < N; ++j) {
    T* oj = out + j * K;
    for (int64_t k = 0; k < K; ++k) oj[k] = 0;
    for (int64_t c = 0; c < G; ++c) {
      const T v = a[j * G + c];
      const T* wc = w + c * K;
      for (int64_t k = 0; k < K; ++k) oj[k] += v * wc[k];
    }
  }
}

// Per-step recurrent GEMMs inside the step's parallel region. Each task computes exactly the
// columns its own tiles read, with one sequential BLAS call per gate block, so a step is ONE
// parallel region instead of two (the BLAS's own, then the tiles'): no second fork/join per
// step, no hand-off of the [N, 4H] product between cores, and each task's slab stays in its own
// cache. The Fortran BLAS symbols are those of the MKL torch links (LP64); they are declared
// weak so that a torch without them keeps the two-region path instead of failing to load.
#if AT_MKL_ENABLED() && defined(__GNUC__) && !defined(_WIN32)
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}
inline bool blas_in_region() { return sgemm_ != nullptr && dgemm_ != nullptr; }
// Column-major C[m, n] (ldc) = op(A) op(B), alpha 1, beta 0.
inline void blas_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc) {
  const int M = static_cast<int>(m), Nn = static_cast<int>(n), K = static_cast<int>(k);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const float one = 1.0f, zero = 0.0f;
  sgemm_(&ta, &tb, &M, &Nn, &K, &one, a, &la, b, &lb, &zero, c, &lc);
}
inline void blas_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
                      const double* b, int64_t ldb, double* c, int64_t ldc) {
  const int M = static_cast<int>(m), Nn = static_cast<int>(n), K = static_cast<int>(k);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const double one = 1.0, zero = 0.0;
  dgemm_(&ta, &tb, &M, &Nn, &K, &one, a, &la, b, &lb, &zero, c, &lc);
}
#else
inline bool blas_in_region() { return false; }
template <typename T>
inline void blas_gemm(char, char, int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t,
                      T*, int64_t) {}
#endif

// gh[:, q H + k0 .. q H + k1) = hprev [N, H] W_hh[q H + k0 .. q H + k1, :]^T for the 4 gates
// (row-major; out has row stride 4H).
template <typename T>
void gate_cols_gemm(const T* hprev, const T* w_hh, T* out, int64_t N, int64_t H, int64_t k0,
                    int64_t k1) {
  for (int q = 0; q < 4; ++q) {
    const int64_t c0 = q * H + k0;
    blas_gemm('T', 'N', k1 - k0, N, H, w_hh + c0 * H, H, hprev, H, out + c0, 4 * H);
  }
}

// dh[:, k0 .. k1) = dgh [N, 4H] W_hh[:, k0 .. k1) (row-major; dh has row stride H).
template <typename T>
void hidden_cols_gemm(const T* dgh, const T* w_hh, T* dh, int64_t N, int64_t H, int64_t k0,
                      int64_t k1) {
  blas_gemm('N', 'N', k1 - k0, N, 4 * H, w_hh + k0, H, dgh, 4 * H, dh + k0, H);
}

// ---------------------------------------------------------------------------------------------
// Evaluation (running statistics): every normalisation is a per-(domain, t, column) affine map
// the caller folds in advance, so a step is one GEMM plus one element-wise pass over rows; no
// batch reduction, rows are independent (any order, any domain mix).
template <typename T>
struct StepEval {
  int64_t H;
  const int64_t* domain;  // [N] 0/1
  const T* gh;      // [N, 4H] h_{t-1} W_hh^T
  const T* xp;      // [N, 4H] x_t W_ih^T
  const T* scale_h;  // [2, 4H] at step t (slot 1 at + dstride)
  const T* scale_x;
  const T* shift;
  int64_t dstride;
  const T* scale_c;  // [H] at step t
  const T* shift_c;
  const T* cprev;    // [N, H]
  T* c;
  T* h;
};

template <typename T>
ACTREC_INLINE void eval_rows(const StepEval<T>& a, int64_t b, int64_t e) {
  const int64_t H = a.H, G = 4 * H;
  for (int64_t j = b; j < e; ++j) {
    const int64_t off = a.domain[j] * a.dstride;
    const T* ah = a.scale_h + off;
    const T* ax = a.scale_x + off;
    const T* sh = a.shift + off;
    const T* g = a.gh + j * G;
    const T* x = a.xp + j * G;
    for (int64_t k0 = 0; k0 < H; k0 += kTile) {
      const int64_t J = std::min(kTile, H - k0);
      T pre[4 * kTile] = {};
      for (int q = 0; q < 4; ++q) {
        const int64_t c0 = q * H + k0;
        for (int64_t u = 0; u < J; ++u)
          pre[q * kTile + u] = g[c0 + u] * ah[c0 + u] + x[c0 + u] * ax[c0 + u] + sh[c0 + u];
      }
      sigmoid_n<2 * kTile>(pre);          // i, f
      tanh_n<kTile>(pre + 2 * kTile);     // g
      sigmoid_n<kTile>(pre + 3 * kTile);  // o
      const T* cp = a.cprev + j * H + k0;
      T* cc = a.c + j * H + k0;
      T* hh = a.h + j * H + k0;
      T y[kTile] = {};
      for (int64_t u = 0; u < J; ++u) {
        const T cv = cell::cell_state(pre[u], pre[kTile + u], pre[2 * kTile + u], cp[u]);
        cc[u] = cv;
        y[u] = cv * a.scale_c[k0 + u] + a.shift_c[k0 + u];
      }
      tanh_n<kTile>(y);
      for (int64_t u = 0; u < J; ++u) hh[u] = pre[3 * kTile + u] * y[u];
    }
  }
}

ACTREC_CLONES void eval_rows_f(const StepEval<float>& a, int64_t b, int64_t e) { eval_rows<float>(a, b, e); }
// out [N, K] = a [N, G] w [G, K] for small batches (online and per-video evaluation, N ~ 1):
// the inner loop runs along w's contiguous rows, so it vectorises for the clone's ISA.
ACTREC_CLONES void small_mm_nn_f(const float* a, const float* w, float* out, int64_t N, int64_t G,
                                 int64_t K) {
  small_mm_nn<float>(a, w, out, N, G, K);
}
void small_mm_nn_any(const float* a, const float* w, float* out, int64_t N, int64_t G, int64_t K) {
  small_mm_nn_f(a, w, out, N, G, K);
}
void small_mm_nn_any(const double* a, const double* w, double* out, int64_t N, int64_t G, int64_t K) {
  small_mm_nn<double>(a, w, out, N, G, K);
}
void run_eval_rows(const StepEval<float>& a, int64_t b, int64_t e) { eval_rows_f(a, b, e); }
void run_eval_rows(const StepEval<double>& a, int64_t b, int64_t e) { eval_rows<double>(a, b, e); }

}  // namespace
}  // namespace ddlstm
}  // namespace actrec
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

namespace actrec {
namespace ddlstm {
namespace {

// ---------------------------------------------------------------------------------------------
// Argument checks and drivers

void check_vec(const at::Tensor& t, int64_t n, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "ddlstm_layer: ", name, " must have shape [", n,
              "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "ddlstm_layer: ", name, " has dtype ",
              t.scalar_type(), " but x has ", x.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "ddlstm_layer: ", name, " is on ", t.device(),
              " but x is on ", x.device());
}

void check_mat(const at::Tensor& t, int64_t r, int64_t c, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == r && t.size(1) == c, "ddlstm_layer: ", name,
              " must have shape [", r, ", ", c, "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "ddlstm_layer: ", name, " has dtype ",
              t.scalar_type(), " but x has ", x.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "ddlstm_layer: ", name, " is on ", t.device(),
              " but x is on ", x.device());
}

// Below this many elements per task a parallel region costs more than it saves (small layers
// run the whole step on the calling thread).
constexpr int64_t kMinTaskElems = 8192;
int64_t tile_grain(int64_t N) { return std::max<int64_t>(1, kMinTaskElems / (N * kTile)); }

// Whole-sequence GEMMs below this size also stay on the calling thread (tiny layers: a parallel
// region per call would dominate, and costs a scheduler time slice on a busy machine).
constexpr int64_t kSmallWholeMacs = 1 << 19;

template <typename T>
void small_mm_strided(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const int64_t M = a.size(0), C = a.size(1), K = b.size(1);
  const int64_t as0 = a.stride(0), as1 = a.stride(1), bs0 = b.stride(0), bs1 = b.stride(1);
  const T* ap = a.data_ptr<T>();
  const T* bp = b.data_ptr<T>();
  T* op = out.data_ptr<T>();
  for (int64_t i = 0; i < M; ++i) {
    T* oi = op + i * K;
    for (int64_t k = 0; k < K; ++k) oi[k] = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T v = ap[i * as0 + c * as1];
      const T* bc = bp + c * bs0;
      for (int64_t k = 0; k < K; ++k) oi[k] += v * bc[k * bs1];
    }
  }
}

// out [M, K] = a [M, C] b [C, K]: the BLAS for real sizes, a plain loop for tiny ones.
void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (a.size(0) * a.size(1) * b.size(1) > kSmallWholeMacs) {
    at::mm_out(out, a, b);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ddlstm_small_mm", [&] { small_mm_strided<scalar_t>(a, b, out); });
}

at::Tensor mm_any(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  mm_into(out, a, b);
  return out;
}

// out [M, K] += a [M, C] b [C, K].
void addmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (a.size(0) * a.size(1) * b.size(1) > kSmallWholeMacs)
    out.addmm_(a, b);
  else
    out.add_(mm_any(a, b));
}

// The backward keeps dL/d(h W_hh^T) and dL/d(x W_ih^T) for a chunk of this many steps only and
// takes the weight gradients (and dL/dx) of each chunk as GEMMs over its rows: a step's
// gradients are then written to, and read back from, buffers still in cache, where
// whole-sequence [T, N, 4H] buffers were cold (the per-step stores missed to memory, and the
// GEMMs read 100 MB back). At least 2 steps (step t reads step t + 1's slot while writing its
// own), about kChunkRows rows per GEMM (K = C N: efficient GEMMs, ~2 MB buffers at 4H = 512).
constexpr int64_t kChunkRows = 1024;
int64_t chunk_steps(int64_t T, int64_t N) {
  return std::min(T, std::max<int64_t>(2, (kChunkRows + N - 1) / N));
}

struct Shapes {
  int64_t T, N, D, H, G;
};

Shapes check_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                  const at::Tensor& bias, const at::Tensor& gx, const at::Tensor& bx,
                  const at::Tensor& gh, const at::Tensor& bh, const at::Tensor& gc,
                  const at::Tensor& bc, const at::Tensor& w, const at::Tensor& wc, int64_t n1,
                  const c10::optional<at::Tensor>& h0, const c10::optional<at::Tensor>& c0) {
  TORCH_CHECK(x.dim() == 3, "ddlstm_layer: x must be [T, N, D], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "ddlstm_layer: x must be float32 or float64, got ", x.scalar_type());
  Shapes s{x.size(0), x.size(1), x.size(2), 0, 0};
  TORCH_CHECK(s.T >= 1 && s.N >= 1, "ddlstm_layer: x must have T >= 1 and N >= 1, got ", x.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % 4 == 0 && w_hh.size(0) == 4 * w_hh.size(1),
              "ddlstm_layer: weight_hh must be [4H, H], got ", w_hh.sizes());
  s.H = w_hh.size(1);
  s.G = 4 * s.H;
  check_mat(w_hh, s.G, s.H, "weight_hh", x);
  check_mat(w_ih, s.G, s.D, "weight_ih", x);
  check_vec(bias, s.G, "bias", x);
  check_vec(gx, s.G, "gamma_x", x);
  check_vec(bx, s.G, "beta_x", x);
  check_vec(gh, s.G, "gamma_h", x);
  check_vec(bh, s.G, "beta_h", x);
  check_vec(gc, s.H, "gamma_c", x);
  check_vec(bc, s.H, "beta_c", x);
  TORCH_CHECK(w.dim() == 3 && w.size(0) == 2 && w.size(1) == s.T && w.size(2) == s.N,
              "ddlstm_layer: w must be [2, T=", s.T, ", N=", s.N, "], got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type() && w.device() == x.device(),
              "ddlstm_layer: w must have x's dtype and device");
  check_mat(wc, s.T, s.N, "w_c", x);
  TORCH_CHECK(n1 >= 0 && n1 <= s.N, "ddlstm_layer: n1 must be in [0, N=", s.N, "], got ", n1);
  if (h0.has_value() && h0->defined()) check_mat(*h0, s.N, s.H, "h0", x);
  if (c0.has_value() && c0->defined()) check_mat(*c0, s.N, s.H, "c0", x);
  return s;
}

int num_domains(int64_t N, int64_t n1, bool dual) { return (dual && n1 > 0 && n1 < N) ? 2 : 1; }

// The row weights of one call, read in double (see RowWeights in ddlstm_math.h); also returns
// w and w_c as double tensors, the raw weights the statistics sums use.
RowWeights row_weights(const at::Tensor& w, const at::Tensor& wc, at::Tensor& wd, at::Tensor& wcd) {
  wd = w.detach().to(at::kCPU, at::kDouble).contiguous();
  wcd = wc.detach().to(at::kCPU, at::kDouble).contiguous();
  RowWeights rw(wd.data_ptr<double>(), wcd.data_ptr<double>(), wd.size(1), wd.size(2));
  TORCH_CHECK(rw.valid, "ddlstm_layer: the weights w and w_c must be finite and >= 0");
  return rw;
}

template <typename T>
std::vector<T> cast_vec(const double* p, int64_t n) {
  return std::vector<T>(p, p + n);
}

using FwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

FwdResult forward_cpu(const at::Tensor& x_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
                      const at::Tensor& bias_, const at::Tensor& gx_, const at::Tensor& bx_,
                      const at::Tensor& gh_, const at::Tensor& bh_, const at::Tensor& gc_,
                      const at::Tensor& bc_, const at::Tensor& w, const at::Tensor& wc,
                      int64_t n1, double eps, bool dual, const c10::optional<at::Tensor>& h0_,
                      const c10::optional<at::Tensor>& c0_) {
  const phase::Scope timed_call(phase::kFwdTotal);
  const Shapes s = check_args(x_, w_ih_, w_hh_, bias_, gx_, bx_, gh_, bh_, gc_, bc_, w, wc, n1, h0_, c0_);
  const int64_t T = s.T, N = s.N, D = s.D, H = s.H, G = s.G;
  const at::Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor bias = bias_.contiguous(), gx = gx_.contiguous(), bx = bx_.contiguous();
  const at::Tensor gh = gh_.contiguous(), bh = bh_.contiguous(), gc = gc_.contiguous(), bc = bc_.contiguous();
  const auto opt = x.options();
  const at::Tensor h0 = (h0_.has_value() && h0_->defined()) ? h0_->contiguous() : at::zeros({N, H}, opt);
  const at::Tensor c0 = (c0_.has_value() && c0_->defined()) ? c0_->contiguous() : at::zeros({N, H}, opt);
  at::Tensor wd, wcd;
  const RowWeights rw = row_weights(w, wc, wd, wcd);
  const int nd = num_domains(N, n1, dual);

  // The [T, N, *] buffers saved for backward come from the workspace cache (csrc/cpu/workspace.h).
  at::Tensor xp = workspace::empty({T, N, G}, opt);  // x W_ih^T, one GEMM per chunk of steps
  at::Tensor ghs = workspace::empty({T, N, G}, opt);
  at::Tensor out = at::empty({T, N, H}, opt);
  at::Tensor cs = workspace::empty({T, N, H}, opt);
  at::Tensor mean_x = at::empty({2, T, G}, opt), var_x = at::empty({2, T, G}, opt);
  at::Tensor mean_h = at::empty({2, T, G}, opt), var_h = at::empty({2, T, G}, opt);
  at::Tensor mean_c = at::empty({T, H}, opt), var_c = at::empty({T, H}, opt);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_forward_cpu", [&] {
    using T_ = scalar_t;
    const std::vector<T_> wr = cast_vec<T_>(wd.data_ptr<double>(), 2 * T * N);  // [2, T, N]
    const std::vector<T_> wcr = cast_vec<T_>(wcd.data_ptr<double>(), T * N);    // [T, N]
    const T_ e = static_cast<T_>(eps);
    std::vector<T_> scale(T * 2 * G), shift(T * 2 * G);  // x-path scale/shift per (t, d, c)
    const T_* xpp = xp.data_ptr<T_>();
    const XStatsFn<T_> x_stats = x_stats_fn(nd, T_());
    // x W_ih^T and its DDBN statistics for steps [t0, t0 + n), computed just before those steps
    // run, so that their kernels read them from cache (the same chunks as the backward's).
    const int64_t C = chunk_steps(T, N);
    auto x_chunk = [&](int64_t t0, int64_t n) {
      {
        const phase::Scope timed(phase::kXProj);
        at::Tensor xp_rows = xp.view({T * N, G}).narrow(0, t0 * N, n * N);
        mm_into(xp_rows, x.view({T * N, D}).narrow(0, t0 * N, n * N), w_ih.t());
      }
      const phase::Scope timed(phase::kXStats);
      // Parallel over steps only for real sizes (>= ~256k elements per task).
      at::parallel_for(t0, t0 + n, std::max<int64_t>(1, (kMinTaskElems * 32) / (N * G)), [&](int64_t b, int64_t en) {
        std::vector<double> work(4 * G);
        std::vector<T_> part(2 * G);
        for (int64_t t = b; t < en; ++t) {
          const double inv_s[2] = {rw.inv_s[t], rw.inv_s[T + t]};
          x_stats(xpp + t * N * G, N, G, wr.data() + t * N, wr.data() + (T + t) * N, inv_s, e,
                  gx.data_ptr<T_>(), bx.data_ptr<T_>(), bh.data_ptr<T_>(), bias.data_ptr<T_>(),
                  mean_x.data_ptr<T_>() + t * G, var_x.data_ptr<T_>() + t * G, T * G,
                  scale.data() + t * 2 * G, shift.data() + t * 2 * G, work.data(), part.data());
        }
      });
    };
    StepFwd<T_> a{};
    a.N = N; a.H = H; a.n1 = n1;
    a.gamma_h = gh.data_ptr<T_>(); a.gamma_c = gc.data_ptr<T_>(); a.beta_c = bc.data_ptr<T_>();
    a.dstride = T * G;
    a.eps = e;
    const int64_t ntiles = (H + kTile - 1) / kTile;
    const int64_t grain = tile_grain(N);
    const bool small = N * G * H <= kSmallGemmMacs;
    const bool gemm_in_region = !small && blas_in_region();
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) x_chunk(t, std::min(C, T - t));
      T_* g_t = ghs.data_ptr<T_>() + t * N * G;
      const T_* hprev = t == 0 ? h0.data_ptr<T_>() : out.data_ptr<T_>() + (t - 1) * N * H;
      const double g0 = phase::on() ? phase::now_us() : 0.0;
      if (gemm_in_region) {
        // in the tiles' region below
      } else if (small) {
        small_mm_nt<T_>(hprev, w_hh.data_ptr<T_>(), g_t, N, G, H);
      } else {
        at::Tensor g_view = ghs.select(0, t);
        at::mm_out(g_view, t == 0 ? h0 : out.select(0, t - 1), w_hh.t());  // [N, 4H]
      }
      if (!gemm_in_region && phase::on()) phase::add(phase::kFwdGemmOut, phase::now_us() - g0);
      a.w0 = wr.data() + t * N;
      a.w1 = wr.data() + (T + t) * N;
      a.inv_s0 = rw.inv_s[t];
      a.inv_s1 = rw.inv_s[T + t];
      a.wc = wcr.data() + t * N;
      a.inv_sc = rw.inv_sc[t];
      a.gh = g_t;
      a.xp = xpp + t * N * G;
      a.sx = scale.data() + t * 2 * G;
      a.shx = shift.data() + t * 2 * G;
      a.cprev = t == 0 ? c0.data_ptr<T_>() : cs.data_ptr<T_>() + (t - 1) * N * H;
      a.c = cs.data_ptr<T_>() + t * N * H;
      a.h = out.data_ptr<T_>() + t * N * H;
      a.mean_h = mean_h.data_ptr<T_>() + t * G;
      a.var_h = var_h.data_ptr<T_>() + t * G;
      a.mean_c = mean_c.data_ptr<T_>() + t * H;
      a.var_c = var_c.data_ptr<T_>() + t * H;
      a.has_next = t + 1 < T;
      phase::Region timed(/*fwd=*/true, at::get_num_threads());
      at::parallel_for(0, ntiles, grain, [&](int64_t b, int64_t en) {
        const double q0 = timed.on() ? phase::now_us() : 0.0;
        if (gemm_in_region)
          gate_cols_gemm<T_>(hprev, w_hh.data_ptr<T_>(), g_t, N, H, b * kTile, std::min(H, en * kTile));
        const double q1 = timed.on() ? phase::now_us() : 0.0;
        run_fwd_tiles(nd, a, b, en);
        if (timed.on())
          timed.task(at::get_thread_num(), gemm_in_region ? q1 - q0 : 0.0, phase::now_us() - q1);
      });
      timed.done();
    }
  });
  at::Tensor h_n = out.select(0, T - 1).clone();
  at::Tensor c_n = cs.select(0, T - 1).clone();
  return {out, h_n, c_n, xp, ghs, cs, mean_x, var_x, mean_h, var_h, mean_c, var_c};
}

using BwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor>;

BwdResult backward_cpu(const at::Tensor& grad_out_, const at::Tensor& grad_h_n,
                       const at::Tensor& grad_c_n, const at::Tensor& x_, const at::Tensor& w_ih_,
                       const at::Tensor& w_hh_, const at::Tensor& bias_, const at::Tensor& gx_,
                       const at::Tensor& bx_, const at::Tensor& gh_, const at::Tensor& bh_,
                       const at::Tensor& gc_, const at::Tensor& bc_, const at::Tensor& w,
                       const at::Tensor& wc, const c10::optional<at::Tensor>& h0_,
                       const c10::optional<at::Tensor>& c0_, const at::Tensor& xp_,
                       const at::Tensor& ghs_, const at::Tensor& out_, const at::Tensor& cs_,
                       const at::Tensor& mean_x_, const at::Tensor& var_x_,
                       const at::Tensor& mean_h_, const at::Tensor& var_h_,
                       const at::Tensor& mean_c_, const at::Tensor& var_c_, int64_t n1, double eps,
                       bool dual, bool need_grad_x) {
  const phase::Scope timed_call(phase::kBwdTotal);
  const Shapes s = check_args(x_, w_ih_, w_hh_, bias_, gx_, bx_, gh_, bh_, gc_, bc_, w, wc, n1, h0_, c0_);
  const int64_t T = s.T, N = s.N, D = s.D, H = s.H, G = s.G;
  for (const auto* p : {&grad_out_, &out_, &cs_})
    TORCH_CHECK(p->sizes() == at::IntArrayRef({T, N, H}) && p->scalar_type() == x_.scalar_type(),
                "ddlstm_layer_backward: expected a [T, N, H] tensor of x's dtype, got ", p->sizes());
  for (const auto* p : {&xp_, &ghs_})
    TORCH_CHECK(p->sizes() == at::IntArrayRef({T, N, G}) && p->scalar_type() == x_.scalar_type(),
                "ddlstm_layer_backward: expected a [T, N, 4H] tensor of x's dtype, got ", p->sizes());
  for (const auto* p : {&mean_x_, &var_x_, &mean_h_, &var_h_})
    TORCH_CHECK(p->sizes() == at::IntArrayRef({2, T, G}) && p->scalar_type() == x_.scalar_type(),
                "ddlstm_layer_backward: expected [2, T, 4H] statistics, got ", p->sizes());
  for (const auto* p : {&mean_c_, &var_c_})
    TORCH_CHECK(p->sizes() == at::IntArrayRef({T, H}) && p->scalar_type() == x_.scalar_type(),
                "ddlstm_layer_backward: expected [T, H] statistics, got ", p->sizes());
  check_mat(grad_h_n, N, H, "grad_h_n", x_);
  check_mat(grad_c_n, N, H, "grad_c_n", x_);

  const auto opt = x_.options();
  const at::Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor bias = bias_.contiguous(), gx = gx_.contiguous(), bx = bx_.contiguous();
  const at::Tensor gh = gh_.contiguous(), bh = bh_.contiguous(), gc = gc_.contiguous(), bc = bc_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous(), xp = xp_.contiguous(), ghs = ghs_.contiguous();
  const at::Tensor out = out_.contiguous(), cs = cs_.contiguous();
  const at::Tensor mean_x = mean_x_.contiguous(), var_x = var_x_.contiguous();
  const at::Tensor mean_h = mean_h_.contiguous(), var_h = var_h_.contiguous();
  const at::Tensor mean_c = mean_c_.contiguous(), var_c = var_c_.contiguous();
  const bool has_h0 = h0_.has_value() && h0_->defined();
  const at::Tensor c0 = (c0_.has_value() && c0_->defined()) ? c0_->contiguous() : at::zeros({N, H}, opt);
  at::Tensor wd, wcd;
  const RowWeights rw = row_weights(w, wc, wd, wcd);
  const int nd = num_domains(N, n1, dual);
  const int64_t ntiles = (H + kTile - 1) / kTile;
  const int64_t grain = tile_grain(N);

  const int64_t C = chunk_steps(T, N);
  at::Tensor dgh = workspace::empty({C, N, G}, opt);  // step t in slot t % C
  at::Tensor dxp = workspace::empty({C, N, G}, opt);
  at::Tensor grad_w_hh = at::zeros({G, H}, opt), grad_w_ih = at::zeros({G, D}, opt);
  at::Tensor grad_x = need_grad_x ? at::empty({T, N, D}, opt) : at::empty({0}, opt);
  const at::Tensor out_rows = out.view({T * N, H}), x_rows = x.view({T * N, D});
  // The weight gradients (and dL/dx) of steps [t0, t0 + n), whose slots are 0 .. n - 1.
  auto chunk_grads = [&](int64_t t0, int64_t n) {
    const phase::Scope timed(phase::kWGrad);
    const at::Tensor dg = dgh.narrow(0, 0, n).view({n * N, G});
    const at::Tensor dx = dxp.narrow(0, 0, n).view({n * N, G});
    if (t0 > 0) {
      addmm_into(grad_w_hh, dg.t(), out_rows.narrow(0, (t0 - 1) * N, n * N));
    } else {  // step 0 pairs with h0 (zeros unless given)
      if (n > 1) addmm_into(grad_w_hh, dg.narrow(0, N, (n - 1) * N).t(), out_rows.narrow(0, 0, (n - 1) * N));
      if (has_h0) addmm_into(grad_w_hh, dg.narrow(0, 0, N).t(), h0_->contiguous());
    }
    addmm_into(grad_w_ih, dx.t(), x_rows.narrow(0, t0 * N, n * N));
    if (need_grad_x) {
      at::Tensor gx_rows = grad_x.view({T * N, D}).narrow(0, t0 * N, n * N);
      mm_into(gx_rows, dx, w_ih);
    }
  };
  at::Tensor dc = grad_c_n.contiguous().clone();   // [N, H] carried dL/dc
  at::Tensor dhrec = grad_h_n.contiguous().clone();  // [N, H] dL/dh through the recurrence
  std::vector<double> acc_gh(G, 0.0), acc_gx(G, 0.0), acc_b(G, 0.0), acc_gc(H, 0.0), acc_bc(H, 0.0);
  std::vector<double> dw_part(ntiles * 2 * N, 0.0);  // one step's per-tile partials
  std::vector<double> grad_w(2 * T * N, 0.0);     // [2, T, N]

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_backward_cpu", [&] {
    using T_ = scalar_t;
    const std::vector<T_> wn = cast_vec<T_>(rw.wn.data(), 2 * T * N);  // [2, T, N]
    const std::vector<T_> wnc = cast_vec<T_>(rw.wnc.data(), T * N);    // [T, N]
    std::vector<T_> scratch(ntiles * N * 9 * kTile);
    StepBwd<T_> a{};
    a.N = N; a.H = H; a.n1 = n1;
    a.dstride = T * G;
    a.gamma_h = gh.data_ptr<T_>(); a.beta_h = bh.data_ptr<T_>();
    a.gamma_x = gx.data_ptr<T_>(); a.beta_x = bx.data_ptr<T_>();
    a.bias = bias.data_ptr<T_>();
    a.gamma_c = gc.data_ptr<T_>(); a.beta_c = bc.data_ptr<T_>();
    a.dc = dc.data_ptr<T_>();
    a.dhrec = dhrec.data_ptr<T_>();
    a.acc_gamma_h = acc_gh.data(); a.acc_gamma_x = acc_gx.data(); a.acc_bias = acc_b.data();
    a.acc_gamma_c = acc_gc.data(); a.acc_beta_c = acc_bc.data();
    a.eps = static_cast<T_>(eps);
    const bool gemm_in_region = N * G * H > kSmallGemmMacs && blas_in_region();
    for (int64_t t = T - 1; t >= 0; --t) {
      a.wn0 = wn.data() + t * N;
      a.wn1 = wn.data() + (T + t) * N;
      a.wnc = wnc.data() + t * N;
      a.gh = ghs.data_ptr<T_>() + t * N * G;
      a.xp = xp.data_ptr<T_>() + t * N * G;
      a.mean_h = mean_h.data_ptr<T_>() + t * G;
      a.var_h = var_h.data_ptr<T_>() + t * G;
      a.mean_x = mean_x.data_ptr<T_>() + t * G;
      a.var_x = var_x.data_ptr<T_>() + t * G;
      a.mean_c = mean_c.data_ptr<T_>() + t * H;
      a.var_c = var_c.data_ptr<T_>() + t * H;
      a.c = cs.data_ptr<T_>() + t * N * H;
      a.cprev = t == 0 ? c0.data_ptr<T_>() : cs.data_ptr<T_>() + (t - 1) * N * H;
      a.gout = grad_out.data_ptr<T_>() + t * N * H;
      a.dgh = dgh.data_ptr<T_>() + (t % C) * N * G;
      a.dxp = dxp.data_ptr<T_>() + (t % C) * N * G;
      a.has_next = t > 0;
      a.cprev_next = t > 1 ? a.cprev - N * H : c0.data_ptr<T_>();
      phase::Region timed(/*fwd=*/false, at::get_num_threads());
      at::parallel_for(0, ntiles, grain, [&](int64_t b, int64_t en) {
        const double q0 = timed.on() ? phase::now_us() : 0.0;
        if (gemm_in_region && t < T - 1)  // dL/dh_t for this task's columns, from step t + 1
          hidden_cols_gemm<T_>(dgh.data_ptr<T_>() + ((t + 1) % C) * N * G, w_hh.data_ptr<T_>(),
                               dhrec.data_ptr<T_>(), N, H, b * kTile, std::min(H, en * kTile));
        const double q1 = timed.on() ? phase::now_us() : 0.0;
        run_bwd_tiles(nd, a, b, en, scratch.data(), dw_part.data());
        if (timed.on())
          timed.task(at::get_thread_num(), gemm_in_region ? q1 - q0 : 0.0, phase::now_us() - q1);
      });
      timed.done();
      if (nd == 2) {  // dL/dw[d, t, j] = (sum over tiles of S_d dL/dw) / S_d(t); 0 where S = 0
        for (int d = 0; d < 2; ++d) {
          for (int64_t j = 0; j < N; ++j) {
            double row = 0.0;
            for (int64_t k = 0; k < ntiles; ++k) row += dw_part[k * 2 * N + d * N + j];
            grad_w[(d * T + t) * N + j] = row * rw.inv_s[d * T + t];
          }
        }
      }
      const double g0 = timed.on() ? phase::now_us() : 0.0;
      if (gemm_in_region) {
        if (t == 0) at::mm_out(dhrec, dgh.select(0, 0), w_hh);  // grad_h0
      } else if (N * G * H <= kSmallGemmMacs) {
        small_mm_nn<T_>(dgh.data_ptr<T_>() + (t % C) * N * G, w_hh.data_ptr<T_>(), dhrec.data_ptr<T_>(), N, G, H);
      } else {
        at::mm_out(dhrec, dgh.select(0, t % C), w_hh);  // [N, H]: dL/dh_{t-1} (grad_h0 at t = 0)
      }
      if (timed.on() && (!gemm_in_region || t == 0)) phase::add(phase::kBwdGemmOut, phase::now_us() - g0);
      if (t % C == 0) chunk_grads(t, std::min(C, T - t));  // the chunk's first step is done
    }
  });

  const auto dopt = opt.dtype(at::kDouble);
  auto from_vec = [&](const std::vector<double>& v) {
    return at::from_blob(const_cast<double*>(v.data()), {static_cast<int64_t>(v.size())}, dopt)
        .to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true);  // owns its memory
  };
  at::Tensor grad_bias = from_vec(acc_b);
  return {grad_x, grad_w_ih, grad_w_hh, grad_bias, from_vec(acc_gx), grad_bias.clone(),
          from_vec(acc_gh), grad_bias.clone(), from_vec(acc_gc), from_vec(acc_bc),
          from_vec(grad_w).view({2, T, N}), dhrec, dc};
}


// Evaluation forward: x [T, N, D]; scale_x, scale_h, shift [2, S, 4H] (shift holds every
// additive term: both betas, the bias and the folded running means); scale_c, shift_c [S, H];
// step t uses slot min(t, S - 1) (the running statistics' own rule past the trained length);
// domain [N] int64 in {0, 1}. Returns (out [T, N, H], h_n, c_n).
std::tuple<at::Tensor, at::Tensor, at::Tensor> eval_cpu(
    const at::Tensor& x_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
    const at::Tensor& scale_x_, const at::Tensor& scale_h_, const at::Tensor& shift_,
    const at::Tensor& scale_c_, const at::Tensor& shift_c_, const at::Tensor& domain_,
    const c10::optional<at::Tensor>& h0_, const c10::optional<at::Tensor>& c0_) {
  TORCH_CHECK(x_.dim() == 3 && x_.size(0) >= 1 && x_.size(1) >= 1,
              "ddlstm_layer_eval: x must be [T, N, D] with T, N >= 1, got ", x_.sizes());
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "ddlstm_layer_eval: x must be float32 or float64, got ", x_.scalar_type());
  const int64_t T = x_.size(0), N = x_.size(1), D = x_.size(2);
  TORCH_CHECK(w_hh_.dim() == 2 && w_hh_.size(0) == 4 * w_hh_.size(1),
              "ddlstm_layer_eval: weight_hh must be [4H, H], got ", w_hh_.sizes());
  const int64_t H = w_hh_.size(1), G = 4 * H;
  check_mat(w_hh_, G, H, "weight_hh", x_);
  check_mat(w_ih_, G, D, "weight_ih", x_);
  TORCH_CHECK(scale_c_.dim() == 2 && scale_c_.size(0) >= 1,
              "ddlstm_layer_eval: scale_c must be [S, H] with S >= 1, got ", scale_c_.sizes());
  const int64_t S = scale_c_.size(0);  // slots; step t uses min(t, S - 1)
  for (const auto* p : {&scale_x_, &scale_h_, &shift_})
    TORCH_CHECK(p->sizes() == at::IntArrayRef({2, S, G}) && p->scalar_type() == x_.scalar_type() &&
                    p->device() == x_.device(),
                "ddlstm_layer_eval: scale_x, scale_h and shift must be [2, S, 4H] of x's dtype "
                "(S = scale_c's slots), got ", p->sizes());
  check_mat(scale_c_, S, H, "scale_c", x_);
  check_mat(shift_c_, S, H, "shift_c", x_);
  TORCH_CHECK(domain_.dim() == 1 && domain_.size(0) == N && domain_.scalar_type() == at::kLong,
              "ddlstm_layer_eval: domain must be an int64 [N=", N, "] tensor, got ", domain_.sizes());
  const at::Tensor domain = domain_.contiguous();
  const int64_t* dom = domain.data_ptr<int64_t>();
  for (int64_t j = 0; j < N; ++j)
    TORCH_CHECK(dom[j] == 0 || dom[j] == 1, "ddlstm_layer_eval: domain flags must be 0 or 1, got ",
                dom[j], " at row ", j);
  const auto opt = x_.options();
  if (h0_.has_value() && h0_->defined()) check_mat(*h0_, N, H, "h0", x_);
  if (c0_.has_value() && c0_->defined()) check_mat(*c0_, N, H, "c0", x_);
  const at::Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor sxh = scale_x_.contiguous(), shh = scale_h_.contiguous(), sft = shift_.contiguous();
  const at::Tensor scc = scale_c_.contiguous(), shc = shift_c_.contiguous();
  const at::Tensor h0 = (h0_.has_value() && h0_->defined()) ? h0_->contiguous() : at::zeros({N, H}, opt);
  at::Tensor c_n = (c0_.has_value() && c0_->defined()) ? c0_->contiguous().clone() : at::zeros({N, H}, opt);

  const at::Tensor xp = mm_any(x.view({T * N, D}), w_ih.t());  // [T*N, 4H]: all steps at once
  at::Tensor out = at::empty({T, N, H}, opt);
  at::Tensor gh = at::empty({N, G}, opt);
  at::Tensor c_next = at::empty({N, H}, opt);
  const bool small = N * G * H <= kSmallGemmMacs;
  const at::Tensor w_t = small ? w_hh.t().contiguous() : at::Tensor();  // [H, 4H]
  const int64_t grain = std::max<int64_t>(1, kMinTaskElems / G);  // rows per task
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_eval_cpu", [&] {
    using T_ = scalar_t;
    StepEval<T_> a{};
    a.H = H;
    a.domain = dom;
    a.gh = gh.data_ptr<T_>();
    a.dstride = S * G;
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor hprev = t == 0 ? h0 : out.select(0, t - 1);
      if (small) {
        small_mm_nn_any(hprev.data_ptr<T_>(), w_t.data_ptr<T_>(), gh.data_ptr<T_>(), N, H, G);
      } else {
        at::mm_out(gh, hprev, w_hh.t());  // [N, 4H]
      }
      const int64_t slot = std::min(t, S - 1);
      a.xp = xp.data_ptr<T_>() + t * N * G;
      a.scale_h = shh.data_ptr<T_>() + slot * G;
      a.scale_x = sxh.data_ptr<T_>() + slot * G;
      a.shift = sft.data_ptr<T_>() + slot * G;
      a.scale_c = scc.data_ptr<T_>() + slot * H;
      a.shift_c = shc.data_ptr<T_>() + slot * H;
      a.cprev = c_n.data_ptr<T_>();
      a.c = c_next.data_ptr<T_>();
      a.h = out.data_ptr<T_>() + t * N * H;
      at::parallel_for(0, N, grain, [&](int64_t b, int64_t e) { run_eval_rows(a, b, e); });
      std::swap(c_n, c_next);
    }
  });
  return {out, out.select(0, T - 1).clone(), c_n};
}

}  // namespace
}  // namespace ddlstm
}  // namespace actrec

TORCH_LIBRARY_IMPL(actrec, CPU, m) {
  m.impl("ddlstm_layer_forward", &actrec::ddlstm::forward_cpu);
  m.impl("ddlstm_layer_backward", &actrec::ddlstm::backward_cpu);
  m.impl("ddlstm_layer_eval", &actrec::ddlstm::eval_cpu);
}
