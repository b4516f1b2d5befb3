"""Batch-normalised LSTM layers and stacks: the DDLSTM (Perrett & Damen 2019) and the BNLSTM
(Cooijmans et al.), time-major, gate order i, f, g, o (PyTorch's).

One layer, per timestep t (``ddbn.md``)::

    gates = BN_h(h_{t-1} W_hh^T) + (BN_x(x_t W_ih^T) + bias)
    c_t   = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
    h_t   = sigmoid(o) tanh(BN_c(c_t))

BN_x and BN_h are DDBNs sharing the layer's ``alpha`` in the DDLSTM and plain per-timestep batch
norms in the BNLSTM; BN_c is always plain. ``x W_ih^T`` and BN_x run over all timesteps at once;
only BN_h and BN_c run step by step. The parameter names and shapes (``weight_ih [4H, D]``,
``weight_hh [4H, H]``, ``bias [4H]``, ``alpha [2]``, ``bn_x``/``bn_h``/``bn_c`` with ``weight``,
``bias``, ``running_mean``, ``running_var``) are what a fused whole-sequence op plugs into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actrec.nn.base import split_point
from actrec.ops.domains import check_domain_flags
from actrec.nn.ddbn import (
    DualDomainBatchNorm,
    SequenceBatchNorm,
    new_alpha,
    own_frames,
    project_alpha_,
)

if TYPE_CHECKING:  # pragma: no cover
    from actrec.ops.ddbn_sync import RowPartition

__all__ = ["NormLSTMLayer", "NormLSTM", "DDLSTM", "BNLSTM"]

LayerState = tuple[Tensor, Tensor]  # (h [N, H], c [N, H])


class NormLSTMLayer(nn.Module):
    """One batch-normalised LSTM layer; ``dual=True`` makes it a DDLSTM layer (DDBN on x and h)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        max_len: int = 200,
        *,
        dual: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        alpha_init: float = 0.75,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.dual = input_size, hidden_size, dual
        self.fused = True  # use the fused whole-sequence op in training where it is available
        # A torch.distributed group: training batch statistics over all its processes' rows
        # (set by actrec.distributed.sync_norms; not saved with the model).
        self.sync_group = None
        h4 = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(h4, input_size))
        self.weight_hh = nn.Parameter(torch.empty(h4, hidden_size))
        self.bias = nn.Parameter(torch.zeros(h4))
        norm = DualDomainBatchNorm if dual else SequenceBatchNorm
        self.bn_x = norm(h4, max_len, momentum, eps)
        self.bn_h = norm(h4, max_len, momentum, eps)
        self.bn_c = SequenceBatchNorm(hidden_size, max_len, momentum, eps)
        if dual:
            self.alpha = new_alpha(alpha_init)
            # (n1/N, n2/N) of the last two-domain training batch: alpha's lower bounds.
            self.register_buffer("alpha_floor", torch.zeros(2))
            self.register_load_state_dict_post_hook(_project_after_load)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal input weights, orthogonal recurrent blocks per gate, forget-gate bias 1."""
        nn.init.orthogonal_(self.weight_ih)
        with torch.no_grad():
            for w in self.weight_hh.chunk(4, 0):  # [H, H] each
                nn.init.orthogonal_(w)
            self.bias.zero_()
            self.bias[self.hidden_size : 2 * self.hidden_size].fill_(1.0)

    # -- normalisation dispatch (DDBN takes alpha and domain; plain BN ignores them)
    def _bn(
        self, bn: nn.Module, h: Tensor, domain: Tensor, t0: int, mask: Tensor | None = None,
        sync: RowPartition | None = None,
    ) -> Tensor:
        # Domain flags are checked where sequences enter (forward; init_state for stepping).
        if sync is not None:  # a batch spread over processes (actrec.ops.ddbn_sync)
            return (bn(h, self.alpha, domain, t0, mask, domain_checked=True, sync=sync)
                    if self.dual else bn(h, t0, mask, sync=sync))
        return (bn(h, self.alpha, domain, t0, mask, domain_checked=True) if self.dual
                else bn(h, t0, mask))

    def norms(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """``(bn_x, bn_h, bn_c)``."""
        return self.bn_x, self.bn_h, self.bn_c

    def _remember_split(self, domain: Tensor) -> None:
        if self.dual and self.training:
            n, n1 = domain.numel(), int((domain == 0).sum())
            if 0 < n1 < n:  # single-domain batches do not use alpha: keep the last bounds
                self.alpha_floor.copy_(torch.tensor([n1 / n, (n - n1) / n]))

    def project_alpha(self) -> None:
        """Clamp alpha into ``[n_i/N, 1]`` with the last two-domain batch's split."""
        if self.dual:
            project_alpha_(self.alpha, self.alpha_floor)

    def _cell(
        self, gx_t: Tensor, h: Tensor, c: Tensor, t: int, domain: Tensor,
        mask_t: Tensor | None = None, sync: RowPartition | None = None,
    ) -> LayerState:
        """Timestep ``t``; ``mask_t [1, N]`` keeps padded rows out of this step's statistics."""
        gh = F.linear(h, self.weight_hh)[None]  # [1, N, 4H]
        gh = self._bn(self.bn_h, gh, domain, t, mask_t, sync)[0]  # [N, 4H]
        i, f, g, o = (gh + gx_t).chunk(4, 1)  # 4 x [N, H]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        bn_c = (self.bn_c(c[None], t, mask_t) if sync is None
                else self.bn_c(c[None], t, mask_t, sync=sync))
        h = torch.sigmoid(o) * torch.tanh(bn_c[0])
        return h, c

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        """The hidden states ``[T, N, H]`` of a whole sequence ``x [T, N, D]`` from a zero state.

        ``mask [T, N]`` (True on real frames, padding at the end of rows) keeps padding out of
        every batch statistic and running statistic; the states of real frames do not depend
        on padded ones. With the norms in training mode and the fused whole-sequence op
        available (``actrec.ops.ddlstm_layer``) and ``fused`` set, the time loop runs in C++
        and the running statistics are updated from the op's per-step batch statistics;
        otherwise per step here, each step updating only its own statistics slot. Both give
        the same numbers. ``domain`` must hold only 0 and 1 (checked here)."""
        if not self.training and self.dual:
            domain = check_domain_flags(domain, x.shape[1])
        self._remember_split(domain)
        sync = self._partition(domain, mask, x.shape[0])
        if sync is None and self._can_fuse(x):
            return self._forward_fused(x, domain, mask)
        if sync is None and self._can_fuse_eval(x):
            return self._forward_fused_eval(x, domain)
        gx = self._bn(self.bn_x, F.linear(x, self.weight_ih), domain, 0, mask, sync)  # [T,N,4H]
        gx = gx + self.bias
        h, c = self.zero_state(x.shape[1], x)
        out = []
        for t in range(x.shape[0]):
            h, c = self._cell(gx[t], h, c, t, domain, None if mask is None else mask[t : t + 1],
                              sync)
            out.append(h)
        return torch.stack(out)  # [T, N, H]

    def _partition(self, domain: Tensor, mask: Tensor | None, steps: int
                   ) -> RowPartition | None:
        """Where this process's rows sit in the batch spread over ``sync_group`` (training
        statistics only), or None: statistics of these rows alone. The fused op cannot
        all-reduce between timesteps, so a synchronised layer steps in Python."""
        group = getattr(self, "sync_group", None)
        if group is None or not self.bn_h.training:
            return None
        from actrec.ops.ddbn_sync import RowPartition

        n = domain.numel()
        n1 = split_point(domain) if self.dual else n  # plain batch norm: one block of rows
        return RowPartition.gather(group, n, n1, mask, steps, domain.device)

    def _can_fuse(self, x: Tensor) -> bool:
        norms = (self.bn_x, self.bn_h, self.bn_c)
        if not (self.fused and all(bn.training for bn in norms)):
            return False
        if len({bn.eps for bn in norms}) != 1:  # the op takes one eps
            return False
        from actrec.ops.ddlstm_layer import fused_layer_available

        return fused_layer_available(x)

    def _can_fuse_eval(self, x: Tensor) -> bool:
        """Evaluation through the fused op: norms in eval mode, one eps, and no gradient
        wanted (the eval op has no autograd; with gradients the per-step path runs)."""
        norms = (self.bn_x, self.bn_h, self.bn_c)
        if not self.fused or any(bn.training for bn in norms) or len({bn.eps for bn in norms}) != 1:
            return False
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return False
        from actrec.ops.ddlstm_layer import fused_layer_available

        return fused_layer_available(x)

    def _eval_affine_all(self, like: Tensor):
        """The norms' running statistics folded into affine maps for every slot 0..max_len-1
        (``actrec.ops.ddlstm_layer.EvalAffine``), cached until a parameter or running
        statistic changes (tensor versions; no cache where versions are not tracked)."""
        from actrec.ops.ddlstm_layer import eval_affine

        bx, bh, bc = self.norms()
        deps = [self.bias] + [t for bn in (bx, bh, bc)
                              for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                        bn.trained_len)]
        try:
            key = (like.dtype, like.device, *((t.data_ptr(), t._version) for t in deps))
        except RuntimeError:  # inference tensors have no version counter
            key = None
        cached = getattr(self, "_eval_cache", None)
        if key is None or cached is None or cached[0] != key:
            t_max = bx.running_mean.shape[-2]

            def stats(bn):  # [2, max_len, C]; one set of statistics fills both domain slots
                m, v = bn.eval_stats(0, t_max, like.device)  # DDBN: each domain its own slots
                if not self.dual:
                    m, v = m.expand(2, -1, -1), v.expand(2, -1, -1)
                return m.to(like.dtype), v.to(like.dtype)

            mc, vc = bc.eval_stats(0, t_max, like.device)
            with torch.no_grad():
                aff = eval_affine(
                    *stats(bx), bx.weight, bx.bias, *stats(bh), bh.weight, bh.bias, self.bias,
                    mc.to(like.dtype), vc.to(like.dtype), bc.weight, bc.bias, bx.eps)
            cached = (key, aff)
            self._eval_cache = cached
        return cached[1]

    def _forward_fused_eval(self, x: Tensor, domain: Tensor) -> Tensor:  # [T, N, D] -> [T, N, H]
        from actrec.ops.ddlstm_layer import ddlstm_layer_eval

        dom = domain if self.dual else torch.zeros(x.shape[1], dtype=torch.long, device=x.device)
        # the op uses slot min(t, max_len - 1): the cached maps serve any length
        return ddlstm_layer_eval(x, self.weight_ih, self.weight_hh, self._eval_affine_all(x),
                                 dom)[0]

    def _forward_fused(
        self, x: Tensor, domain: Tensor, mask: Tensor | None
    ) -> Tensor:  # [T, N, D] -> [T, N, H]
        from actrec.ops.ddlstm_layer import ddlstm_layer

        t, n = x.shape[0], x.shape[1]
        n1 = split_point(domain) if self.dual else n  # plain BN: one batch, any row order
        alpha = self.alpha if self.dual else x.new_zeros(2)  # unused by plain batch norm
        res = ddlstm_layer(
            x, self.weight_ih, self.weight_hh, self.bias,
            self.bn_x.weight, self.bn_x.bias, self.bn_h.weight, self.bn_h.bias,
            self.bn_c.weight, self.bn_c.bias, alpha, n1, self.bn_x.eps, dual_domain=self.dual,
            mask=mask,
        )
        st = res.stats
        valid = st.n_eff > 0  # [2, T]: (domain, t) with a real frame, as the per-step path
        own = own_frames(mask, n1, t)
        if own is not None:
            valid = valid & own.to(valid.device)
        valid_var = st.n_eff > 1  # one real frame: no variance to fold in (as the modules)
        if self.dual:
            self.bn_x.absorb_domains(st.mean_x, st.unbiased_var_x(), n1, n, valid=valid,
                                     valid_var=valid_var)
            self.bn_h.absorb_domains(st.mean_h, st.unbiased_var_h(), n1, n, valid=valid,
                                     valid_var=valid_var)
        else:  # single-domain statistics: both slots hold the plain ones
            self.bn_x.absorb(st.mean_x[0], st.unbiased_var_x()[0], valid=valid[0],
                             valid_var=valid_var[0])
            self.bn_h.absorb(st.mean_h[0], st.unbiased_var_h()[0], valid=valid[0],
                             valid_var=valid_var[0])
        self.bn_c.absorb(st.mean_c, st.unbiased_var_c(), valid=st.n_c > 0, valid_var=st.n_c > 1)
        for bn in self.norms():
            bn.note_trained(0, t, mask, n1=n1, n=n)
        return res.out

    def zero_state(self, batch: int, like: Tensor) -> LayerState:
        z = like.new_zeros(batch, self.hidden_size)
        return z, z

    def step(self, x_t: Tensor, state: LayerState, t: int, domain: Tensor) -> LayerState:
        """Timestep ``t`` from ``x_t [N, D]`` and ``(h, c)``; eval mode (running statistics).
        ``domain`` is trusted to hold only 0 and 1: check it once before stepping
        (``actrec.ops.domains.check_domain_flags``; ``NormLSTMClassifier.init_state`` does)."""
        if self._can_fuse_eval(x_t):  # the fused eval op, one step, cached affine maps
            from actrec.ops.ddlstm_layer import EvalAffine, ddlstm_layer_eval

            aff = self._eval_affine_all(x_t)
            s = min(t, aff.scale_c.shape[0] - 1)  # slots past max_len: the last one
            aff = EvalAffine(*(a[:, s:s + 1] for a in aff[:3]), *(a[s:s + 1] for a in aff[3:]))
            dom = domain if self.dual else torch.zeros_like(domain, dtype=torch.long)
            _, h, c = ddlstm_layer_eval(x_t[None], self.weight_ih, self.weight_hh, aff, dom,
                                        *state)
            return h, c
        gx = self._bn(self.bn_x, F.linear(x_t, self.weight_ih)[None], domain, t)[0] + self.bias
        return self._cell(gx, *state, t, domain)  # [N, 4H] -> (h, c) [N, H]


