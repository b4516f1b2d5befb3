"""Re-estimation of population statistics after training (Cooijmans et al., Sec. 4).

The running statistics collected with momentum during training lag behind the final
parameters; re-estimating them averages every batch's statistics under the final parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from actrec.nn.ddbn import PerTimestepNorm

__all__ = ["reestimate_statistics"]


@torch.no_grad()
def reestimate_statistics(model: nn.Module, batches: Iterable[Sequence[Tensor]]) -> int:
    """Replace every per-timestep norm's running statistics in ``model`` by exact averages.

    Each batch is ``(x [T, N, D], domain [N])`` or ``(x, domain, mask [T, N])`` (domains sorted,
    D1 first; mask True on real frames, None or absent: all real). It runs one forward with the
    norm modules in training mode and everything else in eval mode (no dropout), without grad;
    parameters (alphas included) are not touched. Each timestep slot in use (below the norm's
    ``trained_len``, which is kept) and domain holds the plain mean of the batch means and of
    the unbiased batch variances of the batches with a real frame there; slots no batch reached
    keep mean 0 / variance 1. Returns the number of batches; the model's training flags are
    restored.
    """
    norms = [m for m in model.modules() if isinstance(m, PerTimestepNorm)]
    # Plain torch batch norms (e.g. the GRU model's) average exactly with momentum=None.
    torch_norms = {
        m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    flags = {m: m.training for m in model.modules()}
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
        return count
    finally:
        for m in norms:
            m.cumulative = False
        for m, momentum in torch_norms.items():
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)
