"""Run directories (minifm.runs): every writer's output loads back with one rule for the model (the
checkpoint record) and one for the tokenizer (the directory, else its parent); PEFT outputs come back
with the same logits; models minifm cannot rebuild are refused with a clear message."""
import copy
import json

import numpy as np
import pytest

from minifm import no_grad
from minifm.checkpoint import save_checkpoint
from minifm.data import tinyworld
from minifm.models import GPT, GPTConfig, RewardModel
from minifm.peft import AdapterConfig, IA3Config, LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from minifm.runs import find_tokenizer, load_model, load_run, save_run
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tiny_policy():
    tokenizer = BPETokenizer.train(tinyworld.clean_corpus(20_000), 320, special_tokens=DEFAULT_SPECIAL_TOKENS)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=2, n_embd=16))
    return model, tokenizer


def assert_same_weights(model, loaded):
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_a_pretraining_run_loads_with_its_tokenizer(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    save_checkpoint(tmp_path, model, config={"stage": "pretrain", "train": {}})
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded, loaded_tokenizer = load_run(tmp_path)
    assert_same_weights(model, loaded)
    assert loaded_tokenizer.encode("Mara lives") == tokenizer.encode("Mara lives")


def test_a_lifecycle_stage_directory_uses_the_parents_tokenizer(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    tokenizer.save(tmp_path / "tokenizer.json")
    save_checkpoint(tmp_path / "sft", model, config={"stage": "sft", "learning_rate": 1e-3})
    loaded, _ = load_run(tmp_path / "sft")
    assert_same_weights(model, loaded)
    assert find_tokenizer(tmp_path / "sft") == tmp_path / "tokenizer.json"
    reward_model = RewardModel.from_policy(model)
    reward_model.score_head.weight.data[...] = 0.5
    save_checkpoint(tmp_path / "reward", reward_model, config={"stage": "reward"})
    loaded_reward = load_model(tmp_path / "reward")
    assert isinstance(loaded_reward, RewardModel)
    np.testing.assert_array_equal(loaded_reward.score_head.weight.data, reward_model.score_head.weight.data)


def test_missing_pieces_are_named(tiny_policy, tmp_path):
    model, _ = tiny_policy
    save_checkpoint(tmp_path / "a" / "b", model)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in .*b or in its parent"):
        load_run(tmp_path / "a" / "b")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train_state.json is missing"):
        load_model(tmp_path / "a")


PEFT_CONFIGS = {
    "lora": lambda: LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    "ia3": lambda: IA3Config(),
    "adapter": lambda: AdapterConfig(reduction_factor=4),
    "prompt": lambda: PromptTuningConfig(num_virtual_tokens=3),
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=3),
}


@pytest.mark.parametrize("method", sorted(PEFT_CONFIGS))
def test_a_saved_peft_policy_loads_back_with_the_same_outputs(tiny_policy, tmp_path, method):
    model, tokenizer = tiny_policy
    policy = get_peft_model(copy.deepcopy(model), PEFT_CONFIGS[method](), rng=np.random.default_rng(0))
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

    save_run(policy, tokenizer, tmp_path)
    merged = method in ("lora", "ia3")
    assert json.loads((tmp_path / "peft.json").read_text()) == {"method": method, "merged": merged}
    assert (tmp_path / "adapter_model.safetensors").stat().st_size > 0
    loaded, _ = load_run(tmp_path)
    assert isinstance(loaded, PeftModel) != merged
    loaded.eval()
    with no_grad():
        np.testing.assert_allclose(loaded(ids).numpy(), expected, rtol=1e-4, atol=1e-5)
