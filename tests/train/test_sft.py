"""Tests of SFT (minifm.train.sft, minifm.data.conversations.sft_example, minifm.data.batches.collate_sft): labels only on completion tokens, collation with and without packing,
the loss against a NumPy cross-entropy over completion positions, and a short run that learns."""
import numpy as np
import pytest

from minifm.autograd.grad_mode import no_grad
from minifm.models import GPT, GPTConfig
from minifm.data.batches import collate_sft
from minifm.data.conversations import sft_example
from minifm.train import sft

PAD = 0


def tiny_gpt(vocab=16, seed=0, dtype="float32"):
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16, seed=seed, dtype=dtype))


def test_sft_example_masks_the_prompt():
    ids, labels = sft_example([5, 6, 7], [8, 9])
    np.testing.assert_array_equal(ids, [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(labels, [-100, -100, -100, 8, 9])
    with pytest.raises(ValueError, match="non-empty completion"):
        sft_example([1, 2], [])


def test_collate_shifts_targets_and_pads():
    examples = [sft_example([3, 4], [5, 6]), sft_example([7], [8, 9, 10])]
    inputs, targets, mask = collate_sft(examples, max_length=5, pad_id=PAD)
    np.testing.assert_array_equal(inputs, [[3, 4, 5, 6, 0], [7, 8, 9, 10, 0]])
    np.testing.assert_array_equal(targets, [[-100, 5, 6, -100, -100], [8, 9, 10, -100, -100]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])


def test_packing_keeps_every_completion_token(rng):
    examples = [sft_example(rng.integers(1, 9, size=rng.integers(1, 5)), rng.integers(1, 9, size=rng.integers(1, 4)))
                for _ in range(7)]
    _, packed_targets, _ = collate_sft(examples, max_length=6, pad_id=PAD, packing=True)
    _, padded_targets, _ = collate_sft(examples, max_length=12, pad_id=PAD, packing=False)
    all_labels = np.concatenate([labels for _, labels in examples])
    # every completion label appears as a target except, when packing, the very first token
    assert np.sum(packed_targets != -100) == np.sum(all_labels[1:] != -100)
    assert np.sum(padded_targets != -100) == np.sum(all_labels != -100)


def test_sft_loss_is_cross_entropy_on_completion_positions_only(rng):
    model = tiny_gpt(dtype="float64")
    examples = [sft_example([1, 2, 3], [4, 5]), sft_example([6, 7], [8, 9, 10])]
    inputs, targets, mask = collate_sft(examples, max_length=6, pad_id=PAD)
    loss = sft.sft_loss(model, inputs, targets, mask)
    with no_grad():
        logits = model(inputs, attention_mask=mask).data
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows, cols = np.nonzero(targets != -100)
    expected = -np.mean(log_probs[rows, cols, targets[rows, cols]])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # changing a prompt token that no completion token can see changes nothing; a completion token does
    other = targets.copy()
    other[0, 0] = -100
    assert sft.sft_loss(model, inputs, other, mask).item() == pytest.approx(loss.item(), rel=1e-12)
    with pytest.raises(ValueError, match="no completion tokens"):
        sft.sft_loss(model, inputs, np.full_like(targets, -100), mask)


def test_short_sft_run_learns_the_completions():
    model = tiny_gpt(vocab=12, seed=1)
    # "prompt" a -> "completion" a + 5 (a in 1..4), so answers depend on the prompt
    examples = [sft_example([11, a], [a + 5, 10]) for a in range(1, 5)] * 4
    config = sft.SFTConfig(learning_rate=1e-2, max_steps=60, per_device_train_batch_size=8, max_length=6,
                           warmup_steps=5)
    before = sft.sft_loss(model, *collate_sft(examples, 6, PAD)).item()
    result = sft.train_sft_encoded(model, examples, PAD, config)
    after = sft.sft_loss(model, *collate_sft(examples, 6, PAD)).item()
    assert result.step == 60
    assert after < 0.1 * before
    with no_grad():
        logits = model(np.array([[11, a] for a in range(1, 5)])).data[:, -1]
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), [6, 7, 8, 9])
