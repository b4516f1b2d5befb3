// CPU kernels of the dual-domain batch norm (DDBN); the spec is shared/design/ddbn.md.
//
// Layout: h is [T,N,C] contiguous, so for one timestep the batch rows are C apart and the
// channel axis is contiguous. Work is split into tasks of (t, block of kBlock channels); each
// task owns every row of its channels, so all batch reductions are task-local. Inner loops run
// over the contiguous channels (vectorisable). Reductions accumulate in double.
//
// Single-domain batches (n1 = 0 or N) are exact plain batch norm: the present domain gets unit
// weights, the absent one zero weights (so it contributes nothing to any gradient), and both
// statistics slots hold the plain statistics.

#include "ddbn_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

// Hot loops are compiled for AVX2/AVX-512 as well as the baseline ISA and picked at load time,
// so one binary runs everywhere (GCC/clang function multi-versioning on x86-64 ELF).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#define ACTREC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ACTREC_CLONES
#endif

namespace actrec {
namespace {

constexpr int64_t kBlock = 64;  // channels per task: 2 domains x 4 accumulators x 64 doubles in L1

// Row weights of both domains for one batch, in double.
struct Weights {
  int64_t n = 0;
  std::vector<double> tau;    // [2*N]: tau_1(j), then tau_2(j), rows j = 1..N
  std::vector<double> kappa;  // [2*N]: d tau_i(j) / d alpha_i
  std::vector<float> tauf;    // tau rounded to float, for the float kernels' inner loops
  double s[2] = {0, 0};       // S_i = sum_j tau_i(j) (N for an absent domain, never divided into)
  double unbias[2] = {1, 1};  // n_eff / (n_eff - 1), 1 where n_eff <= 1
  int present = -1;           // single-domain batch: the domain present (0 or 1); -1 otherwise

  Weights(int64_t n_, int64_t n1, double a1, double a2) : n(n_), tau(2 * n_), kappa(2 * n_, 0.0) {
    const double nn = static_cast<double>(n);
    if (n1 == 0 || n1 == n) {
      present = n1 == n ? 0 : 1;
      std::fill(tau.begin() + present * n, tau.begin() + (present + 1) * n, 1.0);
      std::fill(tau.begin() + (1 - present) * n, tau.begin() + (2 - present) * n, 0.0);
      s[0] = s[1] = nn;
      unbias[0] = unbias[1] = n > 1 ? nn / (nn - 1) : 1.0;
      tauf.assign(tau.begin(), tau.end());
      return;
    }
    for (int64_t j = 0; j < n; ++j) {
      const double jj = static_cast<double>(j + 1);  // the spec's rows are 1-based
      const double t1 = std::tanh(jj - a1 * nn), t2 = std::tanh(jj - (1 - a2) * nn);
      tau[j] = (1 - t1) / 2;
      tau[n + j] = (1 + t2) / 2;
      kappa[j] = nn / 2 * (1 - t1 * t1);
      kappa[n + j] = nn / 2 * (1 - t2 * t2);
    }
    for (int i = 0; i < 2; ++i) {
      double sum = 0, sq = 0;
      for (int64_t j = 0; j < n; ++j) {
        sum += tau[i * n + j];
        sq += tau[i * n + j] * tau[i * n + j];
      }
      s[i] = sum;
      const double n_eff = sum * sum / sq;
      unbias[i] = n_eff > 1 ? n_eff / (n_eff - 1) : 1.0;
    }
    tauf.assign(tau.begin(), tau.end());
  }

