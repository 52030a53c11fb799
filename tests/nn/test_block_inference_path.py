"""The no-grad inference fast path of TransformerBlock gives the same numbers as the recorded path."""
import numpy as np
import pytest

import minifm as mf
from minifm.models import GPT, GPTConfig
from minifm.nn.attention import KVCache


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_cached_no_grad_steps_equal_recorded_forward(norm, n_kv_head, rng):
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, n_kv_head=n_kv_head, norm=norm)
    model = GPT(config)
    ids = rng.integers(0, 50, size=(3, 10))
    recorded = model(ids).data  # graph recording on: the general path, (B, T, V)
    block = model.blocks[0]
    assert not block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 32), np.float32), requires_grad=True))
    with mf.no_grad():
        assert block._can_run_inference_path(mf.Tensor(np.zeros((1, 1, 32), np.float32)))
        np.testing.assert_allclose(model(ids).data, recorded, rtol=0, atol=0)
        cache = KVCache(config.n_layer, 3, config.n_kv_head or config.n_head, 8, 16)
        steps = [model(ids[:, :6], cache=cache).data[:, -1]]
        for t in range(6, 10):
            steps.append(model(ids[:, t:t + 1], cache=cache).data[:, -1])
    np.testing.assert_allclose(np.stack(steps[1:], 1), recorded[:, 6:10], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(steps[0], recorded[:, 5], rtol=1e-4, atol=1e-5)
