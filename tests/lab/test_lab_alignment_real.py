"""Lab alignment-real: the chat-template encodings (the SFT mask, the preference pairs), the merged SFT adapter, the
saved adapters, DPO's loss on its training pairs, the reward model's figures, the verdict, and the tiny preset end to
end: the report's numbers against a direct computation, and a re-run that keeps every sub-run (SmolLM2's tokenizer:
skips when it is not installed)."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.data.batches import IGNORE_INDEX
from minifm.lab import alignment_real as lab
from minifm.lab import run_experiment
from minifm.lab.alignment import paired_over_seeds
from minifm.models import GPT, GPTConfig
from minifm.models.heads import RewardModel
from minifm.peft import get_peft_model
from minifm.pretrained.registry import resolve_model_path
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained
from minifm.train.dpo import evaluate_dpo, precompute_reference

SETTINGS = dict(lab.PRESETS["tiny"], lora_rank=2)


def tiny_gpt(seed=0):
    model = GPT(GPTConfig(vocab_size=40, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, bias=False,
                          pos="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=24))
    rng = np.random.default_rng(seed)
    for p in model.parameters():  # a model far from its initialisation: non-trivial log-probabilities
        p.data[...] = rng.normal(0, 0.3, p.data.shape)
    model.eval()
    return model


def synthetic_pairs(n=8, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        prompt = rng.integers(1, 40, size=5).tolist()
        pairs.append({"chosen": prompt + rng.integers(1, 40, size=4).tolist(),
                      "rejected": prompt + rng.integers(1, 40, size=3).tolist(), "prompt_length": 5, "margin": 0.0})
    return pairs


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return tokenizer_from_pretrained(resolve_model_path("smollm2-135m-instruct"))


def test_sft_mask_trains_the_assistant_turn_only(tokenizer):
    for task in tinyworld.instructions("train", n=6):
        ids, labels = lab.encode_demonstration(tokenizer, task["prompt"], task["completion"])
        prompt = lab.prompt_tokens(tokenizer, task["prompt"])
        trained = labels != IGNORE_INDEX
        assert ids[:len(prompt)].tolist() == prompt and not trained[:len(prompt)].any()
        assert trained[len(prompt):].all()  # everything after the generation prompt is the reply
        assert np.array_equal(labels[trained], ids[trained])
        assert tokenizer.decode(ids[trained].tolist()) == task["completion"] + "<|im_end|>"
        # the whole row is the template's rendering of the conversation (up to the turn's end token)
        full = tokenizer.apply_chat_template([{"role": "user", "content": task["prompt"]},
                                              {"role": "assistant", "content": task["completion"]}])
        assert list(full[:len(ids)]) == ids.tolist()


def test_preference_pairs_share_the_prompt(tokenizer):
    for pair in tinyworld.preferences("train", n=6):
        encoded = lab.encode_pair(tokenizer, pair)
        start = encoded["prompt_length"]
        assert encoded["chosen"][:start] == encoded["rejected"][:start] == lab.prompt_tokens(tokenizer, pair["prompt"])
        assert tokenizer.decode(encoded["chosen"][start:]) == pair["chosen"] + "<|im_end|>"
        assert tokenizer.decode(encoded["rejected"][start:]) == pair["rejected"] + "<|im_end|>"
        assert lab.decode_response(tokenizer, encoded["chosen"][start:] + [0, 5]) == pair["chosen"].strip()


def test_merged_adapter_gives_the_adapters_outputs_and_the_saved_state_round_trips(tmp_path):
    ids = np.random.default_rng(1).integers(0, 40, size=(2, 9))
    peft = lab.with_lora(tiny_gpt(), SETTINGS, seed=3)
    with no_grad():
        assert np.allclose(peft(ids).data, tiny_gpt()(ids).data)  # B = 0: a fresh LoRA changes nothing
    rng = np.random.default_rng(2)
    for name, p in peft.named_parameters():
        if p.requires_grad:
            p.data[...] = rng.normal(0, 0.2, p.data.shape)
    lab.save_trainable_state(peft, tmp_path / "a.safetensors")
    with no_grad():
        adapted = peft(ids).data
        assert not np.allclose(adapted, tiny_gpt()(ids).data)
        reloaded = get_peft_model(tiny_gpt(), lab.lora(SETTINGS), rng=np.random.default_rng(9))
        lab.load_trainable_state(reloaded, tmp_path / "a.safetensors")
        assert np.array_equal(reloaded(ids).data, adapted)
        merged = reloaded.merge_and_unload()
        assert isinstance(merged, GPT)
        assert np.allclose(merged(ids).data, adapted, atol=1e-5)
    wrong = get_peft_model(tiny_gpt(), lab.lora(dict(SETTINGS, lora_rank=3)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        lab.load_trainable_state(wrong, tmp_path / "a.safetensors")


def test_dpo_loss_starts_at_log_two_and_falls_on_its_training_pairs():
    sft = tiny_gpt()
    sft.requires_grad_(False)
    settings = dict(SETTINGS, dpo=dict(per_device_train_batch_size=4, learning_rate=2e-2, beta=0.5),
                    ppo=dict(SETTINGS["ppo"], max_steps=8, per_device_train_batch_size=4, num_ppo_epochs=1))
    config = lab.dpo_config(settings, 0)
    assert config.max_steps == 8 * 4 // (2 * 4) and not config.precompute_ref_log_probs
    scored = lab.with_reference_logps(sft, synthetic_pairs(), pad_id=0)
    manual = [dict(p) for p in synthetic_pairs()]
    precompute_reference(sft, manual, 0, 3)
    assert [p["ref_chosen_logps"] for p in scored] == pytest.approx([p["ref_chosen_logps"] for p in manual])
    fresh = lab.with_lora(sft, settings, seed=0)
    assert evaluate_dpo(fresh, scored, config, 0, 16)["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    policy, facts = lab.train_dpo_policy(sft, scored, 0, settings, seed=0)
    assert facts["steps"] == config.max_steps and facts["losses"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert facts["train_pairs_after"]["eval_loss"] < math.log(2) - 0.05
    assert facts["train_pairs_after"] == pytest.approx(evaluate_dpo(policy, scored, config, 0, 16))


def test_reward_model_metrics_equal_a_direct_computation(tokenizer):
    pairs = [lab.encode_pair(tokenizer, p) for p in tinyworld.preferences("test", n=10)]
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16,
                          bias=False, pos="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=16))
    reward_model = RewardModel(model)
    reward_model.score_head.weight.data[...] = np.random.default_rng(0).normal(0, 1, reward_model.score_head.weight.shape)
    metrics = lab.reward_model_metrics(reward_model, pairs, pad_id=0, batch_size=3)
    one_by_one = {key: np.array([reward_model.score(np.array([p[key]]))[0] for p in pairs])
                  for key in ("chosen", "rejected")}
    assert metrics["chosen_scores"] == pytest.approx(one_by_one["chosen"].tolist(), abs=1e-4)
    assert metrics["preference_accuracy"] == np.mean(one_by_one["chosen"] > one_by_one["rejected"])
    truth = [tinyworld.ground_truth_reward(p["prompt"], p[key]) for key in ("chosen_text", "rejected_text")
             for p in pairs]
    learned = np.concatenate([one_by_one["chosen"], one_by_one["rejected"]])
    assert metrics["pearson_r"] == pytest.approx(np.corrcoef(learned, truth)[0, 1], abs=1e-4)
    assert metrics["n_pairs"] == 10


def test_the_value_model_trains_its_own_lora_and_head_only():
    reward_model = lab.reward_model_from(tiny_gpt(), SETTINGS)
    rng = np.random.default_rng(4)
    for p in reward_model.parameters():  # a trained reward model: LoRA's B and the head no longer 0
        if p.requires_grad:
            p.data[...] = rng.normal(0, 0.3, p.data.shape)
    reward_model.requires_grad_(False)
    value_model = lab.value_model_from(reward_model)
    trainable = {name for name, p in value_model.named_parameters() if p.requires_grad}
    lora_names = {name.replace("score_head", "value_head") for name, p in reward_model.named_parameters()
                  if ".lora_" in name or name.startswith("score_head.")}
    assert trainable == lora_names and len(trainable) == 2 * 4 * 2 + 2  # A and B of q, k, v, o in 2 layers; head
    assert not any(p.requires_grad for p in reward_model.parameters())  # the reward model stays frozen
    ids = np.random.default_rng(0).integers(0, 40, size=(2, 7))
    with no_grad():  # the critic starts as the reward model read at every position
        assert np.allclose(value_model(ids).data[:, -1], reward_model(ids).data)


def test_verdict_words():
    def figure(per_seed):
        return {"seeds": len(per_seed), "vs_sft": paired_over_seeds([0.0] * len(per_seed), per_seed)}

    text = lab.verdict({"A": figure([0.3, 0.35, 0.4]), "B": figure([-0.3, -0.35, -0.4]), "C": figure([0.1, -0.1]),
                        "D": figure([0.2]), "E": figure([0.2, 0.2])})
    assert "A raised" in text and "B lowered" in text and "C did not change" in text
    assert "D cannot be judged" in text and "E cannot be judged" in text


@pytest.fixture(scope="module")
def tiny_run(smollm2_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("alignment-real")
    first = []
    result = run_experiment("alignment-real", preset="tiny", out=out, log=first.append)
    return result, first, out


def test_tiny_preset_report_numbers_are_consistent(tiny_run):
    result, _, _ = tiny_run
    report = json.loads((result.directory / "report.json").read_text())
    markdown = (result.directory / "report.md").read_text()
    assert (result.directory / "alignment_real.png").stat().st_size > 0
    sft = report["sft_evaluations"]
    assert len(sft) == lab.PRESETS["tiny"]["seeds"] == 2
    for evaluation in sft + [run["evaluation"] for runs in report["methods"].values() for run in runs]:
        assert len(evaluation["per_prompt"]) == report["n_prompts"] == lab.PRESETS["tiny"]["eval_prompts"]
        assert evaluation["reward"] == pytest.approx(np.mean(evaluation["per_prompt"]))
        for example in evaluation["examples"]:
            assert tinyworld.ground_truth_reward(example["prompt"], example["reply"]) == example["true_reward"]
    assert all(run["kl"] == 0.0 for run in sft)  # the SFT model against itself
    for method in lab.METHODS:
        runs = report["methods"][method]
        rewards = [run["evaluation"]["reward"] for run in runs]
        differences = np.array(rewards) - np.array([run["reward"] for run in sft])
        versus = report["policies"][method]["vs_sft"]
        assert versus["mean"] == pytest.approx(differences.mean())
        assert versus["se"] == pytest.approx(differences.std(ddof=1) / math.sqrt(len(differences)))
        assert versus["per_seed"] == pytest.approx(differences.tolist())
        if versus["se"] > 0:
            assert versus["p_value"] == pytest.approx(stats.ttest_rel(rewards, [run["reward"] for run in sft]).pvalue)
        assert f"{versus['mean']:+.3f} ± {versus['se']:.3f}" in markdown
        assert report["policies"][method]["backward_sequences"] == lab.sequences_backpropagated(method, report["settings"])
    dpo = report["methods"]["DPO"][0]
    assert dpo["steps"] == lab.dpo_config(report["settings"], 0).max_steps
    assert dpo["losses"][0] == pytest.approx(math.log(2), abs=1e-5)  # the policy starts as its reference
    ppo = report["methods"]["PPO-ptx"][0]
    assert [row["iteration"] for row in ppo["history"]] == list(range(1, lab.PRESETS["tiny"]["ppo"]["max_steps"] + 1))
    assert all(row["ptx_loss"] is not None for row in ppo["history"])
    reward = report["reward_model"]
    assert reward["preference_accuracy"] == np.mean(np.array(reward["chosen_scores"]) > np.array(reward["rejected_scores"]))
    assert reward["n_pairs"] == lab.PRESETS["tiny"]["reward"]["n_eval_pairs"]
    assert report["sft"]["steps"] == lab.PRESETS["tiny"]["sft"]["max_steps"]
    # r (in + out) per q (64, 64), k (64, 32), v (64, 32), o (64, 64), r = 4, 2 layers
    assert report["sft"]["trainable_params"] == 2 * 4 * (2 * (64 + 64) + 2 * (64 + 32))
    for heading in ("## Question", "## Setup", "## Reward model", "## Policies", "## What it shows"):
        assert heading in markdown


def test_a_rerun_keeps_every_sub_run_and_loads_no_model(tiny_run):
    result, first, out = tiny_run
    report = json.loads((result.directory / "report.json").read_text())
    again = []
    run_experiment("alignment-real", preset="tiny", out=out, log=again.append)
    done = [line for line in first if line.endswith(" s") and ": done in " in line]
    kept = [line for line in again if line.endswith(": kept")]
    assert len(kept) == len(done) == 3 + 2 * (1 + len(lab.METHODS))  # untuned, SFT, reward; per seed SFT + methods
    assert not any("loaded" in line for line in again) and not any("done in" in line for line in again)
    rerun = json.loads((result.directory / "report.json").read_text())
    assert rerun["policies"] == report["policies"] and rerun["reward_model"] == report["reward_model"]
