"""Post-training lifecycle helpers: standard errors, loading a pre-training run, the held-out comparison."""
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
