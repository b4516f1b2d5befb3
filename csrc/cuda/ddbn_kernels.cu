// CUDA kernels of the DDBN (declarations and argument layout in ddbn_kernels.cuh).
//
// One block per (timestep t, tile of kTile channels), kWarps warps. Each block owns every batch
// row of its channels, so all reductions are block-local: no atomics, no grid synchronisation,
// deterministic results. The block first copies timestep t's weights w[:, t, :] into shared
// memory and sums them (S_i, in double); the tile's [N, kTile] slice is staged in shared memory
// (padded rows against bank conflicts) when it fits; above that size the same loops read global
// memory. Statistics: warp w reduces channels w, w + kWarps, ... over the rows with warp
// shuffles, exact two-pass (mean, then centred squares), accumulating in double. Where a
// domain has no weight at t (S_i = 0: all its rows are padding) its sums are divided by 1, so
// mean = var = 0 and everything stays finite, as in the reference.

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

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Shared scratch: timestep t's weights ws [2N] (ws[i N + j] = w[i, t, j]), followed by the
// staged slices. Aligned for double.
extern __shared__ double smem_words[];

// Copies w[:, t, :] into ws and returns 1 / S_i(t) in inv_s (double; 1 where S_i(t) <= 0).
// Ends with a barrier, so ws is visible to the whole block.
template <typename A>
__device__ void load_weights(const A* w, int64_t T, int64_t n, int64_t t, A* ws,
                             double* inv_s) {
  __shared__ double red[kWarps][2];
  double acc[2] = {0, 0};
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const A w0 = w[t * n + j], w1 = w[(T + t) * n + j];
    ws[j] = w0;
    ws[n + j] = w1;
    acc[0] += static_cast<double>(w0);
    acc[1] += static_cast<double>(w1);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int i = 0; i < 2; ++i) {
    const double v = warp_sum(acc[i]);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  for (int i = 0; i < 2; ++i) {
    double s = 0;
    for (int k = 0; k < kWarps; ++k) s += red[k][i];
    inv_s[i] = s > 0 ? 1.0 / s : 1.0;
  }
}

// ------------------------------------------------------------------------------------------

template <typename T, bool kStaged>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardArgs a) {
  using A = typename AccOf<T>::type;
  const int64_t N = a.N, C = a.C, T_ = a.T, n1 = a.n1;
  const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  A* ws = reinterpret_cast<A*>(smem_words);  // [2N]
  A* xs = ws + 2 * N;                        // [N][kPitch] when staged
  __shared__ A mu_s[2][kTile], sc_s[2][kTile];

  const T* x = static_cast<const T*>(a.h) + t * N * C;
  if (kStaged) {  // coalesced: consecutive threads read consecutive channels of a row
    for (int64_t i = threadIdx.x; i < N * kTile; i += kThreads) {
      const int64_t j = i / kTile, cc = i % kTile;
      xs[j * kPitch + cc] = c0 + cc < C ? to_acc(x[j * C + c0 + cc]) : A(0);
    }
  }
  double inv_s[2];
  load_weights<A>(static_cast<const A*>(a.weights), T_, N, t, ws, inv_s);  // barrier inside
  auto load = [&](int64_t j, int cc) -> double {
    return static_cast<double>(kStaged ? xs[j * kPitch + cc] : to_acc(x[j * C + c0 + cc]));
  };
  const A* gamma = static_cast<const A*>(a.gamma);
  for (int cc = warp; cc < kTile; cc += kWarps) {
    const int64_t c = c0 + cc;
    if (c >= C) continue;  // warp-uniform
    double p0 = 0, p1 = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const double v = load(j, cc);
      p0 += static_cast<double>(ws[j]) * v;
      p1 += static_cast<double>(ws[N + j]) * v;
    }
    const double m0 = warp_sum(p0) * inv_s[0], m1 = warp_sum(p1) * inv_s[1];
    double q0 = 0, q1 = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const double v = load(j, cc);
      const double d0 = v - m0, d1 = v - m1;
      q0 += static_cast<double>(ws[j]) * d0 * d0;  // (w d) d: a zero weight adds exactly 0
      q1 += static_cast<double>(ws[N + j]) * d1 * d1;
    }
    const double v0 = warp_sum(q0) * inv_s[0], v1 = warp_sum(q1) * inv_s[1];
    if (lane == 0) {
      A* mean = static_cast<A*>(a.mean);
      A* var = static_cast<A*>(a.var);
      mean[t * C + c] = static_cast<A>(m0);
      mean[(T_ + t) * C + c] = static_cast<A>(m1);
      var[t * C + c] = static_cast<A>(v0);
      var[(T_ + t) * C + c] = static_cast<A>(v1);
      const double g = static_cast<double>(gamma[c]);
      mu_s[0][cc] = static_cast<A>(m0);
      mu_s[1][cc] = static_cast<A>(m1);
      sc_s[0][cc] = static_cast<A>(g / sqrt(v0 + a.eps));
      sc_s[1][cc] = static_cast<A>(g / sqrt(v1 + a.eps));
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
    const A v = kStaged ? xs[j * kPitch + cc] : to_acc(x[j * C + c]);
    y[j * C + c] = from_acc<T>((v - mu_s[d][cc]) * sc_s[d][cc] + beta[c]);
  }
}

// ------------------------------------------------------------------------------------------
// Backward (spec, "Gradients"): per channel and domain i, A_i = sum_{j in D_i} g_j and
// B_i = sum_{j in D_i} g_j (h_j - mu_i); dmu_i = -gamma r_i A_i, dv_i = -gamma r_i^3 B_i / 2;
// dh_k = g_k gamma r_d(k) + sum_i w_ik (p_i + q_i (h_k - mu_i)) with p = dmu/S, q = 2 dv/S;
// dw_ik = sum_c p_i e + u_i e^2 + k_i (e = h_k - mu_i, u = dv/S, k = -dv var/S), summed here
// over the block's channels into its own slot of dw_part.

