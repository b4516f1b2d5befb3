"""The model plugins: configs, build, stepwise == batched for every causal model, causality,
non-causal models refuse online inference, and the GRU / Average baselines' math."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from actrec.errors import ConfigError
from actrec.plugin_api import TemporalModel
from actrec_plugins.models.borg_camilleri import GRUModel
from actrec_plugins.models.ddlstm import BNLSTMModel, DDLSTMModel
from actrec_plugins.models.giel_diaz import AverageModel, BiRNNModel, RNNModel
from actrec_plugins.models.lstm import LSTMModel

DT = torch.float64
ALL = [LSTMModel, BNLSTMModel, DDLSTMModel, RNNModel, BiRNNModel, AverageModel, GRUModel]
CAUSAL = [LSTMModel, BNLSTMModel, DDLSTMModel, RNNModel, AverageModel, GRUModel]
SMALL = {
    "lstm": {"hidden": "5", "layers": "2"},
    "bnlstm": {"hidden": "5", "layers": "2", "max_len": "4"},
    "ddlstm": {"hidden": "5", "layers": "2", "max_len": "4", "input_projection": "true"},
    "rnn": {"hidden": "5", "layers": "2"},
    "birnn": {"hidden": "5"},
    "average": {"hidden": "7", "window": "3"},
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
    assert (c.hidden, c.layers, c.gru_dropout, c.recurrent_dropout, c.fc, c.dropout) == (
        256, 2, 0.3, 0.0, 64, 0.4)
    assert c.recurrent_activation == "hard_sigmoid"
    assert [p.causal for p in ALL] == [True, True, True, True, False, True, True]
    assert AverageModel.Config().window == 10  # Giel & Diaz's 10-frame clips


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
    if plugin is AverageModel:  # window 0: whole-sequence means, not causal
        model = AverageModel(AverageModel.Config(hidden=7, window=0)).build(3, 4).double().eval()
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


def _keras_gru_reference(gru, x):
    """Keras 2's GRU cell (reset_after=False, gate order z, r, h), written out per step."""
    def hs(v):
        return (0.2 * v + 0.5).clamp(0, 1)

    H = gru.hidden_size
    for k in range(gru.num_layers):
        w, u, b = (getattr(gru, f"{n}_l{k}").detach() for n in ("weight_ih", "weight_hh", "bias"))
        h = torch.zeros(x.shape[1], H, dtype=x.dtype)
        out = []
        for t in range(x.shape[0]):
            g = x[t] @ w.T + b
            z = hs(g[:, :H] + h @ u[:H].T)
            r = hs(g[:, H:2 * H] + h @ u[H:2 * H].T)
            cand = torch.tanh(g[:, 2 * H:] + (r * h) @ u[2 * H:].T)
            h = z * h + (1 - z) * cand
            out.append(h)
        x = torch.stack(out)
    return x


