// CUDA kernels of the DDBN (declarations and argument layout in ddbn_kernels.cuh).
//
// One block per (timestep t, tile of kTile channels), kWarps warps. Each block owns every batch
// row of its channels, so all reductions are block-local: no atomics, no grid synchronisation,
// deterministic results. The tile's [N, kTile] slice is staged in shared memory (padded rows
// against bank conflicts) when it fits; above that size the same loops read global memory.
// Statistics: warp w reduces channels w, w + kWarps, ... over the rows with warp shuffles,
// exact two-pass (mean, then centred squares). Accumulation is in float (double for float64).

#include "ddbn_kernels.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace actrec {
namespace cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kPitch = kTile + 1;  // staged row pitch: column reads by a warp hit distinct banks
constexpr size_t kSmemLimit = 44 * 1024;  // dynamic part: 48 KB without opt-in, less static

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }

template <typename A> __device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Shared scratch of the weights: tau [2N] (and kappa [2N] for the backward), followed by the
// staged slices. Aligned for double.
extern __shared__ double smem_words[];

// Row weights of both domains into shared memory, and per domain S_i and the unbiasing factor
// n_eff / (n_eff - 1). A single-domain batch (n1 = 0 or N) gets unit weights for the present
// domain and zero for the absent one (exact plain BN); `present` says which (-1: both).
template <typename A>
__device__ void make_weights(const A* alpha, int64_t n, int64_t n1, int present, A* tau, A* kappa,
                             A* s_out, A* unbias_out) {
  __shared__ A red[kWarps][4];
  const A nn = static_cast<A>(n);
  const A a1 = alpha[0], a2 = alpha[1];
  A acc[4] = {0, 0, 0, 0};  // S_1, S_2, sum tau_1^2, sum tau_2^2
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    A t0, t1, k0 = 0, k1 = 0;
    if (present >= 0) {
      t0 = present == 0 ? A(1) : A(0);
      t1 = A(1) - t0;
    } else {
      const A jj = static_cast<A>(j + 1);  // the spec's rows are 1-based
      const A th1 = tanh(jj - a1 * nn), th2 = tanh(jj - (A(1) - a2) * nn);
      t0 = (A(1) - th1) / A(2);
      t1 = (A(1) + th2) / A(2);
      k0 = nn / A(2) * (A(1) - th1 * th1);
      k1 = nn / A(2) * (A(1) - th2 * th2);
    }
    tau[j] = t0;
    tau[n + j] = t1;
    if (kappa) {
      kappa[j] = k0;
      kappa[n + j] = k1;
    }
    acc[0] += t0;
    acc[1] += t1;
    acc[2] += t0 * t0;
    acc[3] += t1 * t1;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int i = 0; i < 4; ++i) {
    const A v = warp_sum(acc[i]);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  A tot[4] = {0, 0, 0, 0};
  for (int w = 0; w < kWarps; ++w)
    for (int i = 0; i < 4; ++i) tot[i] += red[w][i];
  for (int i = 0; i < 2; ++i) {
    if (present >= 0) {
      s_out[i] = nn;
      unbias_out[i] = n > 1 ? nn / (nn - A(1)) : A(1);
    } else {
      s_out[i] = tot[i];
      const A n_eff = tot[i] * tot[i] / tot[2 + i];
      unbias_out[i] = n_eff > A(1) ? n_eff / (n_eff - A(1)) : A(1);
    }
  }
}

__host__ __device__ inline int present_domain(int64_t n, int64_t n1) {
  return n1 == n ? 0 : (n1 == 0 ? 1 : -1);
}

// ------------------------------------------------------------------------------------------

