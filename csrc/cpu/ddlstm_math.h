// Scalar helpers shared by the CPU DDLSTM layer kernels: activations and the per-step row weights.
//
// float activations use a polynomial exp that gcc vectorises inside the kernels' inner loops
// (std::exp calls would not be); double uses the exact libm functions (gradcheck runs there).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__GNUC__)
#define ACTREC_MATH_INLINE inline __attribute__((always_inline))
#else
#define ACTREC_MATH_INLINE inline
#endif

namespace actrec {
namespace ddlstm {

// exp(x) for float, relative error ~2 ulp on the clamped range; branch-free so loops vectorise.
ACTREC_MATH_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // k = round(x / ln2) by the 1.5 * 2^23 shifter: the sum's mantissa ends in k (|k| < 2^22),
  // so k and its integer bits come without float/int conversions.
  const float m = x * 1.44269504088896341f + 12582912.0f;
  const float k = m - 12582912.0f;
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;  // |r| <= ln2/2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t mb;
  std::memcpy(&mb, &m, sizeof(mb));
  // 2^k, k in [-126, 127]: mb's low 9 bits are k's (the shifter's own bits there are 0).
  const uint32_t bits = (mb + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

ACTREC_MATH_INLINE float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
ACTREC_MATH_INLINE float tanh_(float x) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_(double x) { return std::tanh(x); }

// sqrt(v) for v > 0 (a variance plus eps). The builtins, not std::sqrt (defined outside the
// kernels' no-math-errno region, it stays an out-of-line call with an errno branch): here they
// become one instruction, inlined into each ISA clone.
ACTREC_MATH_INLINE float sqrt_(float v) { return __builtin_sqrtf(v); }
ACTREC_MATH_INLINE double sqrt_(double v) { return __builtin_sqrt(v); }

// In-place activations over n (a compile-time count) contiguous values: simple loops the
// vectoriser handles (kernels gather their operands into small buffers first).
template <int n, typename T>
ACTREC_MATH_INLINE void sigmoid_n(T* v) {
  for (int i = 0; i < n; ++i) v[i] = sigmoid(v[i]);
}
template <int n, typename T>
ACTREC_MATH_INLINE void tanh_n(T* v) {
  for (int i = 0; i < n; ++i) v[i] = tanh_(v[i]);
}


// The per-step row weights of one layer call, in double, from the contribution weights
// w [2, T, N] (actrec.ops.domains.contribution_weights: the DDBN formula lives there, not here)
// and the BN(c) weights w_c [T, N] (the 0/1 padding mask):
//   inv_s[d, t] = 1 / S_d(t), S_d(t) = sum_j w[d, t, j]; 0 where S_d(t) = 0 (no real row at t),
//   which makes mean = var = 0 there without a division by zero;
//   wn[d, t, j] = w[d, t, j] * inv_s[d, t], the normalised weights (0 where S = 0).
// Likewise inv_sc [T] and wnc [T, N] for w_c. `valid` is false when a weight is negative or not
// finite (the statistics would be meaningless).
struct RowWeights {
  int64_t steps = 0, n = 0;
  std::vector<double> wn, inv_s;    // [2, T, N], [2, T]
  std::vector<double> wnc, inv_sc;  // [T, N], [T]
  bool valid = true;

  RowWeights(const double* w, const double* wc, int64_t T, int64_t N) : steps(T), n(N) {
    normalise(w, 2 * T, wn, inv_s);
    normalise(wc, T, wnc, inv_sc);
  }

 private:
  void normalise(const double* w, int64_t rows, std::vector<double>& out, std::vector<double>& inv) {
    out.assign(rows * n, 0.0);
    inv.assign(rows, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        const double v = w[r * n + j];
        valid = valid && std::isfinite(v) && v >= 0.0;
        s += v;
      }
      inv[r] = s > 0.0 ? 1.0 / s : 0.0;
      for (int64_t j = 0; j < n; ++j) out[r * n + j] = w[r * n + j] * inv[r];
    }
  }
};

}  // namespace ddlstm
}  // namespace actrec
