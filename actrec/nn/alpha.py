"""How the DDLSTM's cross-contamination parameters (the per-layer ``alpha`` pairs) are trained.

By default the alphas are parameters like any other: the weights' optimiser and learning rate
(the paper's setup). ``alpha_lr`` (the ``ddlstm`` model option) gives them an optimiser group of
their own with that learning rate, and ``alpha_lr = 0`` freezes them at ``alpha_init``: a fixed
degree of cross-contamination, chosen like any other hyperparameter. Why that matters (the
alphas' gradient favours pooling the batch statistics whatever the domains) is in
``docs/alpha-dynamics.md``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from actrec.nn.lstm import NormLSTMLayer

__all__ = ["alpha_overrides", "alpha_parameters", "freeze_alphas"]


def alpha_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The ``alpha`` [2] parameter of every dual-domain layer under ``module``, bottom first."""
    return [m.alpha for m in module.modules() if isinstance(m, NormLSTMLayer) and m.dual]


def freeze_alphas(module: nn.Module) -> None:
    """Stop every alpha under ``module`` from training (no gradient is computed for them)."""
    for p in alpha_parameters(module):
        p.requires_grad_(False)


def alpha_overrides(
    module: nn.Module, alpha_lr: float | None
) -> list[tuple[list[nn.Parameter], dict[str, Any]]]:
    """The optimiser override for the alphas under ``module`` (see
    ``SequenceModel.optimizer_overrides``): none when ``alpha_lr`` is None (they train with the
    weights) or 0 (frozen), else one group with learning rate ``alpha_lr``."""
    params = [p for p in alpha_parameters(module) if p.requires_grad]
    if alpha_lr is None or alpha_lr == 0 or not params:
        return []
    return [(params, {"lr": float(alpha_lr)})]
