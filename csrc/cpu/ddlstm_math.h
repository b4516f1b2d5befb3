// Scalar helpers shared by the CPU DDLSTM layer kernels: activations and the DDBN row weights.
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
  const float t = x * 1.44269504088896341f;
  const int32_t ki = static_cast<int32_t>(t + (t >= 0.0f ? 0.5f : -0.5f));  // round(x / ln2)
  const float k = static_cast<float>(ki);
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;  // |r| <= ln2/2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (ki + 127) << 23;  // 2^k, k in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

ACTREC_MATH_INLINE float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
ACTREC_MATH_INLINE float tanh_(float x) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_(double x) { return std::tanh(x); }

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


// The batch-row weights of one layer call (double precision; cast by the kernels).
//   ndom == 1: exact plain batch norm, every row weight 1/N (n1 == 0, n1 == N, or not dual).
//   ndom == 2: wn[d][j] = tau_d(j+1) / S_d with ddbn.md's tau1, tau2 (rows 1-based there);
//              kappa[d][j] = d tau_d(j+1) / d alpha_d = (N/2) sech^2(...).
struct RowWeights {
  int ndom = 1;
  double S[2] = {0.0, 0.0};
  std::vector<double> wn[2];
  std::vector<double> kappa[2];

  RowWeights(int64_t N, int64_t n1, double alpha1, double alpha2, bool dual) {
    ndom = (dual && n1 > 0 && n1 < N) ? 2 : 1;
    for (int d = 0; d < 2; ++d) {
      wn[d].assign(N, 0.0);
      kappa[d].assign(N, 0.0);
    }
    if (ndom == 1) {
      S[0] = S[1] = static_cast<double>(N);
      for (int64_t j = 0; j < N; ++j) wn[0][j] = wn[1][j] = 1.0 / static_cast<double>(N);
      return;
    }
    const double n = static_cast<double>(N);
    std::vector<double> tau[2] = {std::vector<double>(N), std::vector<double>(N)};
    for (int64_t j = 0; j < N; ++j) {
      const double jj = static_cast<double>(j + 1);
      const double t1 = std::tanh(jj - alpha1 * n);
      const double t2 = std::tanh(jj - (1.0 - alpha2) * n);
      tau[0][j] = 0.5 * (1.0 - t1);
      tau[1][j] = 0.5 * (1.0 + t2);
      kappa[0][j] = 0.5 * n * (1.0 - t1 * t1);
      kappa[1][j] = 0.5 * n * (1.0 - t2 * t2);
    }
    for (int d = 0; d < 2; ++d) {
      double s = 0.0;
      for (int64_t j = 0; j < N; ++j) s += tau[d][j];
      S[d] = s;
      for (int64_t j = 0; j < N; ++j) wn[d][j] = tau[d][j] / s;
    }
  }
};

}  // namespace ddlstm
}  // namespace actrec
