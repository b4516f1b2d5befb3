// Schemas of the whole-sequence DDLSTM / BNLSTM layer ops (one autograd node per layer and
// sequence). The library itself is declared by TORCH_LIBRARY(actrec, m) in ddbn.cpp; this file
// only adds a fragment, so it links into the same actrec._C or into a standalone test build.
//
// Inputs (training mode; time-major x [T, N, D], rows sorted with the n1 D1 rows first):
//   w [2, T, N]     the DDBN contribution weights of every row at every step, made by
//                   actrec.ops.domains.contribution_weights (tanh weights times the padding
//                   mask; the 0/1 mask in both slots for a single-domain batch). The op never
//                   computes them: the formula lives in one place.
//   w_c [T, N]      the weights of the plain batch norm on c_t (the 0/1 padding mask).
//   A (domain, t) whose weights sum to 0 (no real row) gets mean = var = 0.
//   dual_domain     false (BNLSTM), n1 == 0 or n1 == N: one domain; only slot 0 of w is read.
//
// Forward outputs:
//   out [T, N, H]   all h_t                       h_n, c_n [N, H]
//   xp, gh [T, N, 4H]  x W_ih^T and h_{t-1} W_hh^T (saved for backward, not normalised)
//   cs [T, N, H]    all c_t (saved)
//   mean_x, var_x, mean_h, var_h [2, T, 4H]  per-domain batch statistics (biased variance;
//                   both slots equal when the layer runs with one domain)
//   mean_c, var_c [T, H]                     batch statistics of c_t (weights w_c)
//
// Evaluation (running statistics, no autograd: ddlstm_layer_eval): every normalisation is an
// affine map folded by the caller (actrec.ops.ddlstm_layer.eval_affine):
//   gates = (h W_hh^T) scale_h[d, t] + (x W_ih^T) scale_x[d, t] + shift[d, t],  d = domain[row]
//   h_t = sigmoid(o) tanh(c_t scale_c[t] + shift_c[t]); rows are independent, in any order.
//   The maps have S >= 1 slots ([2, S, 4H], [S, H]); step t uses slot min(t, S - 1), the running
//   statistics' rule past the trained length.
//
// Backward returns gradients for (x, weight_ih, weight_hh, bias, gamma_x, beta_x, gamma_h,
// beta_h, gamma_c, beta_c, w, h0, c0); grad_x is an empty [0] tensor unless need_grad_x;
// grad_w [2, T, N] is zero for a one-domain call (w is then a constant mask); w_c gets none.

#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(actrec, m) {
  m.def(
      "ddlstm_layer_forward(Tensor x, Tensor weight_ih, Tensor weight_hh, Tensor bias, "
      "Tensor gamma_x, Tensor beta_x, Tensor gamma_h, Tensor beta_h, Tensor gamma_c, "
      "Tensor beta_c, Tensor w, Tensor w_c, int n1, float eps, bool dual_domain, Tensor? h0, "
      "Tensor? c0) -> (Tensor out, Tensor h_n, Tensor c_n, Tensor xp, Tensor gh, Tensor cs, "
      "Tensor mean_x, Tensor var_x, Tensor mean_h, Tensor var_h, Tensor mean_c, Tensor var_c)");
  m.def(
      "ddlstm_layer_backward(Tensor grad_out, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor weight_ih, Tensor weight_hh, Tensor bias, Tensor gamma_x, Tensor beta_x, "
      "Tensor gamma_h, Tensor beta_h, Tensor gamma_c, Tensor beta_c, Tensor w, Tensor w_c, "
      "Tensor? h0, Tensor? c0, Tensor xp, Tensor gh, Tensor out, Tensor cs, Tensor mean_x, "
      "Tensor var_x, Tensor mean_h, Tensor var_h, Tensor mean_c, Tensor var_c, int n1, "
      "float eps, bool dual_domain, bool need_grad_x) -> (Tensor grad_x, "
      "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias, Tensor grad_gamma_x, "
      "Tensor grad_beta_x, Tensor grad_gamma_h, Tensor grad_beta_h, Tensor grad_gamma_c, "
      "Tensor grad_beta_c, Tensor grad_w, Tensor grad_h0, Tensor grad_c0)");
  m.def(
      "ddlstm_layer_eval(Tensor x, Tensor weight_ih, Tensor weight_hh, Tensor scale_x, "
      "Tensor scale_h, Tensor shift, Tensor scale_c, Tensor shift_c, Tensor domain, Tensor? h0, "
      "Tensor? c0) -> (Tensor out, Tensor h_n, Tensor c_n)");
}