  template <typename T> const T* weights() const;
};

template <> const double* Weights::weights<double>() const { return tau.data(); }
template <> const float* Weights::weights<float>() const { return tauf.data(); }

// Inner sums run in the kernel's math type (float for float inputs, so they vectorise 16 wide)
// over groups of kRows rows, and each group's partial sum is added into a double accumulator:
// the rounding error stays that of a kRows-term float sum.
constexpr int64_t kRows = 16;

Weights make_weights(const at::Tensor& alpha, int64_t n, int64_t n1) {
  TORCH_CHECK(alpha.dim() == 1 && alpha.numel() == 2, "ddbn: alpha must be [2], got ",
              alpha.sizes());
  TORCH_CHECK(0 <= n1 && n1 <= n, "ddbn: split point n1=", n1, " outside 0..", n);
  auto a = alpha.detach().to(at::kCPU, at::kDouble).contiguous();
  return Weights(n, n1, a.data_ptr<double>()[0], a.data_ptr<double>()[1]);
}

void check_input(const at::Tensor& h, const at::Tensor& gamma, const at::Tensor& beta) {
  TORCH_CHECK(h.dim() == 3, "ddbn: expected h of shape [T, N, C], got ", h.sizes());
  TORCH_CHECK(h.size(1) >= 1, "ddbn: the batch is empty");
  const int64_t c = h.size(2);
  TORCH_CHECK(gamma.dim() == 1 && gamma.size(0) == c && beta.dim() == 1 && beta.size(0) == c,
              "ddbn: gamma and beta must be [C=", c, "], got ", gamma.sizes(), " and ",
              beta.sizes());
  TORCH_CHECK(at::isFloatingType(h.scalar_type()), "ddbn: h must be floating point, got ",
              h.scalar_type());
}

// The deterministic split of `tasks` into at most kChunks contiguous chunks, so that partial
// sums (over t for dgamma, over channels for dtau) do not depend on the thread count.
constexpr int64_t kChunks = 64;

// ------------------------------------------------------------------------------------------
// Forward: statistics of one (t, channel block) task for both domains, then normalise.

template <typename scalar_t>
ACTREC_CLONES void forward_block(const scalar_t* x, scalar_t* y, int64_t n, int64_t n1,
                                 int64_t ldc, int64_t cb, const Weights& w,
                                 const double* gamma, const double* beta, double eps,
                                 double* m0, double* m1, double* v0, double* v1) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t* tau0 = w.weights<opmath_t>();
  const opmath_t* tau1 = tau0 + n;
  for (int64_t c = 0; c < cb; ++c) m0[c] = m1[c] = v0[c] = v1[c] = 0;
  opmath_t p0[kBlock], p1[kBlock], f0[kBlock], f1[kBlock];
  for (int64_t jb = 0; jb < n; jb += kRows) {  // pass 1: weighted sums
    for (int64_t c = 0; c < cb; ++c) p0[c] = p1[c] = 0;
    for (int64_t j = jb; j < std::min(n, jb + kRows); ++j) {
      const scalar_t* xr = x + j * ldc;
      const opmath_t w0 = tau0[j], w1 = tau1[j];
      for (int64_t c = 0; c < cb; ++c) {
        const opmath_t xv = static_cast<opmath_t>(xr[c]);
        p0[c] += w0 * xv;
        p1[c] += w1 * xv;
      }
    }
    for (int64_t c = 0; c < cb; ++c) {
      m0[c] += p0[c];
      m1[c] += p1[c];
    }
  }
  const double is0 = 1.0 / w.s[0], is1 = 1.0 / w.s[1];
  for (int64_t c = 0; c < cb; ++c) {
    m0[c] *= is0;
    m1[c] *= is1;
    f0[c] = static_cast<opmath_t>(m0[c]);
    f1[c] = static_cast<opmath_t>(m1[c]);
  }
  for (int64_t jb = 0; jb < n; jb += kRows) {  // pass 2: centred weighted squares (two-pass)
    for (int64_t c = 0; c < cb; ++c) p0[c] = p1[c] = 0;
    for (int64_t j = jb; j < std::min(n, jb + kRows); ++j) {
      const scalar_t* xr = x + j * ldc;
      const opmath_t w0 = tau0[j], w1 = tau1[j];
      for (int64_t c = 0; c < cb; ++c) {
        const opmath_t xv = static_cast<opmath_t>(xr[c]);
        const opmath_t d0 = xv - f0[c], d1 = xv - f1[c];
        p0[c] += w0 * d0 * d0;
        p1[c] += w1 * d1 * d1;
      }
    }
    for (int64_t c = 0; c < cb; ++c) {
      v0[c] += p0[c];
      v1[c] += p1[c];
    }
  }
  for (int64_t c = 0; c < cb; ++c) {
    v0[c] *= is0;
    v1[c] *= is1;
  }
  if (w.present >= 0) {  // plain BN: both slots hold the present domain's statistics
    double* ms = w.present == 0 ? m0 : m1;
    double* vs = w.present == 0 ? v0 : v1;
    std::copy(ms, ms + cb, w.present == 0 ? m1 : m0);
    std::copy(vs, vs + cb, w.present == 0 ? v1 : v0);
  }
  // pass 3: y = (x - mu_d) * gamma * r_d + beta, rows < n1 with domain 0's statistics
  opmath_t mu[2][kBlock], sc[2][kBlock], bt[kBlock];
  for (int64_t c = 0; c < cb; ++c) {
    mu[0][c] = static_cast<opmath_t>(m0[c]);
    mu[1][c] = static_cast<opmath_t>(m1[c]);
    sc[0][c] = static_cast<opmath_t>(gamma[c] / std::sqrt(v0[c] + eps));
    sc[1][c] = static_cast<opmath_t>(gamma[c] / std::sqrt(v1[c] + eps));
    bt[c] = static_cast<opmath_t>(beta[c]);
  }
  for (int64_t j = 0; j < n; ++j) {
    const int d = j < n1 ? 0 : 1;
    const scalar_t* xr = x + j * ldc;
    scalar_t* yr = y + j * ldc;
    const opmath_t* mud = mu[d];
    const opmath_t* scd = sc[d];
    for (int64_t c = 0; c < cb; ++c)
      yr[c] = static_cast<scalar_t>((static_cast<opmath_t>(xr[c]) - mud[c]) * scd[c] + bt[c]);
  }
}

template <typename scalar_t>
void forward_impl(const at::Tensor& h, const Weights& w, int64_t n1, const at::Tensor& gamma,
                  const at::Tensor& beta, double eps, at::Tensor& y, at::Tensor& mean,
                  at::Tensor& rstd, at::Tensor* rm, at::Tensor* rv, double momentum) {
  using stat_t = at::opmath_type<scalar_t>;
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  const int64_t nb = (C + kBlock - 1) / kBlock;
  const scalar_t* xp = h.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  stat_t* mp = mean.data_ptr<stat_t>();
  stat_t* rp = rstd.data_ptr<stat_t>();
  const double* gp = gamma.data_ptr<double>();
  const double* bp = beta.data_ptr<double>();
  const int64_t t_run = rm ? std::min(T, rm->size(1)) : 0;
  stat_t* rmp = rm ? rm->data_ptr<stat_t>() : nullptr;
  stat_t* rvp = rv ? rv->data_ptr<stat_t>() : nullptr;
  const int64_t t_max = rm ? rm->size(1) : 0;
  const bool upd[2] = {w.present != 1, w.present != 0};  // single domain: own slot only

  at::parallel_for(0, T * nb, 1, [&](int64_t begin, int64_t end) {
    double m0[kBlock], m1[kBlock], v0[kBlock], v1[kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / nb, c0 = (task % nb) * kBlock;
      const int64_t cb = std::min(kBlock, C - c0);
      const int64_t off = t * N * C + c0;
      forward_block<scalar_t>(xp + off, yp + off, N, n1, C, cb, w, gp + c0, bp + c0, eps, m0, m1,
                              v0, v1);
      const double* ms[2] = {m0, m1};
      const double* vs[2] = {v0, v1};
      for (int d = 0; d < 2; ++d) {
        const int64_t so = (d * T + t) * C + c0;  // [2,T,C]
        for (int64_t c = 0; c < cb; ++c) {
          mp[so + c] = static_cast<stat_t>(ms[d][c]);
          rp[so + c] = static_cast<stat_t>(1.0 / std::sqrt(vs[d][c] + eps));
        }
        if (t < t_run && upd[d]) {  // fused running-statistics update
          const int64_t ro = (d * t_max + t) * C + c0;  // [2,T_max,C]
          for (int64_t c = 0; c < cb; ++c) {
            rmp[ro + c] = static_cast<stat_t>((1 - momentum) * rmp[ro + c] + momentum * ms[d][c]);
            rvp[ro + c] = static_cast<stat_t>((1 - momentum) * rvp[ro + c] +
                                              momentum * vs[d][c] * w.unbias[d]);
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------
// Backward. Per (t, c) and domain i (spec, "Gradients"): A_i = sum_{j in D_i} g_j and
// B_i = sum_{j in D_i} g_j xhat_j give dmu_i = -gamma r_i A_i and dv_i = -gamma r_i^2 B_i / 2;
// then dh_k = g_k gamma r_d(k) + sum_i (tau_i(k)/S_i) (dmu_i + 2 dv_i (h_k - mu_i)) and
// dtau_i(k) = sum_c (dmu_i (h_k - mu_i) + dv_i ((h_k - mu_i)^2 - v_i)) / S_i.

template <typename scalar_t>
ACTREC_CLONES void backward_block(const scalar_t* g, const scalar_t* x, scalar_t* dx, int64_t n,
                                  int64_t n1, int64_t ldc, int64_t cb, const Weights& w,
                                  const double* gamma, const double* mu0, const double* mu1,
                                  const double* r0, const double* r1, double eps,
                                  double* dgamma, double* dbeta, double* dtau0, double* dtau1) {
  using opmath_t = at::opmath_type<scalar_t>;
  double a0[kBlock], a1[kBlock], b0[kBlock], b1[kBlock];
  for (int64_t c = 0; c < cb; ++c) a0[c] = a1[c] = b0[c] = b1[c] = 0;
  {
    opmath_t fm0[kBlock], fm1[kBlock], pa[kBlock], pb[kBlock];
    for (int64_t c = 0; c < cb; ++c) {
      fm0[c] = static_cast<opmath_t>(mu0[c]);
      fm1[c] = static_cast<opmath_t>(mu1[c]);
    }
    // Reduction pass over the rows of each domain, in groups of kRows rows.
    for (int d = 0; d < 2; ++d) {
      const int64_t lo = d == 0 ? 0 : n1, hi = d == 0 ? n1 : n;
      const opmath_t* fm = d == 0 ? fm0 : fm1;
      double* sa = d == 0 ? a0 : a1;
      double* sb = d == 0 ? b0 : b1;
      for (int64_t jb = lo; jb < hi; jb += kRows) {
        for (int64_t c = 0; c < cb; ++c) pa[c] = pb[c] = 0;
        for (int64_t j = jb; j < std::min(hi, jb + kRows); ++j) {
          const scalar_t* gr = g + j * ldc;
          const scalar_t* xr = x + j * ldc;
          for (int64_t c = 0; c < cb; ++c) {
            const opmath_t gv = static_cast<opmath_t>(gr[c]);
            pa[c] += gv;
            pb[c] += gv * (static_cast<opmath_t>(xr[c]) - fm[c]);
          }
        }
        for (int64_t c = 0; c < cb; ++c) {
          sa[c] += pa[c];
          sb[c] += pb[c];
        }
      }
    }
  }
  // Per-channel coefficients of the element-wise pass, in the kernel's math type.
  opmath_t m[2][kBlock], own[2][kBlock], p[2][kBlock], q[2][kBlock], u[2][kBlock], k0[2][kBlock];
  const double is[2] = {1.0 / w.s[0], 1.0 / w.s[1]};
  const double* mus[2] = {mu0, mu1};
  const double* rs[2] = {r0, r1};
  const double* as[2] = {a0, a1};
  const double* bs[2] = {b0, b1};
  for (int64_t c = 0; c < cb; ++c) {
    dgamma[c] += b0[c] * r0[c] + b1[c] * r1[c];  // sum_j g_j xhat_j
    dbeta[c] += a0[c] + a1[c];
    for (int i = 0; i < 2; ++i) {
      const double r = rs[i][c];
      const double dmu = -gamma[c] * r * as[i][c];
      const double dv = -0.5 * gamma[c] * r * r * r * bs[i][c];  // B here is sum g (h - mu)
      const double var = 1.0 / (r * r) - eps;
      m[i][c] = static_cast<opmath_t>(mus[i][c]);
      own[i][c] = static_cast<opmath_t>(gamma[c] * r);
      p[i][c] = static_cast<opmath_t>(dmu * is[i]);
      q[i][c] = static_cast<opmath_t>(2 * dv * is[i]);
      u[i][c] = static_cast<opmath_t>(dv * is[i]);
      k0[i][c] = static_cast<opmath_t>(-dv * var * is[i]);
    }
  }
  // Element-wise pass: dx, and the row sums dtau_i(k) over this block's channels.
  const opmath_t* tau0 = w.weights<opmath_t>();
  const opmath_t* tau1 = tau0 + n;
  for (int64_t j = 0; j < n; ++j) {
    const int d = j < n1 ? 0 : 1;
    const scalar_t* gr = g + j * ldc;
    const scalar_t* xr = x + j * ldc;
    scalar_t* dr = dx + j * ldc;
    const opmath_t w0 = tau0[j], w1 = tau1[j];
    const opmath_t* ownd = own[d];
    opmath_t s0 = 0, s1 = 0;
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t c = 0; c < cb; ++c) {
      const opmath_t xv = static_cast<opmath_t>(xr[c]);
      const opmath_t e0 = xv - m[0][c], e1 = xv - m[1][c];
      // (tau/S) (dmu + 2 dv e) = tau * (p + q e)
      const opmath_t v = static_cast<opmath_t>(gr[c]) * ownd[c] + w0 * (p[0][c] + q[0][c] * e0) +
                         w1 * (p[1][c] + q[1][c] * e1);
      dr[c] = static_cast<scalar_t>(v);
      s0 += p[0][c] * e0 + u[0][c] * e0 * e0 + k0[0][c];
      s1 += p[1][c] * e1 + u[1][c] * e1 * e1 + k0[1][c];
    }
    dtau0[j] += s0;
    dtau1[j] += s1;
  }
}

template <typename scalar_t>
void backward_impl(const at::Tensor& g, const at::Tensor& h, const Weights& w, int64_t n1,
                   const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                   double eps, at::Tensor& dh, double* dalpha, at::Tensor& dgamma,
                   at::Tensor& dbeta) {
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  const int64_t nb = (C + kBlock - 1) / kBlock;
  const int64_t tasks = T * nb;
  const int64_t chunks = std::min(tasks, kChunks);
  const scalar_t* gp = g.data_ptr<scalar_t>();
  const scalar_t* xp = h.data_ptr<scalar_t>();
  scalar_t* dp = dh.data_ptr<scalar_t>();
  const double* gam = gamma.data_ptr<double>();
  const double* mp = mean.data_ptr<double>();  // [2,T,C] in double
  const double* rp = rstd.data_ptr<double>();
  // Per-chunk partials: dgamma, dbeta [C] and dtau [2,N].
  std::vector<double> part(static_cast<size_t>(chunks * (2 * C + 2 * N)), 0.0);

  at::parallel_for(0, chunks, 1, [&](int64_t cbeg, int64_t cend) {
    for (int64_t k = cbeg; k < cend; ++k) {
      double* pg = part.data() + k * (2 * C + 2 * N);
      double* pb = pg + C;
      double* pt = pb + C;
      for (int64_t task = k * tasks / chunks; task < (k + 1) * tasks / chunks; ++task) {
        const int64_t t = task / nb, c0 = (task % nb) * kBlock;
        const int64_t cb = std::min(kBlock, C - c0);
        const int64_t off = t * N * C + c0;
        const int64_t s0 = t * C + c0, s1 = (T + t) * C + c0;
        backward_block<scalar_t>(gp + off, xp + off, dp + off, N, n1, C, cb, w, gam + c0,
                                 mp + s0, mp + s1, rp + s0, rp + s1, eps, pg + c0, pb + c0, pt,
                                 pt + N);
      }
    }
  });
  double* dg = dgamma.data_ptr<double>();
  double* db = dbeta.data_ptr<double>();
  std::vector<double> dtau(2 * N, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    const double* pg = part.data() + k * (2 * C + 2 * N);
    for (int64_t c = 0; c < C; ++c) {
      dg[c] += pg[c];
      db[c] += pg[C + c];
    }
    for (int64_t j = 0; j < 2 * N; ++j) dtau[j] += pg[2 * C + j];
  }
  for (int i = 0; i < 2; ++i) {
    double s = 0;
    for (int64_t j = 0; j < N; ++j) s += w.kappa[i * N + j] * dtau[i * N + j];
    dalpha[i] = s;  // zero for a single-domain batch (kappa = 0)
  }
}

// ------------------------------------------------------------------------------------------
// Evaluation: a per-(domain, t, c) affine map from the running statistics.

template <typename scalar_t>
void eval_impl(const at::Tensor& h, const int64_t* dom, const at::Tensor& mu,
               const at::Tensor& scale, const at::Tensor& beta, at::Tensor& y) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2), te = mu.size(1);
  const scalar_t* xp = h.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const opmath_t* mp = mu.data_ptr<opmath_t>();  // [2,te,C]
  const opmath_t* sp = scale.data_ptr<opmath_t>();
  const opmath_t* bp = beta.data_ptr<opmath_t>();
  at::parallel_for(0, T * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = row / N, j = row % N;
      const int64_t so = (dom[j] * te + std::min(t, te - 1)) * C;
      const opmath_t* m = mp + so;
      const opmath_t* s = sp + so;
      const scalar_t* xr = xp + row * C;
      scalar_t* yr = yp + row * C;
      for (int64_t c = 0; c < C; ++c)
        yr[c] = static_cast<scalar_t>((static_cast<opmath_t>(xr[c]) - m[c]) * s[c] + bp[c]);
    }
  });
}

at::ScalarType stat_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddbn_forward_cpu(
    const at::Tensor& h_, const at::Tensor& alpha, int64_t n1, const at::Tensor& gamma,
    const at::Tensor& beta, double eps, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double momentum) {
  check_input(h_, gamma, beta);
  const at::Tensor h = h_.contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  const Weights w = make_weights(alpha, N, n1);
  const auto st = stat_type(h.scalar_type());
  auto y = at::empty_like(h);
  auto mean = at::empty({2, T, C}, h.options().dtype(st));
  auto rstd = at::empty({2, T, C}, h.options().dtype(st));
  const auto gd = gamma.detach().to(at::kDouble).contiguous();
  const auto bd = beta.detach().to(at::kDouble).contiguous();

  const bool has_rm = running_mean.has_value() && running_mean->defined();
  const bool has_rv = running_var.has_value() && running_var->defined();
  TORCH_CHECK(has_rm == has_rv, "ddbn: give both running_mean and running_var, or neither");
  at::Tensor rm, rv;
  if (has_rm) {
    for (const auto* r : {&*running_mean, &*running_var})
      TORCH_CHECK(r->dim() == 3 && r->size(0) == 2 && r->size(2) == C && r->size(1) >= 1,
                  "ddbn: running statistics must be [2, T_max, C=", C, "], got ", r->sizes());
    // Work on contiguous buffers of the statistics type; copy back if that needed a copy.
    rm = running_mean->to(st).contiguous();
    rv = running_var->to(st).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ddbn_forward_cpu",
                                  [&] {
    forward_impl<scalar_t>(h, w, n1, gd, bd, eps, y, mean, rstd, has_rm ? &rm : nullptr,
                           has_rv ? &rv : nullptr, momentum);
  });
  if (has_rm) {
    if (!rm.is_same(*running_mean)) running_mean->copy_(rm);
    if (!rv.is_same(*running_var)) running_var->copy_(rv);
  }
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ddbn_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& h_, const at::Tensor& alpha, int64_t n1,
    const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd, double eps) {
  check_input(h_, gamma, gamma);
  TORCH_CHECK(grad_y.sizes() == h_.sizes(), "ddbn_backward: grad_y ", grad_y.sizes(),
              " does not match h ", h_.sizes());
  const at::Tensor h = h_.contiguous();
  const at::Tensor g = grad_y.to(h.scalar_type()).contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  TORCH_CHECK(mean.sizes() == rstd.sizes() && mean.dim() == 3 && mean.size(0) == 2 &&
                  mean.size(1) == T && mean.size(2) == C,
              "ddbn_backward: mean and rstd must be [2, T, C], got ", mean.sizes(), " and ",
              rstd.sizes());
  const Weights w = make_weights(alpha, N, n1);
  const auto md = mean.to(at::kDouble).contiguous();
  const auto rd = rstd.to(at::kDouble).contiguous();
  const auto gd = gamma.detach().to(at::kDouble).contiguous();
  auto dh = at::empty_like(h);
  auto dgamma = at::zeros({C}, gamma.options().dtype(at::kDouble));
  auto dbeta = at::zeros({C}, gamma.options().dtype(at::kDouble));
  double dalpha[2] = {0, 0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ddbn_backward_cpu",
                                  [&] {
    backward_impl<scalar_t>(g, h, w, n1, gd, md, rd, eps, dh, dalpha, dgamma, dbeta);
  });
  auto da = at::tensor({dalpha[0], dalpha[1]}, alpha.options().dtype(at::kDouble));
  return {dh, da.to(alpha.scalar_type()), dgamma.to(gamma.scalar_type()),
          dbeta.to(gamma.scalar_type())};
}

at::Tensor ddbn_eval_cpu(const at::Tensor& h_, const at::Tensor& domain,
                         const at::Tensor& running_mean, const at::Tensor& running_var,
                         const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  check_input(h_, gamma, beta);
  const at::Tensor h = h_.contiguous();
  const int64_t T = h.size(0), N = h.size(1), C = h.size(2);
  TORCH_CHECK(domain.dim() == 1 && domain.size(0) == N, "ddbn_eval: domain must be [N=", N,
              "], got ", domain.sizes());
  TORCH_CHECK(running_mean.sizes() == running_var.sizes() && running_mean.dim() == 3 &&
                  running_mean.size(0) == 2 && running_mean.size(1) >= 1 &&
                  running_mean.size(2) == C,
              "ddbn_eval: running statistics must be [2, T_max, C=", C, "], got ",
              running_mean.sizes(), " and ", running_var.sizes());
  const auto dom = domain.to(at::kLong).contiguous();
  const int64_t* dp = dom.data_ptr<int64_t>();
  for (int64_t j = 0; j < N; ++j)
    TORCH_CHECK(dp[j] == 0 || dp[j] == 1, "ddbn_eval: domain[", j, "] = ", dp[j],
                ", expected 0 or 1");
  const auto st = stat_type(h.scalar_type());
  const int64_t te = std::min(T, running_mean.size(1));
  // Only the timesteps this sequence uses: scale = gamma / sqrt(var + eps), [2, te, C].
  const auto mu = running_mean.slice(1, 0, te).to(st).contiguous();
  const auto var = running_var.slice(1, 0, te).to(at::kDouble);
  const auto scale = (gamma.detach().to(at::kDouble) / (var + eps).sqrt()).to(st).contiguous();
  const auto bt = beta.detach().to(st).contiguous();
  auto y = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ddbn_eval_cpu",
                                  [&] { eval_impl<scalar_t>(h, dp, mu, scale, bt, y); });
  return y;
}

TORCH_LIBRARY_IMPL(actrec, CPU, m) {
  m.impl("ddbn_forward", &ddbn_forward_cpu);
  m.impl("ddbn_backward", &ddbn_backward_cpu);
  m.impl("ddbn_eval", &ddbn_eval_cpu);
}

}  // namespace actrec