template <typename T, bool kStaged>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardArgs a) {
  using A = typename AccOf<T>::type;
  const int64_t N = a.N, C = a.C, T_ = a.T, n1 = a.n1;
  const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int present = present_domain(N, n1);
  A* tau = reinterpret_cast<A*>(smem_words);  // [2N]
  A* xs = tau + 2 * N;                        // [N][kPitch] when staged
  __shared__ A mu_s[2][kTile], sc_s[2][kTile];
  A s[2], unbias[2];
  make_weights<A>(static_cast<const A*>(a.alpha), N, n1, present, tau, nullptr, s, unbias);

  const T* x = static_cast<const T*>(a.h) + t * N * C;
  if (kStaged) {  // coalesced: consecutive threads read consecutive channels of a row
    for (int64_t i = threadIdx.x; i < N * kTile; i += kThreads) {
      const int64_t j = i / kTile, cc = i % kTile;
      xs[j * kPitch + cc] = c0 + cc < C ? to_acc(x[j * C + c0 + cc]) : A(0);
    }
  }
  __syncthreads();
  auto load = [&](int64_t j, int cc) -> A {
    return kStaged ? xs[j * kPitch + cc] : to_acc(x[j * C + c0 + cc]);
  };
  const A* gamma = static_cast<const A*>(a.gamma);
  const A eps = static_cast<A>(a.eps);
  for (int cc = warp; cc < kTile; cc += kWarps) {
    const int64_t c = c0 + cc;
    if (c >= C) continue;  // warp-uniform
    A p0 = 0, p1 = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const A v = load(j, cc);
      p0 += tau[j] * v;
      p1 += tau[N + j] * v;
    }
    A m0 = warp_sum(p0) / s[0], m1 = warp_sum(p1) / s[1];
    A q0 = 0, q1 = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const A v = load(j, cc);
      const A d0 = v - m0, d1 = v - m1;
      q0 += tau[j] * d0 * d0;
      q1 += tau[N + j] * d1 * d1;
    }
    A v0 = warp_sum(q0) / s[0], v1 = warp_sum(q1) / s[1];
    if (present == 0) {  // plain BN: both slots hold the batch statistics
      m1 = m0;
      v1 = v0;
    } else if (present == 1) {
      m0 = m1;
      v0 = v1;
    }
    if (lane == 0) {
      const A r0 = A(1) / sqrt(v0 + eps), r1 = A(1) / sqrt(v1 + eps);
      A* mean = static_cast<A*>(a.mean);
      A* rstd = static_cast<A*>(a.rstd);
      mean[t * C + c] = m0;
      mean[(T_ + t) * C + c] = m1;
      rstd[t * C + c] = r0;
      rstd[(T_ + t) * C + c] = r1;
      if (a.running_mean && t < a.t_max) {  // fused running update; single domain: own slot
        A* rm = static_cast<A*>(a.running_mean);
        A* rv = static_cast<A*>(a.running_var);
        const A mo = static_cast<A>(a.momentum);
        const A ms[2] = {m0, m1}, vs[2] = {v0, v1};
        for (int d = 0; d < 2; ++d) {
          if (present == 1 - d) continue;
          const int64_t o = (d * a.t_max + t) * C + c;
          rm[o] = (A(1) - mo) * rm[o] + mo * ms[d];
          rv[o] = (A(1) - mo) * rv[o] + mo * vs[d] * unbias[d];
        }
      }
      mu_s[0][cc] = m0;
      mu_s[1][cc] = m1;
      sc_s[0][cc] = gamma[c] * r0;
      sc_s[1][cc] = gamma[c] * r1;
    }
  }
  __syncthreads();
  const A* beta = static_cast<const A*>(a.beta);
  T* y = static_cast<T*>(a.y) + t * N * C;
  for (int64_t i = threadIdx.x; i < N * kTile; i += kThreads) {
    const int64_t j = i / kTile;
    const int cc = static_cast<int>(i % kTile);
    const int64_t c = c0 + cc;
    if (c >= C) continue;
    const int d = j < n1 ? 0 : 1;
    y[j * C + c] = from_acc<T>((load(j, cc) - mu_s[d][cc]) * sc_s[d][cc] + beta[c]);
  }
}

// ------------------------------------------------------------------------------------------
// Backward (spec, "Gradients"): per channel and domain i, A_i = sum_{j in D_i} g_j and
// B_i = sum_{j in D_i} g_j (h_j - mu_i); dmu_i = -gamma r_i A_i, dv_i = -gamma r_i^3 B_i / 2;
// dh_k = g_k gamma r_d(k) + sum_i tau_i(k) (p_i + q_i (h_k - mu_i)) with p = dmu/S, q = 2 dv/S;
// dtau_i(k) = sum_c p_i e + u_i e^2 + k_i (e = h_k - mu_i, u = dv/S, k = -dv var/S), and
// dalpha_i = sum_k kappa_i(k) dtau_i(k), reduced here per block.

