"""Tests of minifm.train.dpo: response log-probs against NumPy, the loss at policy == reference,
and a short run that separates chosen from rejected responses."""
import numpy as np
import pytest

from minifm.autograd.grad_mode import no_grad
from minifm.models import GPT, GPTConfig
from minifm.train import dpo

PAD = 0


def tiny_gpt(vocab=12, seed=0, dtype="float32"):
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16, seed=seed, dtype=dtype))


def test_sequence_logps_sums_response_tokens_only():
    model = tiny_gpt(dtype="float64")
    rows, prompt_lengths = [[1, 2, 3, 4, 5], [6, 7, 8]], [3, 1]
    logps = dpo.sequence_logps(model, rows, prompt_lengths, PAD).data
    for row, start, value in zip(rows, prompt_lengths, logps):
        with no_grad():
            logits = model(np.array([row[:-1]])).data[0]
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = sum(log_probs[t - 1, row[t]] for t in range(start, len(row)))
        assert value == pytest.approx(expected, rel=1e-10)


def _pairs(rng, n):
    out = []
    for _ in range(n):
        prompt = [11] + list(rng.integers(1, 10, size=2))
        out.append({"chosen": prompt + [7, 10], "rejected": prompt + [3, 10], "prompt_length": 3})
    return out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_run_prefers_chosen_and_starts_at_policy_equals_reference(loss_type):
    rng = np.random.default_rng(0)
    encoded = _pairs(rng, 32)
    policy = tiny_gpt(seed=3)
    config = dpo.DPOConfig(beta=0.5, loss_type=loss_type, learning_rate=5e-3, max_steps=25,
                           per_device_train_batch_size=16, warmup_steps=1)
    # at the start (policy == reference) the sigmoid loss is log 2 and the ipo loss is 1 / (2 beta)^2
    first_batch = encoded[:16]
    dpo.precompute_reference(policy, first_batch, PAD)
    loss0, _ = dpo.dpo_loss_fn(config, PAD)(policy, first_batch)
    expected0 = np.log(2.0) if loss_type == "sigmoid" else (1 / (2 * config.beta)) ** 2
    assert loss0.item() == pytest.approx(expected0, rel=1e-5)
    result, stats = dpo.train_dpo_encoded(policy, encoded, PAD, config)
    assert result.step == 25
    assert stats["rewards_accuracy"] == 1.0 and stats["rewards_margin"] > 0
    held_out = _pairs(rng, 10)
    with no_grad():
        chosen, rejected = dpo.pair_logps(policy, held_out, PAD)
    assert np.all(chosen.data > rejected.data)


def test_on_the_fly_reference_equals_precomputed():
    rng = np.random.default_rng(1)
    encoded = _pairs(rng, 8)
    reference, policy = tiny_gpt(seed=4), tiny_gpt(seed=5)
    config_pre = dpo.DPOConfig(precompute_ref_log_probs=True)
    config_fly = dpo.DPOConfig(precompute_ref_log_probs=False)
    dpo.precompute_reference(reference, encoded, PAD)
    loss_pre, _ = dpo.dpo_loss_fn(config_pre, PAD)(policy, encoded)
    loss_fly, _ = dpo.dpo_loss_fn(config_fly, PAD, reference)(policy, encoded)
    assert loss_pre.item() == pytest.approx(loss_fly.item(), rel=1e-6)


def test_dpo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss_type"):
        dpo.DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo.DPOConfig(beta=0)
    with pytest.raises(ValueError, match="rpo_alpha"):
        dpo.DPOConfig(rpo_alpha=-1.0)


def test_rpo_alpha_adds_the_per_token_nll_of_the_chosen_responses():
    rng = np.random.default_rng(2)
    encoded = _pairs(rng, 6)
    encoded[0]["chosen"] = encoded[0]["chosen"] + [5]   # rows of different response lengths
    reference, policy = tiny_gpt(seed=6, dtype="float64"), tiny_gpt(seed=7, dtype="float64")
    dpo.precompute_reference(reference, encoded, PAD)
    plain, _ = dpo.dpo_loss_fn(dpo.DPOConfig(), PAD)(policy, encoded)
    with_rpo, _ = dpo.dpo_loss_fn(dpo.DPOConfig(rpo_alpha=0.7), PAD)(policy, encoded)
    # independent NLL: NumPy log-softmax over each chosen row, response tokens only
    total, count = 0.0, 0
    for pair in encoded:
        row, start = pair["chosen"], pair["prompt_length"]
        with no_grad():
            logits = policy(np.array([row[:-1]])).data[0]
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= sum(log_probs[t - 1, row[t]] for t in range(start, len(row)))
        count += len(row) - start
    assert with_rpo.item() - plain.item() == pytest.approx(0.7 * total / count, rel=1e-9)
    # the combined loss back-propagates into the policy
    with_rpo.backward()
    assert any(np.any(p.grad != 0) for p in policy.parameters() if p.grad is not None)
