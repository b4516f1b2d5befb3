// Device code of the DDLSTM / BNLSTM layer (see ddlstm_kernels.cuh). No torch headers.
//
// Every batch statistic (and every backward reduction over rows) accumulates in double, as the
// CPU kernels do, whatever the input type; the row weights come in as data (w, w_c), so padded
// rows (weight 0) enter no statistic.

#include "ddlstm_kernels.cuh"

namespace actrec {
namespace ddlstm_cuda {
namespace {

__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float tanh_d(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_d(double x) { return tanh(x); }
__device__ __forceinline__ float rsqrt_d(float x) { return rsqrtf(x); }
__device__ __forceinline__ double rsqrt_d(double x) { return rsqrt(x); }

// Shared scratch of kRowGroups x 8 values x kUnits doubles (16 KiB).
constexpr int kRedVals = 8;

// Sums NV values per thread over the row groups (threadIdx.y) of each unit lane; every thread
// gets the totals of its lane. All threads of the block must call it.
template <int NV>
__device__ __forceinline__ void reduce_rows(double (&v)[NV], double* sm) {
  static_assert(NV <= kRedVals, "reduce at most kRedVals values at a time");
  const int u = threadIdx.x, r = threadIdx.y;
#pragma unroll
  for (int k = 0; k < NV; ++k) sm[(r * NV + k) * kUnits + u] = v[k];
  __syncthreads();
  for (int s = kRowGroups / 2; s > 0; s >>= 1) {
    if (r < s) {
#pragma unroll
      for (int k = 0; k < NV; ++k) sm[(r * NV + k) * kUnits + u] += sm[((r + s) * NV + k) * kUnits + u];
    }
    __syncthreads();
  }
#pragma unroll
  for (int k = 0; k < NV; ++k) v[k] = sm[k * kUnits + u];
  __syncthreads();
}

// One block per row of w [rows, N]: inv[row] = 1 / sum_j w (0 where the sum is 0).
template <typename T>
__global__ void inv_sums_kernel(const T* w, int64_t N, double* inv) {
  __shared__ double red[256];
  const T* row = w + static_cast<int64_t>(blockIdx.x) * N;
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) s += static_cast<double>(row[j]);
  red[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) inv[blockIdx.x] = red[0] > 0.0 ? 1.0 / red[0] : 0.0;
}

// One thread per (column c, step t): two-pass weighted statistics over the N rows (coalesced
// across c), accumulated in double. Outputs mean/var [2, T, G] and scale/shift [T, 2, G].
template <typename T>
__global__ void x_stats_kernel(const T* xp, int64_t T_, int64_t N, int64_t G, int ndom,
                               const T* w, const double* inv_s, T eps, const T* gamma_x,
                               const T* beta_x, const T* beta_h, const T* bias, T* mean, T* var,
                               T* scale, T* shift) {
  // t on grid.x (up to 2^31 - 1 steps; grid.y stops at 65535), channel tiles on grid.y
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t t = blockIdx.x;
  if (c >= G) return;
  const T* col = xp + t * N * G + c;
  const T* w0 = w + t * N;
  const T* w1 = w + (T_ + t) * N;
  double a0 = 0.0, a1 = 0.0;
  for (int64_t j = 0; j < N; ++j) {
    const double v = static_cast<double>(col[j * G]);
    a0 += static_cast<double>(w0[j]) * v;
    if (ndom == 2) a1 += static_cast<double>(w1[j]) * v;
  }
  const T m0 = static_cast<T>(a0 * inv_s[t]);
  const T m1 = ndom == 2 ? static_cast<T>(a1 * inv_s[T_ + t]) : m0;
  a0 = a1 = 0.0;
  for (int64_t j = 0; j < N; ++j) {
    const double e0 = static_cast<double>(col[j * G] - m0);
    a0 += static_cast<double>(w0[j]) * e0 * e0;
    if (ndom == 2) {
      const double e1 = static_cast<double>(col[j * G] - m1);
      a1 += static_cast<double>(w1[j]) * e1 * e1;
    }
  }
  const T v0 = static_cast<T>(a0 * inv_s[t]);
  const T v1 = ndom == 2 ? static_cast<T>(a1 * inv_s[T_ + t]) : v0;
  const T ms[2] = {m0, m1}, vs[2] = {v0, v1};
  for (int d = 0; d < 2; ++d) {
    const T s = gamma_x[c] * rsqrt_d(vs[d] + eps);
    mean[(d * T_ + t) * G + c] = ms[d];
    var[(d * T_ + t) * G + c] = vs[d];
    scale[(t * 2 + d) * G + c] = s;
    shift[(t * 2 + d) * G + c] = beta_x[c] - ms[d] * s + beta_h[c] + bias[c];
  }
}

template <typename T, int ND>
__global__ void __launch_bounds__(kUnits * kRowGroups) fwd_step_kernel(FwdStepArgs<T> a) {
  __shared__ __align__(16) double sm[kRowGroups * kRedVals * kUnits];
  const int u = threadIdx.x, r = threadIdx.y;
  const int64_t H = a.H, G = 4 * H, N = a.N;
  const int64_t k = blockIdx.x * static_cast<int64_t>(kUnits) + u;
  const bool ok = k < H;
  const double is[2] = {*a.inv_s0, *a.inv_s1};

  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // [q * 2 + d]
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const double w0 = a.w0[j], w1 = ND == 2 ? static_cast<double>(a.w1[j]) : 0.0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const double v = a.gh[j * G + q * H + k];
        acc[q * 2] += w0 * v;
        if (ND == 2) acc[q * 2 + 1] += w1 * v;
      }
    }
  }
  reduce_rows<8>(acc, sm);
  T m[8], v[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) m[i] = static_cast<T>(acc[i] * is[i & 1]);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0;
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const double w0 = a.w0[j], w1 = ND == 2 ? static_cast<double>(a.w1[j]) : 0.0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const T x = a.gh[j * G + q * H + k];
        const double e0 = static_cast<double>(x - m[q * 2]);
        acc[q * 2] += w0 * e0 * e0;
        if (ND == 2) {
          const double e1 = static_cast<double>(x - m[q * 2 + 1]);
          acc[q * 2 + 1] += w1 * e1 * e1;
        }
      }
    }
  }
  reduce_rows<8>(acc, sm);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = static_cast<T>(acc[i] * is[i & 1]);
  T ah[8], bh[8];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
