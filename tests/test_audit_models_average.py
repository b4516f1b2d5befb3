"""Audit of Giel & Diaz's 'Average' baseline. They classify a 10-frame clip from the mean of
its CNN codes through a 2-layer ReLU MLP with dropout. Averaging a whole untrimmed test video
instead gives every frame of it one prediction (the video's majority class at best): here each
frame is classified from the clip of ``window`` (10) frames ending at it, causal and online;
runs recorded before the option keep the whole-sequence mean they trained with."""

from __future__ import annotations

import torch

from actrec.components import resolve_model
from actrec.data.labels import InputLayout, LabelSpace
from actrec_plugins.models.giel_diaz import AverageModel

DT = torch.float64


def _by_hand(window: int):
    """MLP: Linear1 = [[1, 0], [0, -1]], ReLU, Linear2 = [[1, 2], [0, 1]] + (0.5, 0)."""
    model = AverageModel(AverageModel.Config(hidden=2, window=window)).build(2, 2).double()
    lin1, lin2 = model.mlp[0], model.mlp[3]
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        lin1.bias.zero_()
        lin2.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        lin2.bias.copy_(torch.tensor([0.5, 0.0]))
    return model.eval()


def _mlp(m1: float, m2: float) -> list[float]:
    a, b = max(m1, 0.0), max(-m2, 0.0)
    return [a + 2 * b + 0.5, b]


def test_each_frame_is_classified_from_the_clip_ending_at_it_by_hand():
    model = _by_hand(window=2)
    x = torch.tensor([[[1.0, 2.0], [-2.0, -6.0]],
                      [[3.0, -4.0], [0.0, -2.0]],
                      [[2.0, 5.0], [5.0, 2.0]]], dtype=DT)  # [T=3, N=2, D=2]
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1]), mask)
    # Row 0: means (1, 2), (2, -1), (2.5, 0.5). Row 1: (-2, -6), (-1, -4); frame 2 is padding.
    want0 = [_mlp(1, 2), _mlp(2, -1), _mlp(2.5, 0.5)]
    want1 = [_mlp(-2, -6), _mlp(-1, -4)]
    torch.testing.assert_close(out[:, 0], torch.tensor(want0, dtype=DT), rtol=0, atol=1e-15)
    torch.testing.assert_close(out[:2, 1], torch.tensor(want1, dtype=DT), rtol=0, atol=1e-15)
    assert want0[0] != want0[2]  # frames of one row no longer share a prediction


def test_online_steps_give_the_whole_sequence_forward():
    torch.manual_seed(0)
    model = AverageModel(AverageModel.Config(hidden=6, window=4)).build(3, 5).double().eval()
    x = torch.randn(11, 2, 3, dtype=DT)
    domain = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        whole = model(x, domain)
        state = model.init_state(2, domain)
        steps = []
        for t in range(11):
            logits, state = model.step(x[t], state)
            steps.append(logits)
        # Frame 7 from the clip 4..7 alone: the mean of those 4 frames.
        torch.testing.assert_close(whole[7], model.mlp(x[4:8].mean(0)), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.stack(steps), whole, rtol=1e-12, atol=1e-14)
    assert model.causal and AverageModel.causal


def test_a_run_recorded_without_the_window_keeps_its_whole_sequence_mean():
    layout, labels = InputLayout((3,)), LabelSpace((("a", "b"),))
    old = {"model_name": "average", "model_config": {"hidden": 4, "dropout": 0.5}}
    _, model = resolve_model(old, layout, labels, where="old run")
    assert model.window == 0 and not model.causal
    new = {"model_name": "average", "model_config": {"hidden": 4, "dropout": 0.5, "window": 10}}
    assert resolve_model(new, layout, labels, where="new run")[1].window == 10
    spec_only = {"model_name": "average", "spec": {"model_options": {"hidden": "4"}}}
    assert resolve_model(spec_only, layout, labels, where="older run")[1].window == 0
