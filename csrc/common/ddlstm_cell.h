// Cell and normalisation maths shared by the CPU kernels (csrc/cpu) and the CUDA kernels
// (csrc/cuda): one formula, one place. Everything here is scalar, branch-free and header-only,
// so each backend inlines and vectorises it in its own loops. The activations themselves stay
// with each backend (a vectorisable polynomial exp on the CPU, the CUDA intrinsics on the GPU):
// functions here take gates that are already activated.
#pragma once

#if defined(__CUDACC__)
#define ACTREC_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define ACTREC_HD inline __attribute__((always_inline))
#else
#define ACTREC_HD inline
#endif

namespace actrec {
namespace cell {

// c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g), from the activated gates i, f, g.
template <typename T>
ACTREC_HD T cell_state(T i, T f, T g, T cprev) {
  return f * cprev + i * g;
}

// Batch norm as an affine map y = x * scale + shift with scale = gamma / sqrt(var + eps):
// the shift.
template <typename T>
ACTREC_HD T bn_shift(T beta, T mean, T scale) {
  return beta - mean * scale;
}

// Gate pre-activation gradients from dL/dc_t (dc), the activated gates and c_{t-1}:
// returns d(i~), d(f~), d(g~) through sigmoid, sigmoid, tanh; d(o~) is gate_grad_o.
template <typename T>
ACTREC_HD void gate_grads_ifg(T dc, T i, T f, T g, T cprev, T* di, T* df, T* dg) {
  *di = dc * g * i * (T(1) - i);
  *df = dc * cprev * f * (T(1) - f);
  *dg = dc * i * (T(1) - g * g);
}
// d(o~) from dL/dh_t (dh), o and th = tanh(BN(c_t)).
template <typename T>
ACTREC_HD T gate_grad_o(T dh, T o, T th) {
  return dh * th * o * (T(1) - o);
}
// dL/d(BN(c_t)) from dL/dh_t (dh), o and th = tanh(BN(c_t)).
template <typename T>
ACTREC_HD T grad_bn_c_out(T dh, T o, T th) {
  return dh * o * (T(1) - th * th);
}

// The DDBN backward in coefficient form (shared/design/ddbn.md, "Gradients"): for one column
// and domain d with r = (var + eps)^-1/2, sg = sum of the gate gradients g over the rows
// normalised with d, sgz = sum of g (z - mean) over them:
//   P = dL/dmean = -gamma r sg,  Dv = dL/dvar = -gamma r^3 sgz / 2,
//   dL/dz_k gets wn_d(k) (K + L z_k) with L = 2 Dv, K = P - L mean.
template <typename T>
struct DdbnCoef {
  T P, Dv, K, L;
};
template <typename T>
ACTREC_HD DdbnCoef<T> ddbn_coef(T gamma, T r, T mean, T sg, T sgz) {
  DdbnCoef<T> c;
  c.P = -gamma * r * sg;
  c.Dv = -T(0.5) * gamma * r * r * r * sgz;
  c.L = T(2) * c.Dv;
  c.K = c.P - c.L * mean;
  return c;
}

}  // namespace cell
}  // namespace actrec
