// CUDA implementation of the whole-sequence DDLSTM / BNLSTM layer ops (schemas in
// csrc/ddlstm.cpp; kernels in ddlstm_kernels.cu; the CPU twin is csrc/cpu/ddlstm_layer_cpu.cpp).
//
// The time loop runs here: per step one cuBLAS GEMM (at::mm_out) and one fused step kernel, in
// both directions (backward: plus one small kernel for the step's dL/dw). The contribution
// weights w [2, T, N] and the BN(c) weights w_c [T, N] are inputs (made in Python by
// actrec.ops.domains); their per-step inverse sums are computed on the device before the loop.
// The input projection, its statistics and the weight gradients are single
// GEMMs / kernels over all T*N rows outside the loop.
//
// CUDA graphs: at T steps x 2 launches the loop is launch-bound at small H, so by default the
// loop of each (device, dtype, T, N, H, n1, dual) is captured once into an at::cuda::CUDAGraph
// that works on a cached set of static buffers ("plan"); a call copies its inputs in, replays,
// and clones the outputs out (device copies, a few tens of microseconds). ACTREC_CUDA_GRAPHS=0
// runs the loop eagerly on fresh buffers instead. A failed capture falls back to eager for that
// shape. At most 8 plans per direction are kept (oldest dropped first); a plan's buffers are
// handed between streams through a CUDA event.
//
// NOTE: written against the ATen CUDA APIs of torch 2.x, but not yet run on a GPU.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>

#include "ddlstm_kernels.cuh"

