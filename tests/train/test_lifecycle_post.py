"""Post-training lifecycle helpers: standard errors, loading a pre-training run, the held-out comparison."""
import json

import numpy as np
import pytest

from minifm import lifecycle_post as lp


def test_mean_and_standard_error_match_the_formula(rng):
    values = rng.normal(0.3, 2.0, size=57)
    mean, se = lp.mean_and_standard_error(values)
    assert mean == pytest.approx(values.sum() / values.size)
    assert se == pytest.approx(np.sqrt(np.sum((values - mean) ** 2) / (values.size - 1)) / np.sqrt(values.size))
    assert np.isnan(lp.mean_and_standard_error(np.array([1.0]))[1])


def test_presets_fit_the_budget_shape():
    for name, preset in lp.PRESETS.items():
        assert preset["ppo"]["response_length"] <= preset["max_new_tokens"] + 8, name
        assert preset["eval_samples"] >= 1 and preset["best_of_n"] >= 2, name


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from minifm.data import tinyworld
    from minifm.models import GPT, GPTConfig
    from minifm.tokenizer import BPETokenizer
    from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS

    tokenizer = BPETokenizer.train(tinyworld.clean_corpus(20_000), 320, special_tokens=DEFAULT_SPECIAL_TOKENS)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=2, n_embd=16))
    return model, tokenizer