def _project_after_load(module: nn.Module, _incompatible) -> None:
    module.project_alpha()


class NormLSTM(nn.Module):
    """A stack of ``NormLSTMLayer``; layer l > 0 takes layer l-1's hidden states as input."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_layers: int = 3,
        max_len: int = 200,
        *,
        dual: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        alpha_init: float = 0.75,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_size = hidden_size
        self.dropout = dropout  # on each layer's output that feeds the next layer (training)
        self.layers = nn.ModuleList(
            NormLSTMLayer(
                input_size if k == 0 else hidden_size, hidden_size, max_len,
                dual=dual, momentum=momentum, eps=eps, alpha_init=alpha_init,
            )
            for k in range(num_layers)
        )

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[T, N, D] -> [T, N, H]``; ``mask [T, N]`` as in ``NormLSTMLayer.forward``."""
        for k, layer in enumerate(self.layers):
            if k and self.dropout:
                x = F.dropout(x, self.dropout, self.training)
            x = layer(x, domain, mask)
        return x

    def init_state(self, batch: int, like: Tensor) -> list[LayerState]:
        return [layer.zero_state(batch, like) for layer in self.layers]

    def step(self, x_t: Tensor, states: list[LayerState], t: int, domain: Tensor):
        """One timestep through every layer: ``(h_top [N, H], new states)``."""
        new = []
        for layer, st in zip(self.layers, states):
            st = layer.step(x_t, st, t, domain)
            new.append(st)
            x_t = st[0]
        return x_t, new

    def project_alphas(self) -> None:
        for layer in self.layers:
            layer.project_alpha()


class DDLSTM(NormLSTM):
    """Dual-domain LSTM stack (default 3 x 128): DDBN on x and h, one alpha pair per layer."""

    def __init__(
        self, input_size: int, hidden_size: int = 128, num_layers: int = 3, max_len: int = 200, **kw
    ):
        super().__init__(input_size, hidden_size, num_layers, max_len, dual=True, **kw)


class BNLSTM(NormLSTM):
    """Batch-normalised LSTM stack (Cooijmans et al.): plain per-timestep BN everywhere."""

    def __init__(
        self, input_size: int, hidden_size: int = 128, num_layers: int = 3, max_len: int = 200, **kw
    ):
        kw.pop("alpha_init", None)
        super().__init__(input_size, hidden_size, num_layers, max_len, dual=False, **kw)
