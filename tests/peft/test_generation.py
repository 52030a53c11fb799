"""KV-cached generation through a PeftModel equals generation without the cache (prompt, prefix, LoRA)."""
import numpy as np
import pytest

from minifm.models import T5, T5Config
from minifm.peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from peft_testing import perturb_trainable, tiny_gpt

CONFIGS = {
    "prompt": lambda: PromptTuningConfig(num_virtual_tokens=3),
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=True),
    "lora": lambda: LoraConfig(r=2),
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_gpt_generate_cached_equals_uncached(rng, method):
    peft_model = get_peft_model(tiny_gpt(block_size=32), CONFIGS[method]())
    perturb_trainable(peft_model, rng, scale=0.5)
    prompts = [[1, 2, 3, 4, 5], [6, 7]]  # ragged: left-padded inside generate
    cached = peft_model.generate(prompts, 6, do_sample=False, pad_token_id=0, use_cache=True)
    uncached = peft_model.generate(prompts, 6, do_sample=False, pad_token_id=0, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (2, 5 + 6)
    assert peft_model.training  # generate restores the training mode


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_t5_generate_cached_equals_uncached(rng, method):
    model = T5(T5Config(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8, dtype="float64", seed=2))
    peft_model = get_peft_model(model, CONFIGS[method]())
    perturb_trainable(peft_model, rng, scale=0.5)
    ids = rng.integers(1, 23, size=(2, 5))
    cached = peft_model.generate(ids, 5, do_sample=False, use_cache=True)
    uncached = peft_model.generate(ids, 5, do_sample=False, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
