"""The lifecycle's post-training stages: standard errors, the preset's shape, the held-out comparison,
PPO-ptx's demonstrations, and `minifm sft|dpo --peft` writing only the adapter."""
import numpy as np
import pytest
from safetensors.numpy import load_file

from minifm import cli
from minifm.checkpoint import save_checkpoint
from minifm.data import tinyworld
from minifm.data.conversations import encode_sft_examples
from minifm.lifecycle import evaluation, post_training
from minifm.lifecycle.presets import PRESETS
from minifm.models import GPT, GPTConfig, RewardModel
from minifm.peft import PeftModel
from minifm.runs import load_run
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train import ppo


def test_mean_and_standard_error_match_the_formula(rng):
    values = rng.normal(0.3, 2.0, size=57)
    mean, se = evaluation.mean_and_standard_error(values)
    assert mean == pytest.approx(values.sum() / values.size)
    assert se == pytest.approx(np.sqrt(np.sum((values - mean) ** 2) / (values.size - 1)) / np.sqrt(values.size))
    assert np.isnan(evaluation.mean_and_standard_error(np.array([1.0]))[1])


def test_distinct_n_counts_unique_ngrams():
    assert evaluation.distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert evaluation.distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert evaluation.distinct_n([[1], []], 2) == 0.0


def test_presets_fit_the_budget_shape():
    for name, presets in PRESETS.items():
        preset = presets["post_training"]
        assert preset["ppo"]["response_length"] <= preset["max_new_tokens"] + 8, name
        assert preset["eval_samples"] >= 1 and preset["best_of_n"] >= 2, name


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    tokenizer = BPETokenizer.train(tinyworld.clean_corpus(20_000), 320, special_tokens=DEFAULT_SPECIAL_TOKENS)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=2, n_embd=16))
    return model, tokenizer


def test_evaluate_policies_pairs_every_policy_on_the_same_prompts(tiny_policy):
    model, tokenizer = tiny_policy
    model.eval()
    reward_model = RewardModel.from_policy(model)
    reward_model.eval()
    preset = {**PRESETS["tiny"]["post_training"], "n_eval": 6, "eval_samples": 2, "max_new_tokens": 6, "best_of_n": 2}
    table = evaluation.evaluate_policies({"sft": model, "same": model, "best_of_n": model}, model, reward_model,
                                         tokenizer, preset, temperature=1.0, log=lambda message: None)
    sft, same = table["sft"], table["same"]
    assert sft["n_prompts"] == 6 and sft["samples_per_prompt"] == 2
    # the same policy with the same seed samples the same answers: zero paired difference, zero KL
    assert same["ground_truth_reward"] == sft["ground_truth_reward"]
    assert same["difference_vs_sft"] == 0.0 and same["difference_vs_sft_se"] == 0.0
    assert same["kl_to_sft"] == pytest.approx(0.0, abs=1e-6)
    assert sft["ground_truth_reward_se"] >= 0.0 and -2.0 <= sft["ground_truth_reward"] <= 1.2
    assert table["best_of_n"]["kl_to_sft"] == pytest.approx(np.log(2) - 0.5)


def test_ppo_stage_with_ptx_mixes_in_the_sft_demonstrations(tiny_policy, tmp_path, monkeypatch):
    model, tokenizer = tiny_policy
    model.eval()
    reward_model = RewardModel.from_policy(model)
    reward_model.eval()
    preset = PRESETS["tiny"]["post_training"]
    assert preset["ppo"]["ptx_coef"] > 0  # CI's smoke run exercises PPO-ptx
    seen = {}
    original_init = ppo.PPOTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["ptx_examples"] = kwargs.get("ptx_examples")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(ppo.PPOTrainer, "__init__", spy)
    quiet = lambda message: None  # noqa: E731
    _, history, metrics = post_training.ppo_stage(model, reward_model, tokenizer, tmp_path, preset, log=quiet,
                                                  max_steps=1, per_device_train_batch_size=4, response_length=6,
                                                  ptx_batch_size=4)
    tasks = post_training._train_tasks(preset, tokenizer, model, preset["max_new_tokens"])
    expected = encode_sft_examples(tokenizer, tasks)
    assert len(seen["ptx_examples"]) == len(expected) > 0
    for (ids, labels), (want_ids, want_labels) in zip(seen["ptx_examples"], expected):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(labels, want_labels)
    assert history[0]["ptx_loss"] is not None and np.isfinite(history[0]["ptx_loss"])
    assert metrics["config"]["ptx_coef"] == preset["ppo"]["ptx_coef"]
    _, history, _ = post_training.ppo_stage(model, reward_model, tokenizer, tmp_path / "plain", preset, log=quiet,
                                            max_steps=1, per_device_train_batch_size=4, response_length=6,
                                            ptx_coef=0.0)
    assert seen["ptx_examples"] is None and history[0]["ptx_loss"] is None


@pytest.mark.slow
def test_cli_sft_and_dpo_with_peft_train_only_the_adapter(tiny_policy, tmp_path, capsys):
    model, tokenizer = tiny_policy
    base_dir = tmp_path / "pre"
    save_checkpoint(base_dir, model)
    tokenizer.save(base_dir / "tokenizer.json")
    before = load_file(str(base_dir / "model.safetensors"))

    assert cli.main(["sft", "--model", str(base_dir), "--out", str(tmp_path / "sft"), "--preset", "tiny",
                     "--max-steps", "3", "--peft", "prompt", "--num-virtual-tokens", "4"]) == 0
    # prompt tuning cannot be merged: the base weights are written back bit-identical, beside the prompt
    after = load_file(str(tmp_path / "sft" / "model.safetensors"))
    assert set(after) == set(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    adapter = load_file(str(tmp_path / "sft" / "adapter_model.safetensors"))
    # the policy has GPT-2's layout, so the adapter is in PEFT's layout (minifm/peft/io.py)
    assert {name: array.shape for name, array in adapter.items()} == {"prompt_embeddings": (4, model.config.n_embd)}

    # stacking a second method on an unmerged adapter is refused with a clear message
    capsys.readouterr()
    assert cli.main(["dpo", "--model", str(tmp_path / "sft"), "--out", str(tmp_path / "bad"), "--preset", "tiny",
                     "--max-steps", "2", "--peft", "lora"]) == 2
    assert "already a PeftModel (method 'prompt')" in capsys.readouterr().err

    assert cli.main(["dpo", "--model", str(base_dir), "--out", str(tmp_path / "dpo"), "--preset", "tiny",
                     "--max-steps", "3", "--peft", "lora", "--lora-r", "2"]) == 0
    adapter = load_file(str(tmp_path / "dpo" / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in name or "lora_B" in name for name in adapter)
    assert any(np.any(array != 0) for name, array in adapter.items() if "lora_B" in name)  # B moved from zero
    merged, _ = load_run(tmp_path / "dpo")
    assert not isinstance(merged, PeftModel)
    changed = [name for name, array in load_file(str(tmp_path / "dpo" / "model.safetensors")).items()
               if not np.array_equal(array, before[name])]
    # only the LoRA-targeted projections changed when the adapter was merged in
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), changed