namespace actrec {
namespace ddlstm_cuda {
namespace {

bool graphs_enabled() {
  const char* e = std::getenv("ACTREC_CUDA_GRAPHS");
  return !(e && std::string(e) == "0");
}

int num_domains(int64_t N, int64_t n1, bool dual) { return (dual && n1 > 0 && n1 < N) ? 2 : 1; }

void check_cuda_args(const at::Tensor& x, std::initializer_list<const at::Tensor*> ts) {
  TORCH_CHECK(x.dim() == 3, "ddlstm_layer: x must be [T, N, D], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "ddlstm_layer: x must be float32 or float64, got ", x.scalar_type());
  for (const at::Tensor* t : ts) {
    TORCH_CHECK(t->device() == x.device(), "ddlstm_layer: every tensor must be on ", x.device(),
                ", got one on ", t->device());
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "ddlstm_layer: every tensor must have dtype ",
                x.scalar_type(), ", got ", t->scalar_type());
  }
}

void check_weights(const at::Tensor& w, const at::Tensor& wc, int64_t T, int64_t N) {
  TORCH_CHECK(w.sizes() == at::IntArrayRef({2, T, N}), "ddlstm_layer: w must be [2, T=", T,
              ", N=", N, "], got ", w.sizes());
  TORCH_CHECK(wc.sizes() == at::IntArrayRef({T, N}), "ddlstm_layer: w_c must be [T=", T, ", N=",
              N, "], got ", wc.sizes());
}

// ---------------------------------------------------------------------------------------------
// Forward

struct FwdBufs {
  // loop inputs
  at::Tensor w_hh, gamma_h, gamma_c, beta_c, h0, c0, xp, scale, shift;
  at::Tensor w, wc, inv_s, inv_sc;  // [2, T, N], [T, N] weights; [2, T], [T] 1/sums (double)
  // loop outputs
  at::Tensor gh, out, cs, mean_h, var_h, mean_c, var_c;
};

FwdBufs alloc_fwd(int64_t T, int64_t N, int64_t H, const at::TensorOptions& opt) {
  const int64_t G = 4 * H;
  FwdBufs b;
  b.w_hh = at::empty({G, H}, opt);
  b.gamma_h = at::empty({G}, opt);
  b.gamma_c = at::empty({H}, opt);
  b.beta_c = at::empty({H}, opt);
  b.h0 = at::empty({N, H}, opt);
  b.c0 = at::empty({N, H}, opt);
  b.w = at::empty({2, T, N}, opt);
  b.wc = at::empty({T, N}, opt);
  b.inv_s = at::empty({2, T}, opt.dtype(at::kDouble));
  b.inv_sc = at::empty({T}, opt.dtype(at::kDouble));
  b.xp = at::empty({T, N, G}, opt);
  b.scale = at::empty({T, 2, G}, opt);
  b.shift = at::empty({T, 2, G}, opt);
  b.gh = at::empty({T, N, G}, opt);
  b.out = at::empty({T, N, H}, opt);
  b.cs = at::empty({T, N, H}, opt);
  b.mean_h = at::empty({2, T, G}, opt);
  b.var_h = at::empty({2, T, G}, opt);
  b.mean_c = at::empty({T, H}, opt);
  b.var_c = at::empty({T, H}, opt);
  return b;
}

template <typename T>
void fwd_loop(FwdBufs& b, int64_t n1, int ndom, double eps) {
  const int64_t Tn = b.xp.size(0), N = b.xp.size(1), G = b.xp.size(2), H = G / 4;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  FwdStepArgs<T> a{};
  a.N = N;
  a.H = H;
  a.n1 = n1;
  a.gamma_h = b.gamma_h.data_ptr<T>();
  a.gamma_c = b.gamma_c.data_ptr<T>();
  a.beta_c = b.beta_c.data_ptr<T>();
  a.dstride = Tn * G;
  a.eps = static_cast<T>(eps);
  const at::Tensor w_t = b.w_hh.t();
  for (int64_t t = 0; t < Tn; ++t) {
    at::Tensor g_t = b.gh.select(0, t);
    at::mm_out(g_t, t == 0 ? b.h0 : b.out.select(0, t - 1), w_t);  // [N, 4H]
    a.w0 = b.w.data_ptr<T>() + t * N;
    a.w1 = b.w.data_ptr<T>() + (Tn + t) * N;
    a.inv_s0 = b.inv_s.data_ptr<double>() + t;
    a.inv_s1 = b.inv_s.data_ptr<double>() + Tn + t;
    a.wc = b.wc.data_ptr<T>() + t * N;
    a.inv_sc = b.inv_sc.data_ptr<double>() + t;
    a.gh = g_t.data_ptr<T>();
    a.xp = b.xp.data_ptr<T>() + t * N * G;
    a.sx = b.scale.data_ptr<T>() + t * 2 * G;
    a.shx = b.shift.data_ptr<T>() + t * 2 * G;
    a.cprev = t == 0 ? b.c0.data_ptr<T>() : b.cs.data_ptr<T>() + (t - 1) * N * H;
    a.c = b.cs.data_ptr<T>() + t * N * H;
    a.h = b.out.data_ptr<T>() + t * N * H;
    a.mean_h = b.mean_h.data_ptr<T>() + t * G;
    a.var_h = b.var_h.data_ptr<T>() + t * G;
    a.mean_c = b.mean_c.data_ptr<T>() + t * H;
    a.var_c = b.var_c.data_ptr<T>() + t * H;
    launch_fwd_step<T>(a, ndom, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Bufs>
struct Plan {
  std::mutex mu;
  Bufs b;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  bool graph_failed = false;
  // Recorded on the user's stream after the last work that reads b was queued: the next user,
  // perhaps on another stream, waits for it before overwriting the buffers.
  at::cuda::CUDAEvent done;
};

constexpr size_t kMaxPlans = 8;  // per direction; each holds a few [T, N, 4H] buffers

// The plan of `key`, made on first use; at most kMaxPlans are kept (oldest dropped first), so
// varying shapes or domain mixes cannot grow GPU memory without bound. A dropped plan lives on
// while a caller still holds it.
template <typename Bufs>
std::shared_ptr<Plan<Bufs>> get_plan(const std::string& key, const std::function<Bufs()>& make) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<Plan<Bufs>>> plans;
  static std::deque<std::string> order;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = plans[key];
  if (!p) {
    p = std::make_shared<Plan<Bufs>>();
    p->b = make();
    order.push_back(key);
    while (order.size() > kMaxPlans) {
      plans.erase(order.front());
      order.pop_front();
    }
  }
  return plans[key];
}

// Capture `loop` once into p.graph on a side stream (a capture needs a non-default stream);
// false when capturing is impossible here (then the caller runs eagerly).
template <typename Bufs, typename Loop>
bool ensure_graph(Plan<Bufs>& p, Loop loop) {
  if (p.graph) return true;
  if (p.graph_failed) return false;
  const at::cuda::CUDAStream cur = at::cuda::getCurrentCUDAStream();
  at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
  at::cuda::CUDAEvent ready;
  ready.record(cur);
  ready.block(side);
  auto g = std::make_unique<at::cuda::CUDAGraph>();
  bool capturing = false;
  try {
    c10::cuda::CUDAStreamGuard guard(side);
    g->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    capturing = true;
    loop();
    capturing = false;
    g->capture_end();
    p.graph = std::move(g);
  } catch (const std::exception& e) {
    if (capturing) {  // leave the side stream out of capture mode and the allocator's pool
      try {
        c10::cuda::CUDAStreamGuard guard(side);
        g->capture_end();
      } catch (const std::exception&) {
      }
    }
    (void)cudaGetLastError();
    TORCH_WARN_ONCE("ddlstm_layer: CUDA graph capture failed, running the loop eagerly: ", e.what());
    p.graph_failed = true;
    return false;
  }
  return true;
}

// Everything a captured loop bakes in: shapes, split, and the scalars of the step arguments.
std::string plan_key(const char* dir, const at::Tensor& x, int64_t H, int64_t n1, bool dual,
                     double eps) {
  std::ostringstream k;
  k << dir << '|' << x.get_device() << '|' << x.scalar_type() << '|' << x.size(0) << '|'
    << x.size(1) << '|' << H << '|' << n1 << '|' << dual << '|' << std::hexfloat << eps;
  return k.str();
}

using FwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

FwdResult forward_cuda(const at::Tensor& x_, const at::Tensor& w_ih, const at::Tensor& w_hh,
                       const at::Tensor& bias, const at::Tensor& gx, const at::Tensor& bx,
                       const at::Tensor& gh, const at::Tensor& bh, const at::Tensor& gc,
                       const at::Tensor& bc, const at::Tensor& w, const at::Tensor& wc,
                       int64_t n1, double eps, bool dual, const c10::optional<at::Tensor>& h0,
                       const c10::optional<at::Tensor>& c0) {
  check_cuda_args(x_, {&w_ih, &w_hh, &bias, &gx, &bx, &gh, &bh, &gc, &bc, &w, &wc});
  const c10::cuda::CUDAGuard device_guard(x_.device());
  const at::Tensor x = x_.contiguous();
  const int64_t T = x.size(0), N = x.size(1), D = x.size(2), H = w_hh.size(1), G = 4 * H;
  TORCH_CHECK(T >= 1 && N >= 1, "ddlstm_layer: x must have T >= 1 and N >= 1, got ", x.sizes());
  TORCH_CHECK(w_ih.sizes() == at::IntArrayRef({G, D}) && w_hh.sizes() == at::IntArrayRef({G, H}),
              "ddlstm_layer: weight_ih must be [4H, D] and weight_hh [4H, H], got ", w_ih.sizes(),
              " and ", w_hh.sizes());
  for (const at::Tensor* t : {&bias, &gx, &bx, &gh, &bh})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({G}), "ddlstm_layer: bias, gamma_x, beta_x, gamma_h, "
                "beta_h must be [4H], got ", t->sizes());
  TORCH_CHECK(gc.sizes() == at::IntArrayRef({H}) && bc.sizes() == at::IntArrayRef({H}),
              "ddlstm_layer: gamma_c, beta_c must be [H]");
  TORCH_CHECK(n1 >= 0 && n1 <= N, "ddlstm_layer: n1 must be in [0, N=", N, "], got ", n1);
  const bool has_h0 = h0.has_value() && h0->defined(), has_c0 = c0.has_value() && c0->defined();
  if (has_h0) TORCH_CHECK(h0->sizes() == at::IntArrayRef({N, H}), "ddlstm_layer: h0 must be [N, H]");
  if (has_c0) TORCH_CHECK(c0->sizes() == at::IntArrayRef({N, H}), "ddlstm_layer: c0 must be [N, H]");
  check_weights(w, wc, T, N);
  const int ndom = num_domains(N, n1, dual);
  const auto opt = x.options();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor mean_x = at::empty({2, T, G}, opt), var_x = at::empty({2, T, G}, opt);

  const bool use_graph = graphs_enabled();
  std::shared_ptr<Plan<FwdBufs>> plan;
  std::unique_lock<std::mutex> lock;
  FwdBufs fresh;
  if (use_graph) {
    plan = get_plan<FwdBufs>(plan_key("fwd", x, H, n1, dual, eps), [&] { return alloc_fwd(T, N, H, opt); });
    lock = std::unique_lock<std::mutex>(plan->mu);
    plan->done.block(at::cuda::getCurrentCUDAStream());
  } else {
    fresh = alloc_fwd(T, N, H, opt);
  }
  FwdBufs& b = plan ? plan->b : fresh;
  b.w_hh.copy_(w_hh);
  b.gamma_h.copy_(gh);
  b.gamma_c.copy_(gc);
  b.beta_c.copy_(bc);
  has_h0 ? b.h0.copy_(*h0) : b.h0.zero_();
  has_c0 ? b.c0.copy_(*c0) : b.c0.zero_();
  b.w.copy_(w);
  b.wc.copy_(wc);
  at::Tensor xp2 = b.xp.view({T * N, G});
  at::mm_out(xp2, x.view({T * N, D}), w_ih.t());  // [T*N, 4H], outside the loop

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_forward_cuda", [&] {
    using T_ = scalar_t;
    launch_inv_sums<T_>(b.w.data_ptr<T_>(), 2 * T, N, b.inv_s.data_ptr<double>(), stream);
    launch_inv_sums<T_>(b.wc.data_ptr<T_>(), T, N, b.inv_sc.data_ptr<double>(), stream);
    const at::Tensor bx_ = bx.contiguous(), bh_ = bh.contiguous(), bias_ = bias.contiguous(), gx_ = gx.contiguous();
    launch_x_stats<T_>(b.xp.data_ptr<T_>(), T, N, G, ndom, b.w.data_ptr<T_>(),
                       b.inv_s.data_ptr<double>(), static_cast<T_>(eps),
                       gx_.data_ptr<T_>(), bx_.data_ptr<T_>(), bh_.data_ptr<T_>(), bias_.data_ptr<T_>(),
                       mean_x.data_ptr<T_>(), var_x.data_ptr<T_>(), b.scale.data_ptr<T_>(),
                       b.shift.data_ptr<T_>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto loop = [&] { fwd_loop<T_>(b, n1, ndom, eps); };
    if (plan && ensure_graph(*plan, loop)) {
      plan->graph->replay();
    } else {
      loop();
    }
  });
  at::Tensor h_n = b.out.select(0, T - 1).clone(), c_n = b.cs.select(0, T - 1).clone();
  if (!plan)
    return {b.out, h_n, c_n, b.xp, b.gh, b.cs, mean_x, var_x, b.mean_h, b.var_h, b.mean_c, b.var_c};
  FwdResult result{b.out.clone(), h_n, c_n, b.xp.clone(), b.gh.clone(), b.cs.clone(), mean_x,
                   var_x, b.mean_h.clone(), b.var_h.clone(), b.mean_c.clone(), b.var_c.clone()};
  plan->done.record(at::cuda::getCurrentCUDAStream());
  return result;
}

// ---------------------------------------------------------------------------------------------
// Backward

struct BwdBufs {
  // loop inputs
  at::Tensor w_hh, gamma_h, beta_h, gamma_x, beta_x, bias, gamma_c, beta_c;
  at::Tensor w, wc, inv_s, inv_sc;  // as in FwdBufs
  at::Tensor xp, gh, cs, c0, grad_out, mean_x, var_x, mean_h, var_h, mean_c, var_c;
  // carried state (in/out) and outputs
  at::Tensor dc, dhrec, dgh, dxp, act, da, dy;
  at::Tensor acc_gamma_h, acc_gamma_x, acc_bias, acc_gamma_c, acc_beta_c, dw_part, grad_w;
};

BwdBufs alloc_bwd(int64_t T, int64_t N, int64_t H, const at::TensorOptions& opt) {
  const int64_t G = 4 * H;
  const auto dopt = opt.dtype(at::kDouble);
  BwdBufs b;
  b.w_hh = at::empty({G, H}, opt);
  for (at::Tensor* t : {&b.gamma_h, &b.beta_h, &b.gamma_x, &b.beta_x, &b.bias}) *t = at::empty({G}, opt);
  b.gamma_c = at::empty({H}, opt);
  b.beta_c = at::empty({H}, opt);
  b.w = at::empty({2, T, N}, opt);
  b.wc = at::empty({T, N}, opt);
  b.inv_s = at::empty({2, T}, dopt);
  b.inv_sc = at::empty({T}, dopt);
  b.xp = at::empty({T, N, G}, opt);
  b.gh = at::empty({T, N, G}, opt);
  b.cs = at::empty({T, N, H}, opt);
  b.c0 = at::empty({N, H}, opt);
  b.grad_out = at::empty({T, N, H}, opt);
  for (at::Tensor* t : {&b.mean_x, &b.var_x, &b.mean_h, &b.var_h}) *t = at::empty({2, T, G}, opt);
  b.mean_c = at::empty({T, H}, opt);
  b.var_c = at::empty({T, H}, opt);
  b.dc = at::empty({N, H}, opt);
  b.dhrec = at::empty({N, H}, opt);
  b.dgh = at::empty({T, N, G}, opt);
  b.dxp = at::empty({T, N, G}, opt);
  b.act = at::empty({N, G}, opt);
  b.da = at::empty({N, G}, opt);
  b.dy = at::empty({N, H}, opt);
  for (at::Tensor* t : {&b.acc_gamma_h, &b.acc_gamma_x, &b.acc_bias}) *t = at::empty({G}, dopt);
  b.acc_gamma_c = at::empty({H}, dopt);
  b.acc_beta_c = at::empty({H}, dopt);
  b.dw_part = at::empty({num_tiles(H), 2, N}, dopt);
  b.grad_w = at::empty({2, T, N}, opt);
  return b;
}

template <typename T>
void bwd_loop(BwdBufs& b, int64_t n1, int ndom, double eps) {
  const int64_t Tn = b.xp.size(0), N = b.xp.size(1), G = b.xp.size(2), H = G / 4;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  BwdStepArgs<T> a{};
  a.N = N;
  a.H = H;
  a.n1 = n1;
  a.dstride = Tn * G;
  a.gamma_h = b.gamma_h.data_ptr<T>();
  a.beta_h = b.beta_h.data_ptr<T>();
  a.gamma_x = b.gamma_x.data_ptr<T>();
  a.beta_x = b.beta_x.data_ptr<T>();
  a.bias = b.bias.data_ptr<T>();
  a.gamma_c = b.gamma_c.data_ptr<T>();
  a.beta_c = b.beta_c.data_ptr<T>();
  a.dc = b.dc.data_ptr<T>();
  a.dhrec = b.dhrec.data_ptr<T>();
  a.act = b.act.data_ptr<T>();
  a.da = b.da.data_ptr<T>();
  a.dy = b.dy.data_ptr<T>();
  a.acc_gamma_h = b.acc_gamma_h.data_ptr<double>();
  a.acc_gamma_x = b.acc_gamma_x.data_ptr<double>();
  a.acc_bias = b.acc_bias.data_ptr<double>();
  a.acc_gamma_c = b.acc_gamma_c.data_ptr<double>();
  a.acc_beta_c = b.acc_beta_c.data_ptr<double>();
  a.dw_part = b.dw_part.data_ptr<double>();
  a.eps = static_cast<T>(eps);
  const double* inv_s = b.inv_s.data_ptr<double>();
  for (int64_t t = Tn - 1; t >= 0; --t) {
    a.w0 = b.w.data_ptr<T>() + t * N;
    a.w1 = b.w.data_ptr<T>() + (Tn + t) * N;
    a.inv_s0 = inv_s + t;
    a.inv_s1 = inv_s + Tn + t;
    a.wc = b.wc.data_ptr<T>() + t * N;
    a.inv_sc = b.inv_sc.data_ptr<double>() + t;
    a.gh = b.gh.data_ptr<T>() + t * N * G;
    a.xp = b.xp.data_ptr<T>() + t * N * G;
    a.mean_h = b.mean_h.data_ptr<T>() + t * G;
    a.var_h = b.var_h.data_ptr<T>() + t * G;
    a.mean_x = b.mean_x.data_ptr<T>() + t * G;
    a.var_x = b.var_x.data_ptr<T>() + t * G;
    a.mean_c = b.mean_c.data_ptr<T>() + t * H;
    a.var_c = b.var_c.data_ptr<T>() + t * H;
    a.c = b.cs.data_ptr<T>() + t * N * H;
    a.cprev = t == 0 ? b.c0.data_ptr<T>() : b.cs.data_ptr<T>() + (t - 1) * N * H;
    a.gout = b.grad_out.data_ptr<T>() + t * N * H;
    a.dgh = b.dgh.data_ptr<T>() + t * N * G;
    a.dxp = b.dxp.data_ptr<T>() + t * N * G;
    launch_bwd_step<T>(a, ndom, stream);
    if (ndom == 2)  // dL/dw at step t, before the next step overwrites the partials
      launch_w_grad_step<T>(a.dw_part, num_tiles(H), N, inv_s + t, inv_s + Tn + t,
                            b.grad_w.data_ptr<T>() + t * N, b.grad_w.data_ptr<T>() + (Tn + t) * N,
                            stream);
    at::mm_out(b.dhrec, b.dgh.select(0, t), b.w_hh);  // [N, H] dL/dh_{t-1}
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

using BwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor>;

BwdResult backward_cuda(const at::Tensor& grad_out, const at::Tensor& grad_h_n,
                        const at::Tensor& grad_c_n, const at::Tensor& x_, const at::Tensor& w_ih,
                        const at::Tensor& w_hh, const at::Tensor& bias, const at::Tensor& gx,
                        const at::Tensor& bx, const at::Tensor& gh, const at::Tensor& bh,
                        const at::Tensor& gc, const at::Tensor& bc, const at::Tensor& w,
                        const at::Tensor& wc, const c10::optional<at::Tensor>& h0,
                        const c10::optional<at::Tensor>& c0,
                        const at::Tensor& xp, const at::Tensor& ghs, const at::Tensor& out,
                        const at::Tensor& cs, const at::Tensor& mean_x, const at::Tensor& var_x,
                        const at::Tensor& mean_h, const at::Tensor& var_h,
                        const at::Tensor& mean_c, const at::Tensor& var_c, int64_t n1, double eps,
                        bool dual, bool need_grad_x) {
  check_cuda_args(x_, {&grad_out, &grad_h_n, &grad_c_n, &w_ih, &w_hh, &bias, &gx, &bx, &gh, &bh,
                       &gc, &bc, &w, &wc, &xp, &ghs, &out, &cs, &mean_x, &var_x, &mean_h, &var_h,
                       &mean_c, &var_c});
  const c10::cuda::CUDAGuard device_guard(x_.device());
  const at::Tensor x = x_.contiguous();
  const int64_t T = x.size(0), N = x.size(1), D = x.size(2), H = w_hh.size(1), G = 4 * H;
  TORCH_CHECK(xp.sizes() == at::IntArrayRef({T, N, G}) && ghs.sizes() == xp.sizes() &&
                  cs.sizes() == at::IntArrayRef({T, N, H}) && out.sizes() == cs.sizes() &&
                  grad_out.sizes() == cs.sizes(),
              "ddlstm_layer_backward: saved tensors do not match x [T, N, D] and H");
  check_weights(w, wc, T, N);
  const int ndom = num_domains(N, n1, dual);
  const auto opt = x.options();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  const bool use_graph = graphs_enabled();
  std::shared_ptr<Plan<BwdBufs>> plan;
  std::unique_lock<std::mutex> lock;
  BwdBufs b;
  if (use_graph) {
    plan = get_plan<BwdBufs>(plan_key("bwd", x, H, n1, dual, eps), [&] { return alloc_bwd(T, N, H, opt); });
    lock = std::unique_lock<std::mutex>(plan->mu);
    plan->done.block(at::cuda::getCurrentCUDAStream());
    BwdBufs& s = plan->b;
    s.w_hh.copy_(w_hh);
    s.gamma_h.copy_(gh);
    s.beta_h.copy_(bh);
    s.gamma_x.copy_(gx);
    s.beta_x.copy_(bx);
    s.bias.copy_(bias);
    s.gamma_c.copy_(gc);
    s.beta_c.copy_(bc);
    s.w.copy_(w);
    s.wc.copy_(wc);
    s.xp.copy_(xp);
    s.gh.copy_(ghs);
    s.cs.copy_(cs);
    s.grad_out.copy_(grad_out);
    s.mean_x.copy_(mean_x);
    s.var_x.copy_(var_x);
    s.mean_h.copy_(mean_h);
    s.var_h.copy_(var_h);
    s.mean_c.copy_(mean_c);
    s.var_c.copy_(var_c);
  } else {
    // Eager: the loop reads the caller's tensors directly; only outputs and scratch are new.
    b = alloc_bwd(1, 1, 1, opt);  // placeholders, replaced below
    b.w_hh = w_hh.contiguous();
    b.gamma_h = gh.contiguous();
    b.beta_h = bh.contiguous();
    b.gamma_x = gx.contiguous();
    b.beta_x = bx.contiguous();
    b.bias = bias.contiguous();
    b.gamma_c = gc.contiguous();
    b.beta_c = bc.contiguous();
    b.w = w.contiguous();
    b.wc = wc.contiguous();
    b.inv_s = at::empty({2, T}, opt.dtype(at::kDouble));
    b.inv_sc = at::empty({T}, opt.dtype(at::kDouble));
    b.xp = xp.contiguous();
    b.gh = ghs.contiguous();
    b.cs = cs.contiguous();
    b.c0 = at::empty({N, H}, opt);
    b.grad_out = grad_out.contiguous();
    b.mean_x = mean_x.contiguous();
    b.var_x = var_x.contiguous();
    b.mean_h = mean_h.contiguous();
    b.var_h = var_h.contiguous();
    b.mean_c = mean_c.contiguous();
    b.var_c = var_c.contiguous();
    const BwdBufs outs = alloc_bwd(T, N, H, opt);
    b.dc = outs.dc;
    b.dhrec = outs.dhrec;
    b.dgh = outs.dgh;
    b.dxp = outs.dxp;
    b.act = outs.act;
    b.da = outs.da;
    b.dy = outs.dy;
    b.acc_gamma_h = outs.acc_gamma_h;
    b.acc_gamma_x = outs.acc_gamma_x;
    b.acc_bias = outs.acc_bias;
    b.acc_gamma_c = outs.acc_gamma_c;
    b.acc_beta_c = outs.acc_beta_c;
    b.dw_part = outs.dw_part;
    b.grad_w = outs.grad_w;
  }
  BwdBufs& s = plan ? plan->b : b;
  (c0.has_value() && c0->defined()) ? s.c0.copy_(*c0) : s.c0.zero_();
  s.dc.copy_(grad_c_n);
  s.dhrec.copy_(grad_h_n);
  for (at::Tensor* t : {&s.acc_gamma_h, &s.acc_gamma_x, &s.acc_bias, &s.acc_gamma_c, &s.acc_beta_c,
                        &s.dw_part, &s.grad_w, &s.act, &s.da, &s.dy})
    t->zero_();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_backward_cuda", [&] {
    using T_ = scalar_t;
    launch_inv_sums<T_>(s.w.data_ptr<T_>(), 2 * T, N, s.inv_s.data_ptr<double>(), stream);
    launch_inv_sums<T_>(s.wc.data_ptr<T_>(), T, N, s.inv_sc.data_ptr<double>(), stream);
    auto loop = [&] { bwd_loop<T_>(s, n1, ndom, eps); };
    if (plan && ensure_graph(*plan, loop)) {
      plan->graph->replay();
    } else {
      loop();
    }
  });

  // Weight gradients as single GEMMs over all T*N rows.
  const at::Tensor dgh2 = s.dgh.view({T * N, G}), dxp2 = s.dxp.view({T * N, G});
  at::Tensor grad_w_hh = at::zeros({G, H}, opt);
  if (T > 1)
    at::mm_out(grad_w_hh, dgh2.narrow(0, N, (T - 1) * N).t(),
               out.contiguous().view({T * N, H}).narrow(0, 0, (T - 1) * N));
  if (h0.has_value() && h0->defined()) grad_w_hh.addmm_(s.dgh.select(0, 0).t(), *h0);
  at::Tensor grad_w_ih = at::mm(dxp2.t(), x.view({T * N, D}));
  at::Tensor grad_x = need_grad_x ? at::mm(dxp2, w_ih.contiguous()).view({T, N, D}) : at::empty({0}, opt);
  const auto to_t = [&](const at::Tensor& t) { return t.to(x.scalar_type(), false, true); };
  at::Tensor grad_bias = to_t(s.acc_bias);
  BwdResult result{grad_x, grad_w_ih, grad_w_hh, grad_bias, to_t(s.acc_gamma_x),
                   grad_bias.clone(), to_t(s.acc_gamma_h), grad_bias.clone(),
                   to_t(s.acc_gamma_c), to_t(s.acc_beta_c),
                   s.grad_w.clone(),
                   s.dhrec.clone(), s.dc.clone()};
  if (plan) plan->done.record(at::cuda::getCurrentCUDAStream());
  return result;
}

// Evaluation forward (running statistics folded by the caller; see csrc/ddlstm.cpp): per step
// one cuBLAS GEMM and one element-wise kernel. Domain flags are checked by the Python caller.
std::tuple<at::Tensor, at::Tensor, at::Tensor> eval_cuda(
    const at::Tensor& x_, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& scale_x, const at::Tensor& scale_h, const at::Tensor& shift,
    const at::Tensor& scale_c, const at::Tensor& shift_c, const at::Tensor& domain_,
    const c10::optional<at::Tensor>& h0_, const c10::optional<at::Tensor>& c0_) {
  check_cuda_args(x_, {&w_ih, &w_hh, &scale_x, &scale_h, &shift, &scale_c, &shift_c});
  const c10::cuda::CUDAGuard device_guard(x_.device());
  const at::Tensor x = x_.contiguous();
  TORCH_CHECK(x.dim() == 3 && x.size(0) >= 1 && x.size(1) >= 1,
              "ddlstm_layer_eval: x must be [T, N, D] with T, N >= 1, got ", x.sizes());
  const int64_t T = x.size(0), N = x.size(1), D = x.size(2), H = w_hh.size(1), G = 4 * H;
  TORCH_CHECK(w_ih.sizes() == at::IntArrayRef({G, D}) && w_hh.sizes() == at::IntArrayRef({G, H}),
              "ddlstm_layer_eval: weight_ih must be [4H, D] and weight_hh [4H, H]");
  TORCH_CHECK(scale_c.dim() == 2 && scale_c.size(0) >= 1,
              "ddlstm_layer_eval: scale_c must be [S, H] with S >= 1, got ", scale_c.sizes());
  const int64_t S = scale_c.size(0);  // slots; step t uses min(t, S - 1)
  for (const at::Tensor* t : {&scale_x, &scale_h, &shift})
    TORCH_CHECK(t->sizes() == at::IntArrayRef({2, S, G}),
                "ddlstm_layer_eval: scale_x, scale_h and shift must be [2, S, 4H] (S = scale_c's "
                "slots), got ", t->sizes());
  TORCH_CHECK(scale_c.sizes() == at::IntArrayRef({S, H}) && shift_c.sizes() == at::IntArrayRef({S, H}),
              "ddlstm_layer_eval: scale_c and shift_c must be [S, H]");
  TORCH_CHECK(domain_.dim() == 1 && domain_.size(0) == N && domain_.scalar_type() == at::kLong &&
                  domain_.device() == x.device(),
              "ddlstm_layer_eval: domain must be an int64 [N] tensor on x's device");
  const auto opt = x.options();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor domain = domain_.contiguous();
  const at::Tensor sx = scale_x.contiguous(), sh = scale_h.contiguous(), sf = shift.contiguous();
  const at::Tensor sc = scale_c.contiguous(), sb = shift_c.contiguous();
  const at::Tensor w_t = w_hh.contiguous().t();
  const at::Tensor h0 = (h0_.has_value() && h0_->defined()) ? h0_->contiguous() : at::zeros({N, H}, opt);
  at::Tensor c_n = (c0_.has_value() && c0_->defined()) ? c0_->contiguous().clone() : at::zeros({N, H}, opt);
  at::Tensor c_next = at::empty({N, H}, opt);
  const at::Tensor xp = at::mm(x.view({T * N, D}), w_ih.contiguous().t());  // [T*N, 4H]
  at::Tensor out = at::empty({T, N, H}, opt);
  at::Tensor gh = at::empty({N, G}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ddlstm_layer_eval_cuda", [&] {
    using T_ = scalar_t;
    EvalStepArgs<T_> a{};
    a.N = N; a.H = H;
    a.domain = domain.data_ptr<int64_t>();
    a.gh = gh.data_ptr<T_>();
    a.dstride = S * G;
    for (int64_t t = 0; t < T; ++t) {
      at::mm_out(gh, t == 0 ? h0 : out.select(0, t - 1), w_t);  // [N, 4H]
      const int64_t slot = std::min(t, S - 1);
      a.xp = xp.data_ptr<T_>() + t * N * G;
      a.scale_h = sh.data_ptr<T_>() + slot * G;
      a.scale_x = sx.data_ptr<T_>() + slot * G;
      a.shift = sf.data_ptr<T_>() + slot * G;
      a.scale_c = sc.data_ptr<T_>() + slot * H;
      a.shift_c = sb.data_ptr<T_>() + slot * H;
      a.cprev = c_n.data_ptr<T_>();
      a.c = c_next.data_ptr<T_>();
      a.h = out.data_ptr<T_>() + t * N * H;
      launch_eval_step<T_>(a, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      std::swap(c_n, c_next);
    }
  });
  return {out, out.select(0, T - 1).clone(), c_n};
}

}  // namespace
}  // namespace ddlstm_cuda
}  // namespace actrec

TORCH_LIBRARY_IMPL(actrec, CUDA, m) {
  m.impl("ddlstm_layer_forward", &actrec::ddlstm_cuda::forward_cuda);
  m.impl("ddlstm_layer_backward", &actrec::ddlstm_cuda::backward_cuda);
  m.impl("ddlstm_layer_eval", &actrec::ddlstm_cuda::eval_cuda);
}