def test_gru_eval_equals_keras_cell_and_training_is_random():
    model = _build(GRUModel).eval()
    x, domain = _data()
    with torch.no_grad():
        ref = _keras_gru_reference(model.rnn, x)
        torch.testing.assert_close(model.rnn(x), ref, rtol=1e-12, atol=1e-12)
        expected = model.classifier(
            torch.nn.functional.batch_norm(
                ref.reshape(-1, 5), model.norm.running_mean, model.norm.running_var,
                model.norm.weight, model.norm.bias, False, 0.0, 1e-3,
            )
        ).reshape(7, 6, 4)
        torch.testing.assert_close(model(x, domain), expected, rtol=1e-12, atol=1e-12)
    # Training: the GRU dropout makes outputs random, and a fixed seed reproduces them.
    model.rnn.train()
    torch.manual_seed(1)
    a = model.rnn(x)
    torch.manual_seed(1)
    b = model.rnn(x)
    torch.manual_seed(2)
    c = model.rnn(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    model.rnn.p_input = 0.0
    torch.testing.assert_close(model.rnn(x), ref, rtol=1e-12, atol=1e-12)


def test_gru_recurrent_dropout_is_per_sequence_and_constant_over_time():
    # Weights that make the state's dropout mask m (0 or 1/(1-p) = 2 per unit) visible: the
    # hard-sigmoid gates clip to exactly r = 1 and z = 0, so h_t = tanh(c + m * h_{t-1}) with
    # h_0 = 0. From t = 2 on, a dropped unit gives exactly tanh(c) and a kept one more.
    from actrec.nn.gru import DropoutGRU

    H, N, T, c = 16, 8, 6, 0.5
    gru = DropoutGRU(1, H, 1, recurrent_dropout=0.5).double()
    with torch.no_grad():
        for w in gru.parameters():
            w.zero_()
        gru.bias_l0[:H] = -40.0  # z = 0
        gru.bias_l0[H : 2 * H] = 40.0  # r = 1
        gru.bias_l0[2 * H :] = c
        gru.weight_hh_l0[2 * H :] = torch.eye(H, dtype=DT)
    x = torch.zeros(T, N, 1, dtype=DT)
    base = torch.tanh(torch.tensor(c, dtype=DT))
    torch.manual_seed(0)
    out = gru.train()(x)  # [T, N, H]; out[t] is h_{t+1}
    torch.testing.assert_close(out[0], base.expand(N, H), rtol=0, atol=0)
    kept = out[1:] != base  # [T-1, N, H]: which units the mask kept at each step
    for t in range(1, T - 1):
        assert torch.equal(kept[t], kept[0]), f"mask changed over time at step {t + 2}"
    assert len({tuple(row.tolist()) for row in kept[0]}) == N, "sequences share a mask"
    assert 0.25 < kept[0].double().mean().item() < 0.75  # about half dropped
    # Kept units saw 2 * h_{t-1}; at evaluation nothing is dropped or scaled.
    torch.testing.assert_close(out[1:][kept], torch.tanh(c + 2 * out[:-1][kept]), rtol=0, atol=0)
    ev = gru.eval()(x)
    torch.testing.assert_close(ev[1:], torch.tanh(c + ev[:-1]), rtol=0, atol=0)


def test_average_model_golden_values():
    # Hand-set MLP: Linear1 = [[1, 0], [0, -1]], ReLU, Linear2 = [[1, 2], [0, 1]] + (0.5, 0).
    model = _build_average_by_hand()
    x = torch.tensor([[[1.0, 2.0], [-2.0, -6.0]],
                      [[3.0, -4.0], [0.0, -2.0]],
                      [[2.0, 5.0], [5.0, 2.0]]], dtype=DT)  # [T=3, N=2, D=2]
    domain = torch.tensor([0, 1])
    # Row 0 mean (2, 1) -> (2, -1) -> relu (2, 0) -> (2.5, 0).
    # Row 1 over its 3 frames: mean (1, -2) -> (1, 2) -> (5.5, 2); over its 2 real frames
    # (the third is padding): mean (-1, -4) -> (-1, 4) -> relu (0, 4) -> (8.5, 4).
    with torch.no_grad():
        full = model(x, domain)
        masked = model(x, domain, torch.tensor([[True, True], [True, True], [True, False]]))
    want_full = torch.tensor([[2.5, 0.0], [5.5, 2.0]], dtype=DT)
    want_masked = torch.tensor([[2.5, 0.0], [8.5, 4.0]], dtype=DT)
    for t in range(3):  # every frame gets its window's prediction
        torch.testing.assert_close(full[t], want_full, rtol=0, atol=1e-15)
        torch.testing.assert_close(masked[t], want_masked, rtol=0, atol=1e-15)


def _build_average_by_hand(window: int = 0):
    model = AverageModel(AverageModel.Config(hidden=2, window=window)).build(2, 2).double().eval()
    lin1, lin2 = model.mlp[0], model.mlp[3]
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        lin1.bias.zero_()
        lin2.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        lin2.bias.copy_(torch.tensor([0.5, 0.0]))
    return model


# ---------------------------------------------------------------------------------------------
# Padding: the mask keeps padded frames out of every statistic, loss and gradient.

LENGTHS = [7, 5, 3, 7, 2, 6]  # real frames per row of a T = 7 batch (D1 rows 0-2, D2 rows 3-5)


def _padded(x, lengths, seed):
    """``x`` with every padded frame replaced by large random garbage, and the mask [T, N]."""
    mask = torch.arange(x.shape[0])[:, None] < torch.tensor(lengths)[None]  # [T, N]
    g = torch.Generator().manual_seed(seed)
    garbage = torch.randn(x.shape, generator=g, dtype=DT) * 100
    return torch.where(mask[..., None], x, garbage), mask


def _labels(T=7, N=6, K=4):
    return torch.randint(0, K, (T, N), generator=torch.Generator().manual_seed(3))


def _masked_loss(logits, y, mask):
    """Mean cross-entropy over the real frames."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    ce = ce.reshape(y.shape)  # [T, N]
    return ce[mask].sum() / mask.sum() if mask is not None else ce.mean()


def _train_step(model, x, domain, mask, y, seed=0, train=True):
    """One forward/backward (training mode unless ``train`` is False): (loss, logits, grads,
    buffers after the step)."""
    model.train(train).zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout draws in runs that compare
    logits = model(x, domain, mask) if mask is not None else model(x, domain)
    loss = _masked_loss(logits, y, mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return loss.detach(), logits.detach(), grads, buffers


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_padding_values_change_nothing_bit_for_bit(plugin):
    x, domain = _data()
    y = _labels()
    runs = []
    for seed in (1, 2):  # the same batch padded with two kinds of garbage
        xp, mask = _padded(x, LENGTHS, seed)
        assert not torch.equal(xp, x)
        runs.append(_train_step(_build(plugin), xp, domain, mask, y))
    (l1, o1, g1, b1), (l2, o2, g2, b2) = runs
    assert torch.isfinite(l1) and torch.equal(l1, l2)
    assert torch.equal(o1[mask], o2[mask])
    assert g1.keys() == g2.keys() and len(g1) == len(list(_build(plugin).parameters()))
    for name in g1:
        assert torch.equal(g1[name], g2[name]), name
    for name in b1:
        assert torch.equal(b1[name], b2[name]), name
        if name.endswith("trained_len"):
            assert (b1[name] == 4).all()  # max_len 4 < T: capped (each domain)


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_training_on_a_padded_batch_equals_the_unpadded_batch(plugin):
    # Every row has L = 3 real frames of T = 7: the padded batch must train like the batch
    # cut to its L real timesteps (statistics, loss, gradients, running statistics, and the
    # per-timestep slot 3 < max_len = 4, which only padding reached, left alone).
    L = 3
    x, domain = _data()
    y = _labels()
    xp, mask = _padded(x, [L] * 6, seed=1)
    la, oa, ga, ba = _train_step(_build(plugin), xp, domain, mask, y)
    lb, ob, gb, bb = _train_step(_build(plugin), x[:L], domain, None, y[:L])
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(la, lb, **close)
    torch.testing.assert_close(oa[:L], ob, **close)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], **close, msg=name)
    for name in ba:
        torch.testing.assert_close(ba[name], bb[name], **close, msg=name)
        if name.endswith("trained_len"):
            assert (ba[name] == L).all()


@pytest.mark.parametrize("plugin", ALL, ids=lambda p: p.name)
def test_eval_on_a_padded_batch_equals_each_row_alone(plugin):
    # At evaluation no model has a cross-row statistic: each row's real frames must get the
    # logits and the loss gradients of running that row alone at its own length.
    model = _build(plugin)
    with torch.no_grad():
        for seed in range(3):
            model(*_data(seed=seed))
    model.eval()
    x, domain = _data(seed=7)
    y = _labels()
    xp, mask = _padded(x, LENGTHS, seed=1)
    loss, logits, grads, _ = _train_step(model, xp, domain, mask, y, train=False)
    model.zero_grad(set_to_none=True)
    total = mask.sum()
    alone_loss = 0.0
    for n, length in enumerate(LENGTHS):
        out = model(x[:length, n : n + 1], domain[n : n + 1])  # [L, 1, K]
        torch.testing.assert_close(logits[:length, n], out[:, 0].detach(), rtol=1e-10, atol=1e-12)
        alone_loss = alone_loss + F.cross_entropy(out[:, 0], y[:length, n], reduction="sum") / total
    alone_loss.backward()
    torch.testing.assert_close(loss, alone_loss.detach(), rtol=1e-10, atol=1e-12)
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_masks_must_pad_at_the_end():
    model = _build(LSTMModel)
    x, domain = _data()
    mask = torch.ones(7, 6, dtype=torch.bool)
    mask[2, 0] = False  # a hole: real frames after a padded one
    with pytest.raises(ValueError, match="end of a row"):
        model(x, domain, mask)
    with pytest.raises(ValueError, match=r"mask must be \[T=7, N=6\]"):
        model(x, domain, mask[:3])


@pytest.mark.parametrize("plugin", [BNLSTMModel, DDLSTMModel], ids=lambda p: p.name)
def test_max_len_defaults_to_the_history_and_must_be_set_to_build(plugin):
    assert plugin.Config().max_len is None
    assert plugin.Config.from_options({"max_len": "none"}).max_len is None
    with pytest.raises(ConfigError, match=f"model '{plugin.name}'.*max_len"):
        plugin(plugin.Config()).build(3, 4)
    with pytest.raises(ConfigError, match="'max_len'"):
        plugin.Config.from_options({"max_len": "0"})
