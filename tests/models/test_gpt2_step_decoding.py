"""GPT's one-token decoding step on GPT-2-layout models (graph recording off, KV cache, no padding): every
block runs as one minifm.kernels.gpt2_step call, with the same logits as the recorded (general) path up to
float32 rounding, the same greedy tokens and the same cache contents; biases (non-zero here), no biases,
exact and tanh GELU, batch 1 to 16; and the general path wherever the step does not apply (a padding mask,
RoPE/RMSNorm/SwiGLU models, graph recording on, float64, more than MAX_BATCH rows, a LoRA-wrapped layer)."""
import numpy as np
import pytest

from minifm.kernels import gpt2_step
from minifm.models import GPT, GPTConfig
from minifm.peft import LoraConfig, get_peft_model
from minifm.sampling.generate import generate

from greedy_decoding import count_calls, greedy_with_cache  # tests/models/greedy_decoding.py


def gpt2_model(seed: int = 0, **overrides) -> GPT:
    config = dict(vocab_size=120, block_size=48, n_layer=2, n_head=4, n_embd=40, seed=seed)
    config.update(overrides)
    model = GPT(GPTConfig(**config)).eval()
    rng = np.random.default_rng(seed + 100)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):  # GPT-2's initialisation zeroes them: give the step real biases to add
            parameter.data[...] = 0.1 * rng.standard_normal(parameter.data.shape).astype(parameter.data.dtype)
    return model




@pytest.fixture
def step_calls(monkeypatch):
    """How many times gpt2_step.gpt2_layer ran."""
    return count_calls(monkeypatch, gpt2_step, "gpt2_layer")


@pytest.mark.parametrize("options", [dict(), dict(bias=False), dict(mlp="gelu_tanh"), dict(n_head=1, n_embd=24)])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_step_matches_the_general_path(options, batch, step_calls, rng):
    model = gpt2_model(**options)
    prompt = rng.integers(0, 120, size=(batch, 5))
    fast_tokens, fast_logits, fast_cache = greedy_with_cache(model, prompt, 12, fast=True)
    assert step_calls[0] == 12 * model.config.n_layer  # every decoding step, every block; never the prompt
    general_tokens, general_logits, general_cache = greedy_with_cache(model, prompt, 12, fast=False)
    scale = np.abs(general_logits).max()
    np.testing.assert_allclose(fast_logits, general_logits, rtol=0, atol=2e-5 * scale)
    np.testing.assert_array_equal(fast_tokens, general_tokens)
    for ours, theirs in zip(fast_cache.keys + fast_cache.values, general_cache.keys + general_cache.values):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * max(1.0, np.abs(theirs).max()))


def test_generate_uses_the_step_and_matches_the_general_path(step_calls, rng):
    model = gpt2_model(seed=2)
    prompt = rng.integers(0, 120, size=(4, 6))
    ours = generate(model, prompt, 10)
    assert step_calls[0] == 9 * model.config.n_layer  # the first new token comes from the prompt's forward
    general_tokens, _, _ = greedy_with_cache(model, prompt, 10, fast=False)
    np.testing.assert_array_equal(ours[:, 6:], general_tokens)


@pytest.mark.parametrize("case", ["padding", "rope", "rmsnorm", "swiglu", "float64", "batch", "lora", "grad"])
def test_general_path_where_the_step_does_not_apply(case, step_calls, rng):
    overrides = {"rope": dict(pos="rope"), "rmsnorm": dict(norm="rmsnorm"), "swiglu": dict(mlp="swiglu"),
                 "float64": dict(dtype="float64")}.get(case, {})
    model = gpt2_model(**overrides)
    batch = gpt2_step.MAX_BATCH + 1 if case == "batch" else 2
    prompt = rng.integers(0, 120, size=(batch, 5))
    mask = None
    if case == "padding":
        mask = np.ones_like(prompt)
        mask[0, :2] = 0
    if case == "lora":
        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).eval()
    greedy_with_cache(model, prompt, 3, fast=case != "grad", attention_mask=mask)
    assert step_calls[0] == 0
