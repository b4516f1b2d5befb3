"""A third-party model whose `step` drifted from its `forward` (or mixes the rows it steps
together) is refused by `eval --online` with the plugin's name, instead of being scored."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import cli
from actrec.io.features import FeatureStore

MODELS = """
    from dataclasses import dataclass

    from actrec.plugin_api import PluginConfig, TemporalModel


    class Average(TemporalModel):
        name = "u9-average"

        @dataclass(frozen=True)
        class Config(PluginConfig):
            step_decay: float = 0.7  # forward always uses 0.7: another value is a drifted step
            mix_rows: bool = False  # step adds the batch mean: rows depend on each other

        def build(self, input_dim, num_classes):
            import torch
            from torch import nn

            from actrec.nn.base import SequenceModel

            config = self.config

            class Model(SequenceModel):
                def __init__(self):
                    super().__init__()
                    self.out = nn.Linear(input_dim, num_classes)

                def forward(self, x, domain, mask=None):
                    state, outs = torch.zeros_like(x[0]), []
                    for x_t in x:
                        state = 0.7 * state + 0.3 * x_t
                        outs.append(self.out(state))
                    return torch.stack(outs)

                def init_state(self, batch, domain):
                    return torch.zeros(batch, input_dim, device=domain.device)

                def step(self, x_t, state):
                    state = config.step_decay * state + (1 - config.step_decay) * x_t
                    if config.mix_rows:  # nothing for one row alone, so step = forward
                        state = state + 0.5 * (state.mean(0, keepdim=True) - state)
                    return self.out(state), state

            return Model()
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "u9_average-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: u9-average\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[actrec.models]\nu9-average = u9_average:Average\n")
    (site / "u9_average.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(site))
    ids = [f"v{i}" for i in range(5)]
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="toy", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ids[:3], "test": ids[3:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32")
    rng = np.random.default_rng(0)
    for vid in ids:
        y = np.repeat([0, 1], 15)
        store.write_video(vid, (rng.normal(size=(30, 2)) + 2 * y[:, None]).astype(np.float32),
                          y, fps=15.0, source=None)
    return tmp_path


def train_and_eval(tmp_path, *options: str, mode: str = "--online"):
    env = {"ACTREC_HOME": str(tmp_path / "home")}
    run = tmp_path / ("run-" + "-".join(options).replace("=", ""))
    args = ["train", "u9-average", "--d1", str(tmp_path / "s.zarr"), "--iterations", "2",
            "--history", "8", "--mix", "2:0", "--run-dir", str(run)]
    for option in options:
        args += ["-o", option]
    trained = CliRunner().invoke(cli, args, env=env)
    assert trained.exit_code == 0, (trained.output, trained.exception)
    return CliRunner().invoke(cli, ["eval", str(run), mode, "--json"], env=env)


def test_a_step_equal_to_forward_is_scored(setup):
    out = train_and_eval(setup)
    assert out.exit_code == 0, (out.output, out.exception)
    assert json.loads(out.output)["datasets"]["toy"]["frames"] == 60


def test_a_step_that_drifted_from_forward_is_refused_online_only(setup):
    out = train_and_eval(setup, "step_decay=0.5")
    assert out.exit_code == 1
    message = str(out.exception)
    assert message.startswith("model 'u9-average': stepping frame by frame gives other "
                              "logits than forward on the same frames"), message
    assert "docs/plugins.md" in message
    offline = train_and_eval(setup, "step_decay=0.5", mode="--offline")
    assert offline.exit_code == 0, (offline.output, offline.exception)


def test_a_step_that_mixes_rows_is_refused_with_the_plugins_name(setup):
    out = train_and_eval(setup, "mix_rows=true")
    assert out.exit_code == 1
    assert str(out.exception).startswith("model 'u9-average'")
