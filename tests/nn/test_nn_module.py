"""Module registration, traversal, state dicts and modes behave like torch.nn.Module."""
import numpy as np
import pytest

import minifm as mf
from minifm import nn


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 3, bias=False)])
        self.norm = nn.LayerNorm(3)
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))
        self.register_buffer("counts", np.zeros(3))

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) * self.scale


def test_registration_names_and_order():
    model = Toy()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scale", "embed.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                     "norm.weight", "norm.bias"]
    assert [name for name, _ in model.named_modules()] == ["", "embed", "layers", "layers.0", "layers.1", "norm"]
    assert list(model.state_dict()) == names + ["counts"]
    assert model.num_parameters() == 3 + 40 + 20 + 12 + 6


def test_shared_parameter_listed_once():
    model = Toy()
    model.tied = nn.Linear(10, 4)
    model.tied.weight = model.embed.weight.__class__(np.zeros((4, 10)))
    model.layers[1].weight = model.layers[0].weight  # share
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))


def test_state_dict_round_trip_and_errors(rng):
    source, target = Toy(), Toy()
    for p in source.parameters():
        p.data[...] = rng.normal(size=p.shape)
    target.load_state_dict(source.state_dict())
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    state = dict(source.state_dict())
    state["norm.weight"] = np.ones(5)
    with pytest.raises(ValueError, match=r"'norm.weight'.*\(5,\).*\(3,\)"):
        target.load_state_dict(state)
    state = dict(source.state_dict())
    del state["norm.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['norm.bias'\], unexpected keys \['extra'\]"):
        target.load_state_dict(state)
    result = target.load_state_dict(state, strict=False)
    assert result.missing_keys == ["norm.bias"] and result.unexpected_keys == ["extra"]


def test_state_dict_is_live_unless_copied():
    model = Toy()
    live, copied = model.state_dict(), model.state_dict(copy=True)
    model.scale.data += 1
    assert live["scale"][0] == 2 and copied["scale"][0] == 1


def test_train_eval_zero_grad_requires_grad_apply_and_to():
    model = Toy()
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model(np.array([[1, 2]])).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Toy" and seen.count("Linear") == 2
    params_before = list(model.parameters())
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters()) and model.counts.dtype == np.float64
    assert [id(p) for p in model.parameters()] == [id(p) for p in params_before]


def test_get_and_set_submodule():
    model = Toy()
    assert model.get_submodule("layers.1") is model.layers[1]
    replacement = nn.Linear(4, 3)
    model.set_submodule("layers.1", replacement)
    assert model.layers[1] is replacement and model.get_submodule("layers.1") is replacement
    assert "layers.1.bias" in dict(model.named_parameters())
    with pytest.raises(AttributeError, match="no submodule 'nope'"):
        model.get_submodule("layers.nope")
    assert model.get_parameter("layers.0.weight") is model.layers[0].weight


def test_parameter_assignment_rules():
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        layer.weight = np.zeros((2, 2))
    layer.bias = None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(np.zeros(3, dtype=np.int64))


def test_dropout_module(rng):
    dropout = nn.Dropout(0.25, rng=rng)
    x = mf.tensor(np.ones((200, 200)))
    y = dropout(x).data
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs(np.mean(y == 0) - 0.25) < 0.01
    dropout.eval()
    assert dropout(x) is x
    with pytest.raises(RuntimeError, match="rng"):
        nn.Dropout(0.5)(x)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)
