"""The lifecycle's PEFT stage on a tiny model: eight runs, honest accounting, base model untouched."""
import json
import re

import numpy as np
import pytest

from minifm.data import tinyworld
from minifm.lifecycle.peft_comparison import PeftStageConfig, lora_verdict, method_specs, run_peft_comparison
from minifm.lifecycle.presets import PRESETS
from minifm.models import GPT, GPTConfig
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tokenizer():
    texts = [e["prompt"] + " " + e["completion"] for e in tinyworld.instructions("train", seed=0, n=200)]
    return BPETokenizer.train(texts, vocab_size=300, special_tokens=DEFAULT_SPECIAL_TOKENS)


def test_stage_runs_every_method_and_accounts_honestly(tmp_path, tokenizer):
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16, seed=0))
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    messages = []
    settings = {**PRESETS["tiny"]["peft"], "max_steps": 2, "n_train": 16, "n_test": 3, "max_new_tokens": 3}
    report = run_peft_comparison(model, tokenizer, tmp_path, settings, log=messages.append)
    rows = {row["method"]: row for row in report["rows"]}
    assert list(rows) == [name for name, _, _ in method_specs(PeftStageConfig(**settings))]
    total = sum(p.size for p in model.parameters())
    assert rows["full"]["trainable_params"] == total
    assert rows["lora_r1"]["trainable_params"] < rows["lora_r4"]["trainable_params"] < rows["lora_r16"]["trainable_params"]
    # LoRA's count is r (in + out) per target plus one d-wide row per chat special token (trainable_token_indices)
    token_rows = len(PeftStageConfig().lora_trainable_tokens) * model.config.n_embd
    assert token_rows > 0 and "5 special-token rows" in rows["lora_r16"]["setting"]
    assert rows["lora_r4"]["trainable_params"] - token_rows == 4 * (rows["lora_r1"]["trainable_params"] - token_rows)
    for row in rows.values():
        # AdamW keeps two float32 moments for each trainable parameter and nothing for frozen ones
        assert row["optimizer_bytes"] == 2 * 4 * row["trainable_params"], row["method"]
        assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["train_loss"])
    for name, param in model.named_parameters():
        np.testing.assert_array_equal(param.data, before[name], err_msg=name)  # every run trained a copy
    saved = json.loads((tmp_path / "peft" / "peft_results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == list(rows)
    assert (tmp_path / "peft" / "peft_tradeoff.png").stat().st_size > 0
    assert "| lora_r16 |" in (tmp_path / "peft" / "peft_table.md").read_text()
    assert any("LoRA r=16" in m for m in messages)


def test_lora_verdict_arithmetic():
    rows = [{"method": "full", "accuracy": 0.8, "trainable_params": 1000},
            {"method": "lora_r16", "accuracy": 0.76, "trainable_params": 49, "setting": "LoRA r=16 + 5 special-token rows"}]
    verdict = lora_verdict(rows)
    assert verdict["met"] and abs(verdict["accuracy_ratio"] - 0.95) < 1e-12
    assert verdict["summary"].startswith("LoRA r=16 + 5 special-token rows reached 0.760")
    assert "(95% of its accuracy)" in verdict["summary"] and "4.90% as many parameters" in verdict["summary"]
    assert not re.search(r"target|\bmet\b", verdict["summary"])   # the report's text: no pass/fail line
    rows[1]["trainable_params"] = 50
    assert not lora_verdict(rows)["met"]
    rows[0]["accuracy"] = 0.0
    assert "undefined" in lora_verdict(rows)["summary"] and "nan" not in lora_verdict(rows)["summary"]