template <typename T, bool kStaged>
__global__ void __launch_bounds__(kThreads) backward_kernel(BackwardArgs a) {
  using A = typename AccOf<T>::type;
  const int64_t N = a.N, C = a.C, T_ = a.T, n1 = a.n1;
  const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  A* ws = reinterpret_cast<A*>(smem_words);  // [2N]
  A* xs = ws + 2 * N;                        // [N][kPitch] when staged
  A* gs = xs + N * kPitch;                   // [N][kPitch] when staged
  __shared__ A co_mu[2][kTile], co_own[2][kTile], co_p[2][kTile], co_q[2][kTile],
      co_u[2][kTile], co_k[2][kTile];

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
  double inv_s[2];
  load_weights<A>(static_cast<const A*>(a.weights), T_, N, t, ws, inv_s);  // barrier inside
  auto load_x = [&](int64_t j, int cc) -> A {
    return kStaged ? xs[j * kPitch + cc] : to_acc(x[j * C + c0 + cc]);
  };
  auto load_g = [&](int64_t j, int cc) -> A {
    return kStaged ? gs[j * kPitch + cc] : to_acc(g[j * C + c0 + cc]);
  };
  const A* gamma = static_cast<const A*>(a.gamma);
  const A* mean = static_cast<const A*>(a.mean);
  const A* var = static_cast<const A*>(a.var);
  for (int cc = warp; cc < kTile; cc += kWarps) {  // reduction pass
    const int64_t c = c0 + cc;
    if (c >= C) {  // padding channels: zero coefficients, so they add nothing below
      if (lane == 0)
        for (int i = 0; i < 2; ++i)
          co_mu[i][cc] = co_own[i][cc] = co_p[i][cc] = co_q[i][cc] = co_u[i][cc] = co_k[i][cc] = 0;
      continue;
    }
    const double m[2] = {static_cast<double>(mean[t * C + c]),
                         static_cast<double>(mean[(T_ + t) * C + c])};
    double sa[2], sb[2];
#pragma unroll
    for (int d = 0; d < 2; ++d) {  // the rows of domain d: 0..n1-1, then n1..N-1
      double pa = 0, pb = 0;
      for (int64_t j = (d == 0 ? 0 : n1) + lane; j < (d == 0 ? n1 : N); j += 32) {
        const double gv = static_cast<double>(load_g(j, cc));
        pa += gv;
        pb += gv * (static_cast<double>(load_x(j, cc)) - m[d]);
      }
      sa[d] = warp_sum(pa);
      sb[d] = warp_sum(pb);
    }
    if (lane == 0) {
      const double gm = static_cast<double>(gamma[c]);
      double dg = 0;
      for (int i = 0; i < 2; ++i) {
        const double v = static_cast<double>(var[(i * T_ + t) * C + c]);
        const double r = 1.0 / sqrt(v + a.eps);
        const double dmu = -gm * r * sa[i];
        const double dv = -0.5 * gm * r * r * r * sb[i];  // B here is sum g (h - mu)
        dg += sb[i] * r;  // sum_j g_j xhat_j
        co_mu[i][cc] = static_cast<A>(m[i]);
        co_own[i][cc] = static_cast<A>(gm * r);
        co_p[i][cc] = static_cast<A>(dmu * inv_s[i]);
        co_q[i][cc] = static_cast<A>(2 * dv * inv_s[i]);
        co_u[i][cc] = static_cast<A>(dv * inv_s[i]);
        co_k[i][cc] = static_cast<A>(-dv * v * inv_s[i]);
      }
      a.dgamma_t[t * C + c] = dg;
      a.dbeta_t[t * C + c] = sa[0] + sa[1];
    }
  }
  __syncthreads();
  // Element-wise pass: warp w takes rows w, w + kWarps, ...; lane = channel (coalesced).
  T* dx = static_cast<T*>(a.grad_h) + t * N * C;
  double* part = a.dw_part + (t * gridDim.y + blockIdx.y) * 2 * N;  // [2, N] of this block
  const int64_t c = c0 + lane;
  const bool valid = c < C;
  for (int64_t j = warp; j < N; j += kWarps) {
    A s0 = 0, s1 = 0;
    if (valid) {
      const int d = j < n1 ? 0 : 1;
      const A xv = load_x(j, lane), gv = load_g(j, lane);
      const A e0 = xv - co_mu[0][lane], e1 = xv - co_mu[1][lane];
      const A v = gv * co_own[d][lane] + ws[j] * (co_p[0][lane] + co_q[0][lane] * e0) +
                  ws[N + j] * (co_p[1][lane] + co_q[1][lane] * e1);
      dx[j * C + c] = from_acc<T>(v);
      s0 = co_p[0][lane] * e0 + co_u[0][lane] * e0 * e0 + co_k[0][lane];
      s1 = co_p[1][lane] * e1 + co_u[1][lane] * e1 * e1 + co_k[1][lane];
    }
    const double r0 = warp_sum(static_cast<double>(s0));  // the row's sum over the tile
    const double r1 = warp_sum(static_cast<double>(s1));
    if (lane == 0) {
      part[j] = r0;
      part[N + j] = r1;
    }
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
    // Flags are checked to be 0/1 before the launch (actrec.ops.ddbn.ddbn_eval); this only
    // keeps a direct call with a bad flag inside the buffers.
    const int64_t o = ((a.domain[j] == 0 ? 0 : 1) * a.t_max + tt) * a.C + c;
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
  const size_t weights = 2 * a.N * sizeof(A);
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
