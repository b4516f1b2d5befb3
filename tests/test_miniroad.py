"""The ``miniroad`` model and the input options of every recurrent model (dropout, LayerNorm
embedding): online stepping equals ``forward``, the architecture is the published one, the
options are what they say, and models built without them are unchanged."""

import pytest
import torch
from torch import nn

from actrec.errors import ConfigError
from actrec.registry import create
from actrec.train import optimizer_groups

T, N, D, K = 9, 3, 5, 4

# Every recurrent model with every new input option switched on.
CASES = [
    ("miniroad", {"hidden": 6, "embed": 7}),
    ("miniroad", {"hidden": 6, "embed": 7, "layers": 2, "input_projection": True}),
    ("lstm", {"hidden": 6, "layers": 2, "dropout": 0.3, "input_dropout": 0.2, "embed": 7}),
    ("lstm", {"hidden": 6, "input_dropout": 0.2, "input_projection": True, "embed": 5}),
    ("rnn", {"hidden": 6, "input_dropout": 0.2, "embed": 7}),
    ("gru", {"hidden": 6, "layers": 2, "fc": 5, "input_dropout": 0.2, "embed": 7}),
    ("ddlstm", {"hidden": 6, "layers": 2, "max_len": T, "dropout": 0.3, "input_dropout": 0.2,
                "embed": 7}),
    ("bnlstm", {"hidden": 6, "layers": 2, "max_len": T, "dropout": 0.3, "embed": 7}),
]


def _build(name, options):
    torch.manual_seed(0)
    return create("models", name, options).build(D, K).double()


def _train_a_little(model, x, domain, mask):
    """A few optimiser steps in training mode, so running statistics, LayerNorm gains and
    dropout-trained weights are not at their initial values."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):
        loss = model(x, domain, mask=mask).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_optimizer_step()


@pytest.mark.parametrize("name,options", CASES)
def test_online_stepping_equals_forward_with_every_new_option(name, options):
    model = _build(name, options)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, N, D, generator=gen, dtype=torch.float64)
    domain = torch.tensor([0, 0, 1])
    mask = torch.ones(T, N, dtype=torch.bool)
    mask[6:, 1] = False
    _train_a_little(model, x, domain, mask)
    model.eval()
    with torch.no_grad():
        whole = model(x, domain)  # [T, N, K]
        state = model.init_state(N, domain)
        steps = []
        for t in range(T):
            logits, state = model.step(x[t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps), whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,options", CASES)
def test_dropout_acts_in_training_only(name, options):
    model = _build(name, {**options, "input_dropout": 0.5} if name != "miniroad" else
                   {**options, "dropout": 0.5})
    x = torch.randn(T, N, D, dtype=torch.float64)
    domain = torch.zeros(N, dtype=torch.long)
    model.train()
    torch.manual_seed(3)
    a = model(x, domain)
    torch.manual_seed(4)
    b = model(x, domain)
    assert not torch.allclose(a, b)  # a different dropout mask
    if name in ("ddlstm", "bnlstm", "gru"):
        return  # their batch norms move their running statistics in training mode
    model.eval()
    torch.testing.assert_close(model(x, domain), model(x, domain))


def test_miniroad_is_the_published_architecture():
    model = create("models", "miniroad", {"hidden": 6, "embed": 7, "dropout": 0.2}).build(D, K)
    emb = model.embedding
    assert [type(m) for m in emb] == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout]
    assert (emb[0].in_features, emb[0].out_features, emb[3].p) == (D, 7, 0.2)
    assert isinstance(model.rnn, nn.GRU) and (model.rnn.input_size, model.rnn.hidden_size) == (7, 6)
    assert (model.head.in_features, model.head.out_features) == (6, K)
    # by hand: logits = head(relu(GRU(embedding(x)))) from a zero state
    model.eval()
    x = torch.randn(T, 2, D)
    h, _ = model.rnn(emb(x), torch.zeros(1, 2, 6))
    want = model.head(torch.relu(h))
    torch.testing.assert_close(model(x, torch.zeros(2, dtype=torch.long)), want)
    defaults = create("models", "miniroad", {}).config
    assert (defaults.hidden, defaults.embed, defaults.layers, defaults.dropout) == (1024, 2048, 1,
                                                                                    0.2)


def test_miniroad_padding_never_reaches_real_frames():
    model = _build("miniroad", {"hidden": 6, "embed": 7})
    model.train()
    x = torch.randn(T, N, D, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(T, N, dtype=torch.bool)
    mask[4:, 0] = False
    x2 = x.detach().clone()
    x2[4:, 0] = float("nan")  # padding holding garbage
    torch.manual_seed(0)
    a = model(x.detach(), torch.zeros(N, dtype=torch.long), mask=mask)
    torch.manual_seed(0)
    b = model(x2, torch.zeros(N, dtype=torch.long), mask=mask)
    torch.testing.assert_close(a[mask], b[mask])


def test_the_embedding_norm_parameters_are_not_weight_decayed():
    model = create("models", "lstm", {"hidden": 6, "embed": 7}).build(D, K)
    decayed = {id(p) for g in optimizer_groups(model, 0.05) if g["weight_decay"] for p in
               g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names == {"embedding.0.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"}


@pytest.mark.parametrize("name,options", [
    ("lstm", {}), ("ddlstm", {"max_len": 5}), ("gru", {}), ("rnn", {}),
])
def test_models_built_without_the_new_options_are_unchanged(name, options):
    """Same parameter names and initial values as before the options existed: old runs load."""
    model = _build(name, options)
    assert not any(k.startswith(("embedding", "input_dropout")) for k in model.state_dict())
    torch.manual_seed(0)
    again = create("models", name, {**options, "input_dropout": 0.0, "embed": 0}).build(D, K)
    assert all(torch.equal(a, b.double()) for a, b in
               zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("name,bad,match", [
    ("lstm", {"embed": -1}, "'embed' must be 0"),
    ("ddlstm", {"dropout": 1.0}, "'dropout' must lie in"),
    ("gru", {"input_dropout": -0.1}, "'input_dropout' must lie in"),
    ("miniroad", {"embed": 0}, "'embed' must be a positive integer"),
    ("miniroad", {"dropout": 1.5}, "'dropout' must lie in"),
])
def test_bad_options_are_clear_errors(name, bad, match):
    with pytest.raises(ConfigError, match=match):
        create("models", name, bad)


@pytest.mark.parametrize("name,options", [
    ("lstm", {"hidden": 6, "layers": 2}),
    ("ddlstm", {"hidden": 6, "layers": 2, "max_len": T}),
    ("bnlstm", {"hidden": 6, "layers": 2, "max_len": T}),
])
def test_dropout_between_layers_acts_in_training(name, options):
    x = torch.randn(T, N, D, dtype=torch.float64)
    domain = torch.zeros(N, dtype=torch.long)
    outs = {}
    for p in (0.0, 0.5):
        model = _build(name, {**options, "dropout": p})
        model.train()
        outs[p] = [(torch.manual_seed(s), model(x, domain))[1] for s in (3, 4)]
    torch.testing.assert_close(outs[0.0][0], outs[0.0][1])  # nothing random without dropout
    assert not torch.allclose(outs[0.5][0], outs[0.5][1])