#pragma unroll
    for (int d = 0; d < 2; ++d) {
      const int s = q * 2 + (ND == 2 ? d : 0);
      const T gam = ok ? a.gamma_h[q * H + k] : T(0);
      ah[q * 2 + d] = gam * rsqrt_d(v[s] + a.eps);
      bh[q * 2 + d] = -m[s] * ah[q * 2 + d];
      if (ok && r == 0) {
        a.mean_h[d * a.dstride + q * H + k] = m[s];
        a.var_h[d * a.dstride + q * H + k] = v[s];
      }
    }
  }
  const double isc = *a.inv_sc;
  double cs[1] = {0.0};
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      T p[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t cix = q * H + k;
        p[q] = a.gh[j * G + cix] * ah[q * 2 + dom] + bh[q * 2 + dom] +
               a.xp[j * G + cix] * a.sx[dom * G + cix] + a.shx[dom * G + cix];
      }
      const T cv = cell::cell_state(sigm(p[0]), sigm(p[1]), tanh_d(p[2]), a.cprev[j * H + k]);
      a.c[j * H + k] = cv;
      a.h[j * H + k] = sigm(p[3]);  // o, until BN(c) is known
      cs[0] += static_cast<double>(a.wc[j]) * static_cast<double>(cv);
    }
  }
  reduce_rows<1>(cs, sm);
  const T mc = static_cast<T>(cs[0] * isc);
  double cvv[1] = {0.0};
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const double e = static_cast<double>(a.c[j * H + k] - mc);
      cvv[0] += static_cast<double>(a.wc[j]) * e * e;
    }
  }
  reduce_rows<1>(cvv, sm);
  if (!ok) return;  // no block-wide barrier below
  const T var = static_cast<T>(cvv[0] * isc);
  if (r == 0) {
    a.mean_c[k] = mc;
    a.var_c[k] = var;
  }
  const T sc = a.gamma_c[k] * rsqrt_d(var + a.eps), sb = a.beta_c[k] - mc * sc;
  for (int64_t j = r; j < N; j += kRowGroups)
    a.h[j * H + k] *= tanh_d(a.c[j * H + k] * sc + sb);
}

