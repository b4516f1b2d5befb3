"""Online evaluation steps several test videos side by side. A model whose step normalises
over the batch (batch statistics at evaluation: a plugin's ``BatchNorm1d`` without running
statistics, a hand-written centring over rows) would make every video's answers depend on the
videos stepped with it, i.e. on the test set. Such a model is refused with a ``ConfigError``;
it used to be scored silently (the score changed with the batch size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actrec.data.labels import InputLayout, LabelSpace
from actrec.errors import ConfigError
from actrec.evaluate import predict_videos
from actrec.nn.base import SequenceModel

LABELS, LAYOUT = LabelSpace((("a", "b", "c"),)), InputLayout((4,))


class RowCentred(SequenceModel):
    """Causal in time, but each step centres its frame over the rows of the batch."""

    causal = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x, domain, mask=None):
        return self.lin(x - x.mean(1, keepdim=True))

    def init_state(self, batch, domain):
        return None

    def step(self, x_t, state):
        return self.lin(x_t - x_t.mean(0, keepdim=True)), None


class NoRunningStats(RowCentred):
    """A batch norm that keeps no running statistics normalises over the batch in eval."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4, track_running_stats=False)

    def step(self, x_t, state):
        return self.lin(self.norm(x_t)), None


class MixesLater(RowCentred):
    """Each row alone at its first step; the state then carries the batch's mean frame."""

    def init_state(self, batch, domain):
        return torch.zeros(batch, 4)

    def step(self, x_t, state):
        return self.lin(x_t + state), x_t.mean(0, keepdim=True).expand_as(x_t)


def _videos():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, 4)).astype(np.float32) for n in (9, 6, 7)]


@pytest.mark.parametrize("model", [RowCentred, NoRunningStats, MixesLater])
def test_a_step_that_mixes_the_videos_of_a_batch_is_refused(model):
    with pytest.raises(ConfigError, match="sequences stepped with it"):
        predict_videos(model(), _videos(), 0, LABELS, LAYOUT, online=True)
    with pytest.raises(ConfigError, match="sequences stepped with it"):
        predict_videos(model(), _videos(), 0, LABELS, LAYOUT, online=True, lookahead=1)


def test_one_video_at_a_time_is_not_refused_and_offline_is_not_probed():
    # batch_videos=1: each video alone, no neighbour to depend on (the check needs none);
    # offline runs forward, which the model owns.
    for kw in ({"online": True, "batch_videos": 1}, {"online": False}):
        out = predict_videos(RowCentred(), _videos(), 0, LABELS, LAYOUT, **kw)
        assert [len(p) for p in out] == [9, 6, 7]
