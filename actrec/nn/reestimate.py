"""Re-estimation of population statistics after training (Cooijmans et al., Sec. 4).

The running statistics collected with momentum during training lag behind the final
parameters; re-estimating them averages every batch's statistics under the final parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from actrec.nn.ddbn import PerTimestepNorm

__all__ = ["reestimate_statistics", "stale_statistics_warning"]


@torch.no_grad()
def reestimate_statistics(model: nn.Module, batches: Iterable[Sequence[Tensor]]) -> int:
    """Replace every per-timestep norm's running statistics in ``model`` by exact averages.

    Each batch is ``(x [T, N, D], domain [N])`` or ``(x, domain, mask [T, N])`` (domains sorted,
    D1 first; mask True on real frames, None or absent: all real). It runs one forward with the
    norm modules in training mode and everything else in eval mode (no dropout), without grad;
    parameters (alphas included) are not touched. Each timestep slot in use (below the norm's
    ``trained_len``, which is kept) and domain holds the plain mean of the batch means and of
    the unbiased batch variances of the batches with a real frame there (for the variance, two or
more: one frame has no variance). A slot no batch
    reached (a domain the batches do not hold, e.g. the pre-training dataset of a transfer
    run; a timestep past every window's real frames) keeps the statistics training left
    there: the batches say nothing about it, and mean 0 / variance 1 is no statistic of any
    data. Returns the number of batches; the model's training flags are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, PerTimestepNorm)]
    # Plain torch batch norms (e.g. the GRU model's) average exactly with momentum=None.
    torch_norms = {
        m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    flags = {m: m.training for m in model.modules()}
    # What training left, for the slots the batches do not reach (restored in ``finally``).
    before = {m: (m.running_mean.clone(), m.running_var.clone())
              for m in [*norms, *torch_norms] if m.running_mean is not None}
    finished = False
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.cumulative = True
            m.train()
        for m in torch_norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        count = 0
        for batch in batches:
            x, domain, *rest = batch
            mask = rest[0] if rest else None
            if mask is None:  # models written before masks existed keep working
                model(x, domain)
            else:
                model(x, domain, mask=mask)
            count += 1
        finished = True
        return count
    finally:  # a failed batch leaves the statistics as they were
        for m in norms:  # [*slots, max_len]; a variance needs a batch with 2+ real frames there
            none = torch.zeros_like(m.counts, dtype=torch.bool)
            reached = m.counts > 0 if finished else none
            reached_var = m.counts_var > 0 if finished else none
            _keep_unreached(m, reached, *before[m], reached_var)
            m.cumulative = False
        for m in torch_norms:
            if m in before:
                reached = finished and (m.num_batches_tracked is None
                                        or bool(m.num_batches_tracked > 0))
                _keep_unreached(m, torch.tensor(reached), *before[m])
        for m, momentum in torch_norms.items():
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)


def _keep_unreached(norm: nn.Module, reached: Tensor, mean: Tensor, var: Tensor,
                    reached_var: Tensor | None = None) -> None:
    """Put ``mean``/``var`` back into ``norm``'s running statistics where ``reached`` (bool,
    the statistics' leading slot shape ``[*slots, max_len]``, or a scalar) is False; the
    variance where ``reached_var`` (default ``reached``) is False."""
    def unreached(r: Tensor) -> Tensor:
        keep = ~r.to(norm.running_mean.device)
        while keep.dim() < norm.running_mean.dim():
            keep = keep[..., None]
        return keep

    norm.running_mean.copy_(torch.where(unreached(reached), mean, norm.running_mean))
    keep_var = unreached(reached if reached_var is None else reached_var)
    norm.running_var.copy_(torch.where(keep_var, var, norm.running_var))


STALE_SHARE = 0.25  # a running variance this much made of its start value is not a statistic


@torch.no_grad()
def stale_statistics_warning(model: nn.Module, iterations: int) -> str | None:
    """A warning when ``model``'s batch norms (per-timestep norms and torch's) still hold mostly
    their starting running variance (1) after ``iterations`` momentum updates, else None.

    The share of the start left in a running variance is ``(1 - momentum) ** updates`` over
    what the norm divides by, the variance plus its ``eps``; it is measured at the timestep
    updated most often (t = 0: every training window reaches it; later timesteps had at most
    as many updates) and, for the DDBN, in each domain that trained. (A channel whose batches
    have no variance, as a recurrent norm's at t = 0 from a zero state, keeps only the
    start's remainder: that counts once it is small beside ``eps``, where it changes nothing.) Short runs of BN models with small activations (variances of
    ~1e-3 against the start's 1) evaluate with normalisations off by orders of magnitude."""
    worst: tuple[float, str, float, int] | None = None
    for name, m in model.named_modules():
        if isinstance(m, PerTimestepNorm):
            momentum, updates = float(m.momentum), int(iterations)
            trained = (m.trained_len > 0).reshape(-1)  # per domain slot (one for plain BN)
            var = m.running_var.reshape(-1, *m.running_var.shape[-2:])[trained][:, 0]  # [S, C]
            eps = float(m.eps)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None \
                and m.momentum is not None and m.num_batches_tracked is not None:
            momentum, updates = float(m.momentum), int(m.num_batches_tracked)
            var = m.running_var[None]
            eps = float(m.eps)
        else:
            continue
        if var.numel() == 0 or updates <= 0:
            continue
        left = (1.0 - momentum) ** updates
        share = float((left / (var.double().clamp_min(0.0) + eps).clamp_min(1e-30))
                      .clamp_max(1.0).median())
        if share > STALE_SHARE and (worst is None or share > worst[0]):
            worst = (share, name or "model", momentum, updates)
    if worst is None:
        return None
    share, name, momentum, updates = worst
    import math

    needed = math.ceil(math.log(0.01) / math.log(1.0 - momentum)) if 0 < momentum < 1 else None
    longer = f" or train at least ~{needed} iterations" if needed else " or train longer"
    return (f"after {updates} update(s) at momentum {momentum:g}, {100 * share:.0f} % of the "
            f"running variances of batch norm '{name}' (median over channels) is still their "
            f"starting value 1: evaluation normalises with them, online and offline, so its "
            f"scores will be far below what the trained weights do. Re-estimate them "
            f"(--reestimate-batches 20, with --select last){longer}")