def test_load_policy_reads_a_pretraining_run_directory(tiny_policy, tmp_path):
    from minifm.checkpoint import save_checkpoint

    model, tokenizer = tiny_policy
    from dataclasses import asdict

    flat = asdict(model.config)
    save_checkpoint(tmp_path, model, config={"model": {"arch": "gpt", "config": flat}, "stage": "pretrain"})
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded, loaded_tokenizer = lp._load_policy(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert loaded_tokenizer.encode("Mara lives") == tokenizer.encode("Mara lives")
    bert_dir = tmp_path / "bert"
    save_checkpoint(bert_dir, model, config={"model": {"arch": "bert", "config": flat}})
    with pytest.raises(ValueError, match="needs a GPT"):
        lp._load_policy(bert_dir)


def test_load_policy_reads_a_lifecycle_stage_directory(tiny_policy, tmp_path):
    # the training loop writes the run settings to config.json; the model config is in the checkpoint
    # record, and the tokenizer lives in the lifecycle run's root (the stage directory's parent)
    from minifm.checkpoint import save_checkpoint
    from minifm.train.reward import RewardModel

    model, tokenizer = tiny_policy
    tokenizer.save(tmp_path / "tokenizer.json")
    save_checkpoint(tmp_path / "sft", model, config={"stage": "sft", "learning_rate": 1e-3, "train": {}})
    loaded, _ = lp._load_policy(tmp_path / "sft")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    reward_model = RewardModel.from_policy(model)
    reward_model.score_head.weight.data[...] = 0.5
    save_checkpoint(tmp_path / "reward", reward_model, config={"stage": "reward", "train": {}})
    loaded_reward = lp._load_reward_model(tmp_path / "reward")
    np.testing.assert_array_equal(loaded_reward.score_head.weight.data, reward_model.score_head.weight.data)
    with pytest.raises(ValueError, match="holds a RewardModel"):
        lp._load_policy(tmp_path / "reward")


def test_evaluate_policies_pairs_every_policy_on_the_same_prompts(tiny_policy):
    from minifm.train.reward import RewardModel

    model, tokenizer = tiny_policy
    model.eval()
    reward_model = RewardModel.from_policy(model)
    reward_model.eval()
    preset = {**lp.get_preset("tiny"), "n_eval": 6, "eval_samples": 2, "max_new_tokens": 6, "best_of_n": 2}
    table = lp.evaluate_policies({"sft": model, "same": model, "best_of_n": model}, model, reward_model, tokenizer,
                                 preset, temperature=1.0, log=None)
    sft, same = table["sft"], table["same"]
    assert sft["n_prompts"] == 6 and sft["samples_per_prompt"] == 2
    # the same policy with the same seed samples the same answers: zero paired difference, zero KL
    assert same["ground_truth_reward"] == sft["ground_truth_reward"]
    assert same["difference_vs_sft"] == 0.0 and same["difference_vs_sft_se"] == 0.0
    assert same["kl_to_sft"] == pytest.approx(0.0, abs=1e-6)
    assert sft["ground_truth_reward_se"] >= 0.0 and -2.0 <= sft["ground_truth_reward"] <= 1.2
    assert table["best_of_n"]["kl_to_sft"] == pytest.approx(np.log(2) - 0.5)


def test_ppo_stage_with_ptx_mixes_in_the_sft_demonstrations(tiny_policy, tmp_path, monkeypatch):
    from minifm.train import ppo
    from minifm.train.reward import RewardModel
    from minifm.train.sft import encode_sft_examples

    model, tokenizer = tiny_policy
    model.eval()
    reward_model = RewardModel.from_policy(model)
    reward_model.eval()
    preset = lp.get_preset("tiny")
    assert preset["ppo"]["ptx_coef"] > 0  # CI's smoke run exercises PPO-ptx
    seen = {}
    original_init = ppo.PPOTrainer.__init__

    def spy(self, *args, **kwargs):
        seen["ptx_examples"] = kwargs.get("ptx_examples")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(ppo.PPOTrainer, "__init__", spy)
    _, history, metrics = lp.ppo_stage(model, reward_model, tokenizer, tmp_path, preset, log=None,
                                       num_iterations=1, batch_size=4, response_length=6, ptx_batch_size=4)
    expected = encode_sft_examples(tokenizer, lp._train_tasks(preset, tokenizer, model, preset["max_new_tokens"]))
    assert len(seen["ptx_examples"]) == len(expected) > 0
    for (ids, labels), (want_ids, want_labels) in zip(seen["ptx_examples"], expected):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(labels, want_labels)
    assert history[0]["ptx_loss"] is not None and np.isfinite(history[0]["ptx_loss"])
    assert metrics["config"]["ptx_coef"] == preset["ppo"]["ptx_coef"]
    _, history, _ = lp.ppo_stage(model, reward_model, tokenizer, tmp_path, preset, log=None, num_iterations=1,
                                 batch_size=4, response_length=6, ptx_coef=0.0)
    assert seen["ptx_examples"] is None and history[0]["ptx_loss"] is None


# ---------------------------------------------------------------- `minifm sft|dpo --peft ...` files

PEFT_CONFIGS = {
    "lora": dict(r=4, target_modules=["q_proj", "v_proj"]),
    "ia3": dict(),
    "adapter": dict(reduction_factor=4),
    "prompt": dict(num_virtual_tokens=3),
    "prefix": dict(num_virtual_tokens=3),
}


def _peft_config(method):
    from minifm.peft import AdapterConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

    classes = {"lora": LoraConfig, "ia3": IA3Config, "adapter": AdapterConfig, "prompt": PromptTuningConfig,
               "prefix": PrefixTuningConfig}
    return classes[method](**PEFT_CONFIGS[method])


@pytest.mark.parametrize("method", sorted(PEFT_CONFIGS))
def test_a_saved_peft_policy_loads_back_with_the_same_outputs(tiny_policy, tmp_path, method):
    import copy

    from minifm import no_grad
    from minifm.peft import PeftModel, get_peft_model

    model, tokenizer = tiny_policy
    policy = get_peft_model(copy.deepcopy(model), _peft_config(method), rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for param in policy.parameters():
        if param.requires_grad:  # move the adapter away from its output-preserving initialisation
            param.data[...] += rng.normal(0.0, 0.3, size=param.shape).astype(param.dtype)
    ids = np.array([tokenizer.encode("Mara lives in the red house")])
    policy.eval()
    with no_grad():
        expected = policy(ids).numpy()
        base_logits = model(ids).numpy()
    assert not np.allclose(expected, base_logits, atol=1e-4), "the perturbed adapter must change the outputs"

    lp._save_policy(policy, tokenizer, tmp_path)
    merged = method in ("lora", "ia3")
    assert json.loads((tmp_path / "peft.json").read_text()) == {"method": method, "merged": merged}
    assert (tmp_path / "adapter_model.safetensors").stat().st_size > 0
    loaded, _ = lp._load_policy(tmp_path)
    assert isinstance(loaded, PeftModel) != merged
    loaded.eval()
    with no_grad():
        np.testing.assert_allclose(loaded(ids).numpy(), expected, rtol=1e-4, atol=1e-5)


def _pretraining_run(model, tokenizer, directory):
    from dataclasses import asdict

    from minifm.checkpoint import save_checkpoint

    save_checkpoint(directory, model, config={"model": {"arch": "gpt", "config": asdict(model.config)}})
    tokenizer.save(directory / "tokenizer.json")
    return directory


@pytest.mark.slow
def test_cli_sft_and_dpo_with_peft_train_only_the_adapter(tiny_policy, tmp_path, capsys):
    from safetensors.numpy import load_file

    from minifm import cli
    from minifm.peft import PeftModel

    model, tokenizer = tiny_policy
    base_dir = _pretraining_run(model, tokenizer, tmp_path / "pre")
    before = load_file(str(base_dir / "model.safetensors"))

    assert cli.main(["sft", "--model", str(base_dir), "--out", str(tmp_path / "sft"), "--preset", "tiny",
                     "--max-steps", "3", "--peft", "prompt", "--num-virtual-tokens", "4"]) == 0
    # prompt tuning cannot be merged: the base weights are written back bit-identical, beside the prompt
    after = load_file(str(tmp_path / "sft" / "model.safetensors"))
    assert set(after) == set(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    adapter = load_file(str(tmp_path / "sft" / "adapter_model.safetensors"))
    assert {name: array.shape for name, array in adapter.items()} == {"prompt_encoder.weight": (4, model.config.n_embd)}

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
    merged, _ = lp._load_policy(tmp_path / "dpo")
    assert not isinstance(merged, PeftModel)
    changed = [name for name, array in load_file(str(tmp_path / "dpo" / "model.safetensors")).items()
               if not np.array_equal(array, before[name])]
    # only the LoRA-targeted projections changed when the adapter was merged in
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), changed
