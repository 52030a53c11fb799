"""Lab peft-real: the held-out split, the parameter and optimizer-state counts, the claim's verdict, the greedy
check, the memory sampler, and the tiny preset end to end (SmolLM2's tokenizer: skips when it is not installed)."""
import json
import math

import numpy as np
import pytest

from minifm.lab import peft_real as lab
from minifm.lab import run_experiment
from minifm.lifecycle.peft_comparison import optimizer_state_bytes
from minifm.models import GPT, GPTConfig
from minifm.optim import AdamW
from minifm.peft import LoraConfig, get_peft_model

SMOLLM2 = GPTConfig(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_embd=576, n_kv_head=3, bias=False,
                    pos="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=1536)


def tiny_gpt():
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, bias=False,
                         pos="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=24))


def test_lora_counts_on_smollm2_by_hand():
    # per layer: q (576 + 576) + k (576 + 192) + v (576 + 192) + o (576 + 576) = 3,840 per rank;
    # gate, up, down: 3 x (576 + 1536) = 6,336 more; 30 layers
    assert lab.lora_param_count(SMOLLM2, 1, lab.ATTENTION) == 30 * 3840 == 115_200
    assert lab.lora_param_count(SMOLLM2, 16, lab.ATTENTION) == 1_843_200
    assert lab.lora_param_count(SMOLLM2, 16, "all-linear") == 16 * 30 * (3840 + 6336) == 4_884_480
    total = 49152 * 576 + 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576
    assert total == 134_515_008
    assert lab.lora_param_count(SMOLLM2, 16, "all-linear") / total < lab.PARAM_SHARE  # 3.63%: inside the budget


@pytest.mark.parametrize("rank, targets", [(1, lab.ATTENTION), (4, "all-linear"), (3, ["v_proj", "down_proj"])])
def test_lora_count_and_adamw_state_equal_the_model_and_optimizer(rank, targets):
    model = get_peft_model(tiny_gpt(), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets),
                           rng=np.random.default_rng(0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.size for p in trainable) == lab.lora_param_count(model.base_model.config, rank, targets)
    optimizer = AdamW(trainable, lr=1e-3)
    for p in trainable:
        p.grad = np.ones_like(p.data)
    optimizer.step()
    assert optimizer_state_bytes(optimizer) == lab.adamw_state_bytes(sum(p.size for p in trainable))


def test_every_method_builds_and_the_full_count_is_the_model():
    settings = lab.PRESETS["tiny"]
    for method in lab.ALL_METHODS:
        config = lab.peft_config(method, settings)
        model = tiny_gpt() if config is None else get_peft_model(tiny_gpt(), config, rng=np.random.default_rng(0))
        trainable = sum(p.size for p in model.parameters() if p.requires_grad)
        total = sum(p.size for p in tiny_gpt().parameters())
        assert (trainable == total) == (method == "full"), method
        assert lab.describe(method, settings)
    with pytest.raises(ValueError, match="unknown method"):
        lab.peft_config("dora", settings)
    assert lab.family("lora_r16_all") == "lora" and lab.family("ia3") == "ia3"


def test_verdict_rule():
    full_params, lora_params = 1_000_000, 40_000  # 4%
    met = lab.claim_verdict([0.80, 0.82, 0.84], [0.80, 0.81, 0.82], full_params, lora_params)
    assert met["met"] and met["accuracy_ratio"] == pytest.approx(0.81 / 0.82) and met["param_ratio"] == 0.04
    assert met["settled"]
    short = lab.claim_verdict([0.80, 0.82, 0.84], [0.60, 0.62, 0.64], full_params, lora_params)
    assert not short["met"] and short["settled"] and short["accuracy_ratio"] == pytest.approx(0.62 / 0.82)
    too_big = lab.claim_verdict([0.8], [0.8], full_params, 50_000)  # exactly 5% is not "under 5%"
    assert not too_big["met"]
    exactly = lab.claim_verdict([0.5], [0.45], full_params, lora_params)  # exactly 90% counts
    assert exactly["met"] and exactly["settled"]  # one seed: no standard error, nothing to unsettle
    noisy = lab.claim_verdict([0.9, 0.5, 0.7], [0.66, 0.6, 0.64], full_params, lora_params)  # ratio 0.914
    assert noisy["met"] and not noisy["settled"]
    zero = lab.claim_verdict([0.0, 0.0], [0.1, 0.0], full_params, lora_params)
    assert not zero["met"] and math.isnan(zero["accuracy_ratio"])


def test_the_split_holds_out_people_and_towns():
    train = lab.context_examples("train", 300, seed=0)
    test = lab.context_examples("test", 60, seed=0)
    assert len(train) == 300 and len(test) == 60
    held_out_words = lab.TEST_NAMES | lab.TEST_TOWNS
    for example in train:  # nothing of the test side is ever seen in training
        words = set(example["context"].replace(".", " ").replace("'s", " ").split())
        words |= set(example["question"].replace("?", " ").replace("'s", " ").split())
        assert not words & held_out_words, example
    for example in test:
        name = example["question"].replace("?", "").replace("'s", "").split()
        assert set(name) & lab.TEST_NAMES, example
        if example["question"].startswith("Where"):
            assert example["answer"].rstrip(".").split()[-1] in lab.TEST_TOWNS
    for example in train[:50] + test:  # the reference passes tinyworld's grader, a near miss does not
        assert lab.is_correct(example, example["answer"])
        assert lab.is_correct(example, "Sure! " + example["answer"])
        assert not any(lab.is_correct(example, sentence + ".") for sentence in example["context"].split(". "))
    assert lab.context_examples("train", 20, seed=1) != lab.context_examples("train", 20, seed=0)
    assert lab.context_examples("test", 20, seed=0) == test[:20]
    with pytest.raises(ValueError, match="split"):
        lab.context_examples("validation", 1, 0)


class _Logits:
    def __init__(self, data):
        self.data = data


class _Oracle:
    """A fake model: at each position its argmax is the next input token (or `wrong` at one answer position)."""

    def __init__(self, vocab, wrong_at=None):
        self.vocab, self.wrong_at = vocab, wrong_at

    def __call__(self, inputs, attention_mask=None):
        batch, steps = inputs.shape
        logits = np.zeros((batch, steps, self.vocab), dtype=np.float32)
        following = np.concatenate([inputs[:, 1:], np.full((batch, 1), self.end)], axis=1)
        for row in range(batch):
            length = int(attention_mask[row].sum())
            following[row, length - 1] = self.end  # after the last input: the end-of-turn token
        if self.wrong_at is not None:
            row, back = self.wrong_at
            length = int(attention_mask[row].sum())
            following[row, length - back] = (following[row, length - back] + 1) % self.vocab
        np.put_along_axis(logits, following[..., None], 1.0, axis=-1)
        return _Logits(logits)


class _Tokenizer:
    """Characters as tokens, a ChatML-like template; id 1 ends a turn, 0 pads."""
    eos_token_id, pad_token_id, eos_token, pad_token, chat_template = 1, 0, "<end>", "<pad>", "chatml"

    def apply_chat_template(self, messages, add_generation_prompt=False, **kwargs):
        ids = []
        for message in messages:
            ids += [2] + [3 + ord(c) % 90 for c in message["role"] + ":" + message["content"]] + [1]
        return ids + ([2] + [3 + ord(c) % 90 for c in "assistant:"] if add_generation_prompt else [])


def test_greedy_check_is_aligned_with_the_answer_tokens():
    tokenizer = _Tokenizer()
    examples = lab.context_examples("test", 3, seed=0)
    oracle = _Oracle(96)
    oracle.end = 1
    assert lab.greedy_writes_reference(oracle, tokenizer, examples) == [True, True, True]
    for back in (1, 2, 4):  # the end token, the last answer token, one inside the answer
        wrong = _Oracle(96, wrong_at=(1, back))
        wrong.end = 1
        assert lab.greedy_writes_reference(wrong, tokenizer, examples) == [True, False, True], back


def test_peak_rss_sees_an_allocation():
    lab.release_free_memory()
    with lab.PeakRSS(interval=0.005) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched; still held when the sampler takes its last sample
    assert memory.peak - memory.start > 48 * 2**20
    del block
    assert lab.current_rss_bytes() > 0


def test_tiny_preset_end_to_end(smollm2_gguf, tmp_path):
    lines = []
    result = run_experiment("peft-real", preset="tiny", out=tmp_path, log=lines.append)
    report = json.loads((result.directory / "report.json").read_text())
    markdown = (result.directory / "report.md").read_text()
    assert set(report["methods"]) == set(lab.ALL_METHODS)
    for row in report["methods"].values():
        assert row["trainable_params"] > 0 and row["optimizer_bytes"] == 8 * row["trainable_params"]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["peak_rss_bytes"] > 0
    assert report["methods"]["full"]["trainable_params"] == report["total_params"]
    assert "## Verdict" in markdown and "LoRA r=16" in markdown and (result.directory / "peft_real.png").exists()
