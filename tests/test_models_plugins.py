"""The model plugins: configs, build, stepwise == batched for every causal model, causality,
non-causal models refuse online inference, and the GRU / Average baselines' math."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from actrec.errors import ConfigError
from actrec.plugin_api import TemporalModel
from actrec_plugins.models.borg_camilleri import GRUModel
from actrec_plugins.models.ddlstm import BNLSTMModel, DDLSTMModel
from actrec_plugins.models.giel_diaz import AverageModel, BiRNNModel, RNNModel
from actrec_plugins.models.lstm import LSTMModel

DT = torch.float64
ALL = [LSTMModel, BNLSTMModel, DDLSTMModel, RNNModel, BiRNNModel, AverageModel, GRUModel]
CAUSAL = [LSTMModel, BNLSTMModel, DDLSTMModel, RNNModel, GRUModel]
SMALL = {
    "lstm": {"hidden": "5", "layers": "2"},
    "bnlstm": {"hidden": "5", "layers": "2", "max_len": "4"},
    "ddlstm": {"hidden": "5", "layers": "2", "max_len": "4", "input_projection": "true"},
    "rnn": {"hidden": "5", "layers": "2"},
    "birnn": {"hidden": "5"},
    "average": {"hidden": "7"},
    "gru": {"hidden": "5", "fc": "6"},
}


def _build(plugin: type[TemporalModel], D=3, K=4):
    cfg = plugin.Config.from_options(SMALL[plugin.name], owner=f"model '{plugin.name}'")
    torch.manual_seed(0)
    return plugin(cfg).build(D, K).double()


def _data(T=7, N=6, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, D, generator=g, dtype=DT)
    x[:, 3:] += 2.0
    return x, torch.tensor([0, 0, 0, 1, 1, 1])


def test_entry_point_names_match_classes():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="actrec.models")}
    for plugin in ALL:
        assert eps[plugin.name] == f"{plugin.__module__}:{plugin.__name__}"


def test_default_configs():
    assert (DDLSTMModel.Config().hidden, DDLSTMModel.Config().layers, DDLSTMModel.Config().max_len) == (128, 3, None)
    assert DDLSTMModel.Config().alpha_init == 0.75 and not hasattr(BNLSTMModel.Config(), "alpha_init")
    assert (LSTMModel.Config().hidden, LSTMModel.Config().layers, LSTMModel.Config().dropout) == (128, 1, 0.0)
    c = GRUModel.Config()
    assert (c.hidden, c.layers, c.recurrent_dropout, c.fc, c.dropout) == (256, 2, 0.3, 64, 0.4)
    assert [p.causal for p in ALL] == [True, True, True, True, False, False, True]


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_unknown_or_bad_option_raises_config_error(plugin):
    with pytest.raises(ConfigError, match="unknown option 'hiden'.*model"):
        plugin.Config.from_options({"hiden": 3}, owner=f"model '{plugin.name}'")
    with pytest.raises(ConfigError, match="'hidden'"):
        plugin.Config.from_options({"hidden": "0"})
    with pytest.raises(ConfigError, match="'hidden'"):
        plugin.Config.from_options({"hidden": "many"})


def test_out_of_range_options_raise_config_error():
    with pytest.raises(ConfigError, match="alpha_init"):
        DDLSTMModel.Config.from_options({"alpha_init": "1.5"})
    with pytest.raises(ConfigError, match="recurrent_dropout"):
        GRUModel.Config.from_options({"recurrent_dropout": "1.0"})
    with pytest.raises(ConfigError, match="eps"):
        BNLSTMModel.Config.from_options({"eps": "0"})


def test_plugin_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import actrec_plugins.models.lstm, actrec_plugins.models.ddlstm\n"
        "import actrec_plugins.models.giel_diaz, actrec_plugins.models.borg_camilleri\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_build_and_train_step_shapes(plugin):
    model = _build(plugin)
    x, domain = _data()
    assert model.causal == plugin.causal
    out = model(x, domain)
    assert out.shape == (7, 6, 4) and out.dtype == DT
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "input_projection" not in n)
    model.after_optimizer_step()


@pytest.mark.parametrize("plugin", CAUSAL, ids=lambda p: p.name)
def test_stepwise_equals_batched_in_eval(plugin):
    model = _build(plugin)
    with torch.no_grad():  # a few training batches so running statistics are not trivial
        for seed in range(3):
            model(*_data(seed=seed))
    model.eval()
    x, _ = _data(T=9, seed=5)  # T = 9 > max_len = 4 for the normalised LSTMs
    domain = torch.tensor([1, 0, 0, 1, 0, 1])  # mixed and unsorted at evaluation
    with torch.no_grad():
        batched = model(x, domain)
        state = model.init_state(6, domain)
        steps = []
        for t in range(9):
            logits, state = model.step(x[t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps), batched, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_causality_of_eval_outputs(plugin):
    model = _build(plugin).eval()
    x, domain = _data()
    y = x.clone()
    y[4:] += torch.randn_like(y[4:])
    with torch.no_grad():
        same = torch.equal(model(x, domain)[:4], model(y, domain)[:4])
    assert same == plugin.causal


@pytest.mark.parametrize("plugin", [BiRNNModel, AverageModel], ids=lambda p: p.name)
def test_non_causal_models_refuse_online_inference(plugin):
    model = _build(plugin).eval()
    with pytest.raises(NotImplementedError, match="not causal"):
        model.init_state(2, torch.zeros(2, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="not causal"):
        model.step(torch.zeros(2, 3, dtype=DT), None)


def test_step_requires_eval_mode():
    model = _build(DDLSTMModel)
    state = model.init_state(2, torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="eval"):
        model.step(torch.zeros(2, 3, dtype=DT), state)


def test_ddlstm_eval_uses_each_sequences_domain():
    model = _build(DDLSTMModel)
    with torch.no_grad():
        for seed in range(3):
            model(*_data(seed=seed))
    model.eval()
    x, _ = _data()
    with torch.no_grad():
        as_d1 = model(x, torch.zeros(6, dtype=torch.long))
        as_d2 = model(x, torch.ones(6, dtype=torch.long))
        mixed = model(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert not torch.allclose(as_d1, as_d2)
    torch.testing.assert_close(mixed[:, 0::2], as_d1[:, 0::2], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 1::2], as_d2[:, 1::2], rtol=0, atol=0)


def test_input_projection_is_chosen_by_domain():
    model = _build(DDLSTMModel)
    x, _ = _data()
    proj = model.input_projection
    out = proj(x, torch.tensor([0, 1, 1, 0, 0, 1]))
    torch.testing.assert_close(out[:, 0], proj.proj[0](x[:, 0]), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], proj.proj[1](x[:, 1]), rtol=0, atol=0)


def test_gru_eval_equals_torch_gru_and_dropout_is_per_sequence():
    model = _build(GRUModel).eval()
    ref = torch.nn.GRU(3, 5, 2).double()
    ref.load_state_dict(model.rnn.state_dict())
    x, domain = _data()
    with torch.no_grad():
        torch.testing.assert_close(model.rnn(x), ref(x)[0], rtol=1e-12, atol=1e-12)
        expected = model.classifier(
            torch.nn.functional.batch_norm(
                ref(x)[0].reshape(-1, 5), model.norm.running_mean, model.norm.running_var,
                model.norm.weight, model.norm.bias, False, 0.0, model.norm.eps,
            )
        ).reshape(7, 6, 4)
        torch.testing.assert_close(model(x, domain), expected, rtol=1e-12, atol=1e-12)
    # Training: recurrent dropout makes outputs random, and a fixed mask reproduces them.
    model.rnn.train()
    torch.manual_seed(1)
    a = model.rnn(x)
    torch.manual_seed(1)
    b = model.rnn(x)
    torch.manual_seed(2)
    c = model.rnn(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    model.rnn.p = 0.0
    torch.testing.assert_close(model.rnn(x), ref(x)[0], rtol=1e-12, atol=1e-12)


def test_gru_recurrent_mask_is_fixed_over_time():
    # With p close to 1 most units of h are dropped in the recurrent product: a unit dropped at
    # t=1 is dropped at every t, so zeroing W_hh's columns for the dropped units changes nothing.
    from actrec.nn.gru import DropoutGRU

    torch.manual_seed(0)
    gru = DropoutGRU(3, 4, 1, recurrent_dropout=0.5).double().train()
    masks = []
    orig = gru._mask
    gru._mask = lambda like: masks.append(orig(like)) or masks[-1]
    x, _ = _data()
    torch.manual_seed(5)
    out = gru(x)
    (mask,) = masks
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    ref = torch.nn.GRU(3, 4, 1).double()
    ref.load_state_dict(gru.state_dict())
    h = torch.zeros(6, 4, dtype=DT)
    expected = []
    for t in range(x.shape[0]):  # torch's GRU cell, one step at a time, on the masked state
        gx = x[t] @ ref.weight_ih_l0.T + ref.bias_ih_l0
        gh = (h * mask) @ ref.weight_hh_l0.T + ref.bias_hh_l0
        r = torch.sigmoid(gx[:, :4] + gh[:, :4])
        z = torch.sigmoid(gx[:, 4:8] + gh[:, 4:8])
        n = torch.tanh(gx[:, 8:] + r * gh[:, 8:])
        h = (1 - z) * n + z * h
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_average_model_gives_the_window_prediction_to_every_frame():
    model = _build(AverageModel).eval()
    x, domain = _data()
    with torch.no_grad():
        out = model(x, domain)
        expected = model.mlp(x.mean(0))
    for t in range(x.shape[0]):
        torch.testing.assert_close(out[t], expected, rtol=0, atol=0)
