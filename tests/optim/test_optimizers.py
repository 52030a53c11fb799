"""SGD / Adam / AdamW follow torch.optim's trajectories; groups, state round trip, clipping, schedules."""
import math

import numpy as np
import pytest

import minifm as mf
from minifm.models import GPT, GPTConfig
from minifm.optim import SGD, Adam, AdamW, clip_grad_norm, grad_norm, param_groups_for_weight_decay, schedules

torch = pytest.importorskip("torch", reason="torch.optim is the oracle for the update rules")


def problem(seed=0):
    """A small least-squares + tanh problem with two parameter tensors (float64)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(16, 3))
    w0, b0 = rng.normal(size=(5, 3)), rng.normal(size=3)
    return x, y, w0, b0


def run_minifm(make_optimizer, steps=20, seed=0):
    x, y, w0, b0 = problem(seed)
    w, b = mf.tensor(w0, requires_grad=True, dtype=np.float64), mf.tensor(b0, requires_grad=True, dtype=np.float64)
    optimizer = make_optimizer([w, b])
    history = []
    for _ in range(steps):
        loss = (((mf.tensor(x, dtype=np.float64) @ w + b).tanh() - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(np.concatenate([w.data.ravel(), b.data]))
    return np.array(history), optimizer, (w, b)


def run_torch(make_optimizer, steps=20, seed=0):
    x, y, w0, b0 = problem(seed)
    w, b = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    optimizer = make_optimizer([w, b])
    history = []
    for _ in range(steps):
        loss = ((torch.tanh(torch.tensor(x) @ w + b) - torch.tensor(y)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(np.concatenate([w.detach().numpy().ravel(), b.detach().numpy()]))
    return np.array(history)


CASES = {
    "sgd": (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum-wd": (lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, dampening=0.1),
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, dampening=0.1)),
    "sgd-nesterov": (lambda p: SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    "adam": (lambda p: Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6),
             lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6)),
    "adam-l2": (lambda p: Adam(p, lr=0.02, weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=0.02, weight_decay=0.1)),
    "adamw": (lambda p: AdamW(p, lr=0.03, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=0.03, weight_decay=0.1)),
    "adamw-groups": (
        lambda p: AdamW([{"params": [p[0]], "weight_decay": 0.2}, {"params": [p[1]], "lr": 0.01, "weight_decay": 0.0}],
                        lr=0.03),
        lambda p: torch.optim.AdamW([{"params": [p[0]], "weight_decay": 0.2},
                                     {"params": [p[1]], "lr": 0.01, "weight_decay": 0.0}], lr=0.03),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_equals_torch_for_20_steps(case):
    ours, theirs = CASES[case]
    history, _, _ = run_minifm(ours)
    np.testing.assert_allclose(history, run_torch(theirs), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("case", ["sgd-momentum-wd", "adamw"])
def test_state_dict_round_trip_continues_identically(case):
    ours, _ = CASES[case]
    reference, _, _ = run_minifm(ours, steps=20)
    _, optimizer, (w, b) = run_minifm(ours, steps=10)
    saved_state = optimizer.state_dict()
    saved_weights = (w.data.copy(), b.data.copy())
    # a fresh optimizer on fresh parameters restored from the saved state continues the same path
    w2 = mf.tensor(saved_weights[0], requires_grad=True, dtype=np.float64)
    b2 = mf.tensor(saved_weights[1], requires_grad=True, dtype=np.float64)
    restored = ours([w2, b2])
    restored.load_state_dict(saved_state)
    x, y, _, _ = problem()
    for _ in range(10):
        loss = (((mf.tensor(x, dtype=np.float64) @ w2 + b2).tanh() - y) ** 2).mean()
        restored.zero_grad()
        loss.backward()
        restored.step()
    np.testing.assert_array_equal(np.concatenate([w2.data.ravel(), b2.data]), reference[-1])


def test_load_state_dict_rejects_mismatched_shapes():
    _, optimizer, _ = run_minifm(CASES["adamw"][0], steps=1)
    other = AdamW([mf.tensor(np.zeros((2, 2)), requires_grad=True), mf.tensor(np.zeros(3), requires_grad=True)])
    with pytest.raises(ValueError, match=r"exp_avg.*\(5, 3\).*\(2, 2\)"):
        other.load_state_dict(optimizer.state_dict())


def test_params_without_grad_are_skipped_and_bad_options_rejected():
    a = mf.tensor(np.ones(3), requires_grad=True)
    b = mf.tensor(np.ones(3), requires_grad=True)
    optimizer = AdamW([a, b], lr=0.1)
    a.grad = np.ones(3, dtype=np.float32)
    optimizer.step()
    assert np.all(b.data == 1) and np.all(a.data < 1)
    with pytest.raises(ValueError, match="unknown option"):
        AdamW([{"params": [a], "momentum": 0.9}])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SGD([a], lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="more than one"):
        SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_weight_decay_groups_exclude_biases_norms_and_embeddings():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, tie_weights=False))
    decay, no_decay = param_groups_for_weight_decay(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed == sorted(n for n, p in model.named_parameters()
                             if p.ndim == 2 and not n.startswith(("wte", "wpe")))
    assert "lm_head.weight" in decayed and all("norm" not in n and not n.endswith("bias") for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gradient_accumulation_equals_full_batch(rng):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dtype="float64"))
    ids = rng.integers(0, 11, size=(4, 8))
    model.loss(ids[:, :-1], ids[:, 1:]).backward()
    full = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    for half in (ids[:2], ids[2:]):
        (model.loss(half[:, :-1], half[:, 1:]) * 0.5).backward()
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, full[name], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("max_norm, norm_type", [(0.5, 2.0), (100.0, 2.0), (0.3, 1.0), (0.2, math.inf)])
def test_clip_grad_norm_equals_torch(max_norm, norm_type, rng):
    grads = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    ours = [mf.tensor(np.zeros_like(g), requires_grad=True, dtype=np.float64) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad, t.grad = g.copy(), torch.tensor(g)
    total = clip_grad_norm(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(expected.item(), rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
def test_grad_norm_is_torchs_total_norm_and_changes_nothing(norm_type, rng):
    grads = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    ours = [mf.tensor(np.zeros_like(g), requires_grad=True, dtype=np.float64) for g in grads]
    for o, g in zip(ours, grads):
        o.grad = g.copy()
    expected = torch.nn.utils.get_total_norm([torch.tensor(g) for g in grads], norm_type)
    assert grad_norm(ours, norm_type) == pytest.approx(expected.item(), rel=1e-12)
    for o, g in zip(ours, grads):
        np.testing.assert_array_equal(o.grad, g)
    assert grad_norm([mf.tensor(np.zeros(2), requires_grad=True)]) == 0.0  # no gradient yet


def test_clip_grad_norm_refuses_non_finite():
    p = mf.tensor(np.zeros(3), requires_grad=True)
    p.grad = np.array([1.0, np.nan, 0.0], dtype=np.float32)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        clip_grad_norm([p], 1.0)


def test_schedules_equal_their_formulas():
    max_lr, min_lr, warmup, total = 0.1, 0.01, 10, 110
    cosine = schedules.warmup_cosine(max_lr, warmup, total, min_lr)
    linear = schedules.warmup_linear(max_lr, warmup, total, min_lr)
    for step in range(0, 130, 7):
        if step < warmup:
            expected_cos = expected_lin = max_lr * step / warmup
        elif step >= total:
            expected_cos = expected_lin = min_lr
        else:
            progress = (step - warmup) / (total - warmup)
            expected_cos = min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            expected_lin = min_lr + (max_lr - min_lr) * (1 - progress)
        assert cosine(step) == pytest.approx(expected_cos, abs=1e-15)
        assert linear(step) == pytest.approx(expected_lin, abs=1e-15)
    assert cosine(warmup) == pytest.approx(max_lr) and cosine(total) == min_lr
    assert schedules.constant(0.3)(1000) == 0.3
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        schedules.warmup_cosine(0.1, 20, 10)
    with pytest.raises(ValueError, match="step must be >= 0"):
        cosine(-1)


def test_cosine_schedule_matches_transformers_lambda():
    """HF's get_cosine_schedule_with_warmup multiplier, written out, times max_lr (min_lr = 0)."""
    warmup, total = 5, 40
    schedule = schedules.warmup_cosine(1.0, warmup, total)
    for step in range(total):
        if step < warmup:
            expected = step / max(1, warmup)
        else:
            progress = (step - warmup) / max(1, total - warmup)
            expected = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
        assert schedule(step) == pytest.approx(expected, abs=1e-15)
    optimizer = SGD([mf.tensor(np.zeros(1), requires_grad=True)], lr=1.0)
    schedules.set_lr(optimizer, schedule(7))
    assert optimizer.param_groups[0]["lr"] == schedule(7)