template <typename T, int ND>
__global__ void __launch_bounds__(kUnits * kRowGroups) bwd_step_kernel(BwdStepArgs<T> a) {
  __shared__ __align__(16) double sm[kRowGroups * kRedVals * kUnits];
  const int u = threadIdx.x, r = threadIdx.y;
  const int64_t H = a.H, G = 4 * H, N = a.N;
  const int64_t k = blockIdx.x * static_cast<int64_t>(kUnits) + u;
  const bool ok = k < H;
  const int64_t kk = ok ? k : 0;  // a safe column for parameter loads of idle lanes
  const double is0 = *a.inv_s0, is1 = *a.inv_s1, isc = *a.inv_sc;

  // Per-column constants, index q * 2 + d.
  T muh[8], rh[8], ah[8], mux[8], rx[8], ax[8], b0[8];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
#pragma unroll
    for (int d = 0; d < 2; ++d) {
      const int i = q * 2 + d;
      const int64_t c = q * H + kk;
      const int64_t s = (ND == 2 ? d : 0) * a.dstride + c;
      muh[i] = a.mean_h[s];
      rh[i] = rsqrt_d(a.var_h[s] + a.eps);
      ah[i] = a.gamma_h[c] * rh[i];
      mux[i] = a.mean_x[s];
      rx[i] = rsqrt_d(a.var_x[s] + a.eps);
      ax[i] = a.gamma_x[c] * rx[i];
      b0[i] = a.beta_h[c] + a.beta_x[c] + a.bias[c] - muh[i] * ah[i] - mux[i] * ax[i];
    }
  }
  const T mc = a.mean_c[kk], rc = rsqrt_d(a.var_c[kk] + a.eps), gc = a.gamma_c[kk], bc = a.beta_c[kk];

  // Pass A: gates recomputed, output-gate gradient, BN(c) backward sums over every row (each
  // row's output is normalised with the batch statistics).
  double s2[2] = {0.0, 0.0};  // sum dy, sum dy * c_hat
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      T g[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t cix = q * H + k;
        const T p = a.gh[j * G + cix] * ah[q * 2 + dom] + a.xp[j * G + cix] * ax[q * 2 + dom] + b0[q * 2 + dom];
        g[q] = q == 2 ? tanh_d(p) : sigm(p);
        a.act[j * G + cix] = g[q];
      }
      const T ch = (a.c[j * H + k] - mc) * rc;
      const T th = tanh_d(gc * ch + bc);
      const T dh = a.gout[j * H + k] + a.dhrec[j * H + k];
      a.da[j * G + 3 * H + k] = cell::gate_grad_o(dh, g[3], th);
      const T dyv = cell::grad_bn_c_out(dh, g[3], th);
      a.dy[j * H + k] = dyv;
      s2[0] += static_cast<double>(dyv);
      s2[1] += static_cast<double>(dyv * ch);
    }
  }
  reduce_rows<2>(s2, sm);
  if (ok && r == 0) {
    a.acc_beta_c[k] += s2[0];
    a.acc_gamma_c[k] += s2[1];
  }
  const T mg = gc * static_cast<T>(s2[0]), mgc = gc * static_cast<T>(s2[1]);

  // Pass B: dL/dc (a row reaches the BN(c) statistics only with its weight, 0 for padding),
  // gate gradients, per-domain DDBN sums (sg, sgh, sgx) of both paths.
  double sg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sgh[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double sgx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (ok) {
    for (int64_t j = r; j < N; j += kRowGroups) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      const T wcn = static_cast<T>(static_cast<double>(a.wc[j]) * isc);
      const T ch = (a.c[j * H + k] - mc) * rc;
      const T dcv = a.dc[j * H + k] + rc * (gc * a.dy[j * H + k] - wcn * (mg + ch * mgc));
      const T ig = a.act[j * G + k], fg = a.act[j * G + H + k], gg = a.act[j * G + 2 * H + k];
      T d4[4];
      cell::gate_grads_ifg(dcv, ig, fg, gg, a.cprev[j * H + k], &d4[0], &d4[1], &d4[2]);
      d4[3] = a.da[j * G + 3 * H + k];
      a.dc[j * H + k] = dcv * fg;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t cix = q * H + k;
        if (q < 3) a.da[j * G + cix] = d4[q];
        const int i = q * 2 + dom;
        sg[i] += static_cast<double>(d4[q]);
        sgh[i] += static_cast<double>(d4[q] * (a.gh[j * G + cix] - muh[i]));
        sgx[i] += static_cast<double>(d4[q] * (a.xp[j * G + cix] - mux[i]));
      }
    }
  }
  reduce_rows<8>(sg, sm);
  reduce_rows<8>(sgh, sm);
  reduce_rows<8>(sgx, sm);

  // dL/dz_k = a_D(k) g_k + sum_d wn_d(k) (K_d + L_d z_k); S_d dL/dw_d(k) = sum_c P_d (z_k - mu_d)
  // + D_d ((z_k - mu_d)^2 - var_d), with P = dL/dmu and D = dL/dvar.
  T Ph[8], Dh[8], Kh[8], Lh[8], Px[8], Dx[8], Kx[8], Lx[8];
  double cst[2] = {0.0, 0.0};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int64_t c = q * H + kk;
    double bias_g = 0.0, gam_h = 0.0, gam_x = 0.0;