template <typename T, bool kStaged>
__global__ void __launch_bounds__(kThreads) backward_kernel(BackwardArgs a) {
  using A = typename AccOf<T>::type;
  const int64_t N = a.N, C = a.C, T_ = a.T, n1 = a.n1;
  const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int present = present_domain(N, n1);
  A* tau = reinterpret_cast<A*>(smem_words);  // [2N]
  A* kappa = tau + 2 * N;                     // [2N]
  A* xs = kappa + 2 * N;                      // [N][kPitch] when staged
  A* gs = xs + N * kPitch;                    // [N][kPitch] when staged
  __shared__ A co_mu[2][kTile], co_own[2][kTile], co_p[2][kTile], co_q[2][kTile],
      co_u[2][kTile], co_k[2][kTile];
  __shared__ A dal[kWarps][2];
  A s[2], unbias[2];
  make_weights<A>(static_cast<const A*>(a.alpha), N, n1, present, tau, kappa, s, unbias);

  const T* x = static_cast<const T*>(a.h) + t * N * C;
  const T* g = static_cast<const T*>(a.grad_y) + t * N * C;
  if (kStaged) {
    for (int64_t i = threadIdx.x; i < N * kTile; i += kThreads) {
      const int64_t j = i / kTile, cc = i % kTile;
      const bool ok = c0 + cc < C;
      xs[j * kPitch + cc] = ok ? to_acc(x[j * C + c0 + cc]) : A(0);
      gs[j * kPitch + cc] = ok ? to_acc(g[j * C + c0 + cc]) : A(0);
    }
  }
  __syncthreads();
  auto load_x = [&](int64_t j, int cc) -> A {
    return kStaged ? xs[j * kPitch + cc] : to_acc(x[j * C + c0 + cc]);
  };
  auto load_g = [&](int64_t j, int cc) -> A {
    return kStaged ? gs[j * kPitch + cc] : to_acc(g[j * C + c0 + cc]);
  };
  const A* gamma = static_cast<const A*>(a.gamma);
  const A* mean = static_cast<const A*>(a.mean);
  const A* rstd = static_cast<const A*>(a.rstd);
  const A eps = static_cast<A>(a.eps);
  for (int cc = warp; cc < kTile; cc += kWarps) {  // reduction pass
    const int64_t c = c0 + cc;
    if (c >= C) {  // padding channels: zero coefficients, so they add nothing below
      if (lane == 0)
        for (int i = 0; i < 2; ++i)
          co_mu[i][cc] = co_own[i][cc] = co_p[i][cc] = co_q[i][cc] = co_u[i][cc] = co_k[i][cc] = 0;
      continue;
    }
    const A m[2] = {mean[t * C + c], mean[(T_ + t) * C + c]};
    const A r[2] = {rstd[t * C + c], rstd[(T_ + t) * C + c]};
    A sa[2] = {0, 0}, sb[2] = {0, 0};
    for (int64_t j = lane; j < N; j += 32) {
      const int d = j < n1 ? 0 : 1;
      const A gv = load_g(j, cc);
      sa[d] += gv;
      sb[d] += gv * (load_x(j, cc) - m[d]);
    }
    for (int i = 0; i < 2; ++i) {
      sa[i] = warp_sum(sa[i]);
      sb[i] = warp_sum(sb[i]);
    }
    if (lane == 0) {
      static_cast<A*>(a.dgamma_t)[t * C + c] = sb[0] * r[0] + sb[1] * r[1];
      static_cast<A*>(a.dbeta_t)[t * C + c] = sa[0] + sa[1];
      for (int i = 0; i < 2; ++i) {
        const A dmu = -gamma[c] * r[i] * sa[i];
        const A dv = -A(0.5) * gamma[c] * r[i] * r[i] * r[i] * sb[i];
        const A var = A(1) / (r[i] * r[i]) - eps;
        co_mu[i][cc] = m[i];
        co_own[i][cc] = gamma[c] * r[i];
        co_p[i][cc] = dmu / s[i];
        co_q[i][cc] = A(2) * dv / s[i];
        co_u[i][cc] = dv / s[i];
        co_k[i][cc] = -dv * var / s[i];
      }
    }
  }
  __syncthreads();
  // Element-wise pass: warp w takes rows w, w + kWarps, ...; lane = channel (coalesced).
  T* dx = static_cast<T*>(a.grad_h) + t * N * C;
  const int64_t c = c0 + lane;
  const bool valid = c < C;
  A da0 = 0, da1 = 0;
  for (int64_t j = warp; j < N; j += kWarps) {
    A s0 = 0, s1 = 0;
    if (valid) {
      const int d = j < n1 ? 0 : 1;
      const A xv = load_x(j, lane), gv = load_g(j, lane);
      const A e0 = xv - co_mu[0][lane], e1 = xv - co_mu[1][lane];
      const A v = gv * co_own[d][lane] + tau[j] * (co_p[0][lane] + co_q[0][lane] * e0) +
                  tau[N + j] * (co_p[1][lane] + co_q[1][lane] * e1);
      dx[j * C + c] = from_acc<T>(v);
      s0 = co_p[0][lane] * e0 + co_u[0][lane] * e0 * e0 + co_k[0][lane];
      s1 = co_p[1][lane] * e1 + co_u[1][lane] * e1 * e1 + co_k[1][lane];
    }
    da0 += kappa[j] * warp_sum(s0);  // every lane holds the row's sum over the tile
    da1 += kappa[N + j] * warp_sum(s1);
  }
  if (lane == 0) {
    dal[warp][0] = da0;
    dal[warp][1] = da1;
  }
  __syncthreads();
  if (threadIdx.x < 2) {
    A v = 0;
    for (int w = 0; w < kWarps; ++w) v += dal[w][threadIdx.x];
    const int64_t blk = t * gridDim.y + blockIdx.y;
    static_cast<A*>(a.dalpha_part)[blk * 2 + threadIdx.x] = v;
  }
}

