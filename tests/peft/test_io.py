"""Adapter-only save/load: round trip, file contents, errors."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from minifm.peft import (
    AdapterConfig, IA3Config, LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, from_pretrained,
    get_peft_model, load_adapter, save_adapter,
)
from peft_testing import perturb_trainable, random_ids, tiny_gpt

CONFIGS = [
    LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "fc_in"], bias="lora_only"),
    AdapterConfig(reduction_factor=4, mh_adapter=False),
    PromptTuningConfig(num_virtual_tokens=3),
    PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=True),
    IA3Config(target_modules=["v_proj", "fc_out"], feedforward_modules=["fc_out"]),
]


# the layout save_adapter(layout="auto") writes for each method on tiny_gpt, whose layout is GPT-2's
AUTO_LAYOUT = {"lora": "LORA", "adapter": "adapter", "prompt": "PROMPT_TUNING", "prefix": "prefix", "ia3": "IA3"}


@pytest.mark.parametrize("layout", ["minifm", "auto"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.peft_type)
def test_save_load_round_trip(tmp_path, rng, config, layout):
    peft_model = get_peft_model(tiny_gpt(), config)
    perturb_trainable(peft_model, rng)
    ids = random_ids(rng, 2, 6)
    expected = peft_model(ids).data.copy()
    save_adapter(peft_model, tmp_path, layout=layout)

    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    trainable = peft_model.get_nb_trainable_parameters()[0]
    assert not any(".default." in key for key in saved)  # PEFT's layout: no adapter name in the keys
    written_type = json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"]
    assert written_type == (config.peft_type if layout == "minifm" else AUTO_LAYOUT[config.peft_type])
    minifm_layout = written_type == config.peft_type
    if minifm_layout:  # PEFT's layout of GPT-2's fused c_attn also holds zero rows for k/v without LoRA
        assert sum(a.size for a in saved.values()) == trainable  # only the adapter, never the base model

    fresh = from_pretrained(tiny_gpt(), tmp_path)  # same seed -> same base weights
    np.testing.assert_array_equal(fresh(ids).data, expected)
    assert fresh.get_nb_trainable_parameters()[0] == 0  # loaded for inference
    trainable_again = from_pretrained(tiny_gpt(), tmp_path, is_trainable=True)
    if minifm_layout:  # read from PEFT's layout, q, k and v all carry a LoRA (c_attn is one module there)
        assert trainable_again.get_nb_trainable_parameters()[0] == trainable


def test_peft_names_save_pretrained_and_from_pretrained(tmp_path, rng):
    """PEFT's method names do what save_adapter / from_pretrained do (the contract's PeftModel.from_pretrained)."""
    peft_model = get_peft_model(tiny_gpt(), LoraConfig(r=2))
    perturb_trainable(peft_model, rng)
    ids = random_ids(rng, 2, 5)
    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_gpt(), tmp_path)
    assert isinstance(loaded, PeftModel) and loaded.get_nb_trainable_parameters()[0] == 0
    np.testing.assert_array_equal(loaded(ids).data, peft_model(ids).data)


def test_load_as_second_named_adapter(tmp_path, rng):
    source = get_peft_model(tiny_gpt(), LoraConfig(r=2))
    perturb_trainable(source, rng)
    ids = random_ids(rng, 1, 5)
    expected = source(ids).data.copy()
    save_adapter(source, tmp_path)
    target = get_peft_model(tiny_gpt(), LoraConfig(r=2))
    load_adapter(target, tmp_path, adapter_name="loaded")
    assert target.active_adapter == "loaded"
    # PEFT's layout (GPT-2's fused c_attn) holds the q and v LoRAs as one rank-4 LoRA: equal up to summation order
    np.testing.assert_allclose(target(ids).data, expected, rtol=0, atol=1e-12)


def test_load_rejects_a_different_model(tmp_path):
    save_adapter(get_peft_model(tiny_gpt(), LoraConfig(r=2)), tmp_path)
    with pytest.raises(ValueError, match="shape"):
        from_pretrained(tiny_gpt(n_embd=24, n_head=4), tmp_path)


def test_save_refuses_nan_and_merged(tmp_path):
    peft_model = get_peft_model(tiny_gpt(), LoraConfig(r=2))
    peft_model.merge_adapter()
    with pytest.raises(RuntimeError, match="unmerge"):
        save_adapter(peft_model, tmp_path)
    peft_model.unmerge_adapter()
    next(p for p in peft_model.parameters() if p.requires_grad).data[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        save_adapter(peft_model, tmp_path)
    assert not (tmp_path / "adapter_model.safetensors").exists()