#pragma unroll
    for (int d = 0; d < 2; ++d) {
      const int i = q * 2 + d;
      const T sgT = static_cast<T>(sg[i]), sghT = static_cast<T>(sgh[i]), sgxT = static_cast<T>(sgx[i]);
      const cell::DdbnCoef<T> ch = cell::ddbn_coef(a.gamma_h[c], rh[i], muh[i], sgT, sghT);
      const cell::DdbnCoef<T> cx = cell::ddbn_coef(a.gamma_x[c], rx[i], mux[i], sgT, sgxT);
      Ph[i] = ch.P; Dh[i] = ch.Dv; Lh[i] = ch.L; Kh[i] = ch.K;
      Px[i] = cx.P; Dx[i] = cx.Dv; Lx[i] = cx.L; Kx[i] = cx.K;
      if (d < ND) {
        bias_g += sg[i];
        gam_h += sgh[i] * static_cast<double>(rh[i]);
        gam_x += sgx[i] * static_cast<double>(rx[i]);
      }
      if (ND == 2 && ok) {
        const int64_t s = d * a.dstride + c;
        cst[d] -= static_cast<double>(Dh[i] * a.var_h[s]) + static_cast<double>(Dx[i] * a.var_x[s]);
      }
    }
    if (ok && r == 0) {
      a.acc_bias[c] += bias_g;
      a.acc_gamma_h[c] += gam_h;
      a.acc_gamma_x[c] += gam_x;
    }
  }

  // Pass C: input gradients of both DDBNs; per-row weight partials summed over the tile's units
  // with shuffles (the kUnits lanes of one row group are adjacent lanes of one warp).
  for (int64_t j0 = 0; j0 < N; j0 += kRowGroups) {
    const int64_t j = j0 + r;
    double t0 = 0.0, t1 = 0.0;
    if (ok && j < N) {
      const int dom = (ND == 2 && j >= a.n1) ? 1 : 0;
      const T w0 = static_cast<T>(static_cast<double>(a.w0[j]) * is0);
      const T w1 = ND == 2 ? static_cast<T>(static_cast<double>(a.w1[j]) * is1) : T(0);
      T p0 = 0, p1 = 0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t cix = q * H + k;
        const T hv = a.gh[j * G + cix], xv = a.xp[j * G + cix], gv = a.da[j * G + cix];
        const int i0 = q * 2, i1 = q * 2 + 1, id = q * 2 + dom;
        T dh = ah[id] * gv + w0 * (Kh[i0] + Lh[i0] * hv);
        T dx = ax[id] * gv + w0 * (Kx[i0] + Lx[i0] * xv);
        if (ND == 2) {
          dh += w1 * (Kh[i1] + Lh[i1] * hv);
          dx += w1 * (Kx[i1] + Lx[i1] * xv);
          const T eh0 = hv - muh[i0], eh1 = hv - muh[i1], ex0 = xv - mux[i0], ex1 = xv - mux[i1];
          p0 += (Ph[i0] + Dh[i0] * eh0) * eh0 + (Px[i0] + Dx[i0] * ex0) * ex0;
          p1 += (Ph[i1] + Dh[i1] * eh1) * eh1 + (Px[i1] + Dx[i1] * ex1) * ex1;
        }
        a.dgh[j * G + cix] = dh;
        a.dxp[j * G + cix] = dx;
      }
      t0 = static_cast<double>(p0) + cst[0];
      t1 = static_cast<double>(p1) + cst[1];
    }
    if (ND == 2) {
#pragma unroll
      for (int off = kUnits / 2; off > 0; off >>= 1) {
        t0 += __shfl_xor_sync(0xffffffffu, t0, off, kUnits);
        t1 += __shfl_xor_sync(0xffffffffu, t1, off, kUnits);
      }
      if (u == 0 && j < N) {
        double* part = a.dw_part + static_cast<int64_t>(blockIdx.x) * 2 * N;
        part[j] = t0;
        part[N + j] = t1;
      }
    }
  }
}

// One thread per row j: dL/dw[d, t, j] = inv_s_d(t) * sum over tiles of the step's partials.
template <typename T>
__global__ void w_grad_step_kernel(const double* part, int64_t ntiles, int64_t N,
                                   const double* inv_s0, const double* inv_s1, T* g0, T* g1) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= N) return;
  double s0 = 0.0, s1 = 0.0;
  for (int64_t b = 0; b < ntiles; ++b) {
    s0 += part[(b * 2) * N + j];
    s1 += part[(b * 2 + 1) * N + j];
  }
  g0[j] = static_cast<T>(s0 * *inv_s0);
  g1[j] = static_cast<T>(s1 * *inv_s1);
}

}  // namespace