// ------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads) eval_kernel(EvalArgs a) {
  using A = typename AccOf<T>::type;
  const int64_t total = a.T * a.N * a.C;
  const T* x = static_cast<const T*>(a.h);
  T* y = static_cast<T*>(a.y);
  const A* rm = static_cast<const A*>(a.running_mean);
  const A* rv = static_cast<const A*>(a.running_var);
  const A* gamma = static_cast<const A*>(a.gamma);
  const A* beta = static_cast<const A*>(a.beta);
  const A eps = static_cast<A>(a.eps);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % a.C, j = (i / a.C) % a.N, t = i / (a.C * a.N);
    const int64_t tt = t < a.t_max ? t : a.t_max - 1;  // later timesteps: the last trained one
    const int64_t o = ((a.domain[j] != 0 ? 1 : 0) * a.t_max + tt) * a.C + c;  // nonzero: D2
    y[i] = from_acc<T>((to_acc(x[i]) - rm[o]) / sqrt(rv[o] + eps) * gamma[c] + beta[c]);
  }
}

// ------------------------------------------------------------------------------------------

template <typename T>
cudaError_t launch_forward(const ForwardArgs& a, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  if (a.N < 1 || a.N > kMaxBatch) return cudaErrorInvalidValue;
  if (a.T == 0 || a.C == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(channel_tiles(a.C)));
  const size_t weights = 2 * a.N * sizeof(A);
  const size_t staged = weights + a.N * kPitch * sizeof(A);
  if (staged <= kSmemLimit)
    forward_kernel<T, true><<<grid, kThreads, staged, stream>>>(a);
  else
    forward_kernel<T, false><<<grid, kThreads, weights, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const BackwardArgs& a, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  if (a.N < 1 || a.N > kMaxBatch) return cudaErrorInvalidValue;
  if (a.T == 0 || a.C == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(channel_tiles(a.C)));
  const size_t weights = 4 * a.N * sizeof(A);
  const size_t staged = weights + 2 * a.N * kPitch * sizeof(A);
  if (staged <= kSmemLimit)
    backward_kernel<T, true><<<grid, kThreads, staged, stream>>>(a);
  else
    backward_kernel<T, false><<<grid, kThreads, weights, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_eval(const EvalArgs& a, cudaStream_t stream) {
  const int64_t total = a.T * a.N * a.C;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  eval_kernel<T><<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t ddbn_forward(DType dtype, const ForwardArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return launch_forward<float>(args, stream);
    case DType::kFloat64: return launch_forward<double>(args, stream);
    case DType::kFloat16: return launch_forward<__half>(args, stream);
    case DType::kBFloat16: return launch_forward<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t ddbn_backward(DType dtype, const BackwardArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return launch_backward<float>(args, stream);
    case DType::kFloat64: return launch_backward<double>(args, stream);
    case DType::kFloat16: return launch_backward<__half>(args, stream);
    case DType::kBFloat16: return launch_backward<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t ddbn_eval(DType dtype, const EvalArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return launch_eval<float>(args, stream);
    case DType::kFloat64: return launch_eval<double>(args, stream);
    case DType::kFloat16: return launch_eval<__half>(args, stream);
    case DType::kBFloat16: return launch_eval<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace actrec