template <typename T>
void launch_inv_sums(const T* w, int64_t rows, int64_t N, double* inv, cudaStream_t s) {
  inv_sums_kernel<T><<<static_cast<unsigned>(rows), 256, 0, s>>>(w, N, inv);
}

template <typename T>
void launch_x_stats(const T* xp, int64_t T_, int64_t N, int64_t G, int ndom, const T* w,
                    const double* inv_s, T eps, const T* gamma_x, const T* beta_x,
                    const T* beta_h, const T* bias, T* mean, T* var, T* scale, T* shift,
                    cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(T_), static_cast<unsigned>((G + 255) / 256));
  x_stats_kernel<T><<<grid, 256, 0, s>>>(xp, T_, N, G, ndom, w, inv_s, eps, gamma_x, beta_x,
                                         beta_h, bias, mean, var, scale, shift);
}

template <typename T>
void launch_fwd_step(const FwdStepArgs<T>& a, int ndom, cudaStream_t s) {
  const dim3 block(kUnits, kRowGroups);
  const unsigned grid = static_cast<unsigned>(num_tiles(a.H));
  if (ndom == 2)
    fwd_step_kernel<T, 2><<<grid, block, 0, s>>>(a);
  else
    fwd_step_kernel<T, 1><<<grid, block, 0, s>>>(a);
}

template <typename T>
void launch_bwd_step(const BwdStepArgs<T>& a, int ndom, cudaStream_t s) {
  const dim3 block(kUnits, kRowGroups);
  const unsigned grid = static_cast<unsigned>(num_tiles(a.H));
  if (ndom == 2)
    bwd_step_kernel<T, 2><<<grid, block, 0, s>>>(a);
  else
    bwd_step_kernel<T, 1><<<grid, block, 0, s>>>(a);
}

template <typename T>
void launch_w_grad_step(const double* part, int64_t ntiles, int64_t N, const double* inv_s0,
                        const double* inv_s1, T* g0, T* g1, cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>((N + 255) / 256);
  w_grad_step_kernel<T><<<grid, 256, 0, s>>>(part, ntiles, N, inv_s0, inv_s1, g0, g1);
}

template <typename T>
__global__ void eval_step_kernel(EvalStepArgs<T> a) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.N * a.H) return;
  const int64_t j = i / a.H, k = i % a.H, G = 4 * a.H;
  const int64_t off = a.domain[j] * a.dstride;
  T g[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int64_t c = q * a.H + k;
    const T p = a.gh[j * G + c] * a.scale_h[off + c] + a.xp[j * G + c] * a.scale_x[off + c] +
                a.shift[off + c];
    g[q] = q == 2 ? tanh_d(p) : sigm(p);
  }
  const T cv = cell::cell_state(g[0], g[1], g[2], a.cprev[i]);
  a.c[i] = cv;
  a.h[i] = g[3] * tanh_d(cv * a.scale_c[k] + a.shift_c[k]);
}

template <typename T>
void launch_eval_step(const EvalStepArgs<T>& a, cudaStream_t s) {
  const int64_t n = a.N * a.H;
  const unsigned grid = static_cast<unsigned>((n + 255) / 256);
  eval_step_kernel<T><<<grid, 256, 0, s>>>(a);
}

#define ACTREC_INSTANTIATE(T)                                                                   \
  template void launch_inv_sums<T>(const T*, int64_t, int64_t, double*, cudaStream_t);          \
  template void launch_x_stats<T>(const T*, int64_t, int64_t, int64_t, int, const T*,           \
                                  const double*, T, const T*, const T*, const T*, const T*, T*, \
                                  T*, T*, T*, cudaStream_t);                                    \
  template void launch_fwd_step<T>(const FwdStepArgs<T>&, int, cudaStream_t);                   \
  template void launch_bwd_step<T>(const BwdStepArgs<T>&, int, cudaStream_t);                   \
  template void launch_w_grad_step<T>(const double*, int64_t, int64_t, const double*,           \
                                      const double*, T*, T*, cudaStream_t);              \
  template void launch_eval_step<T>(const EvalStepArgs<T>&, cudaStream_t);

ACTREC_INSTANTIATE(float)
ACTREC_INSTANTIATE(double)
#undef ACTREC_INSTANTIATE

}  // namespace ddlstm_cuda
}  // namespace actrec
