"""Hugging Face PEFT interoperability: minifm adapters load with the real `peft`, and PEFT's with minifm.

Base models: small random transformers models (a Llama with grouped-query attention, Qwen2, GPT-2), read by
GPT.from_pretrained and exported again with GPT.save_pretrained; transformers loads that export. Each
case runs both directions on the same base:
  minifm -> PEFT   get_peft_model (minifm), perturbed, save_pretrained (PEFT's layout), then
                   peft.PeftModel.from_pretrained(transformers model, dir): the same logits;
  PEFT -> minifm   peft.get_peft_model on the transformers model, perturbed, save_pretrained, then
                   minifm.peft.PeftModel.from_pretrained(GPT.from_pretrained(base), dir): the same logits;
and the two adapter files have the same key set (and shapes where the adapters have the same ranks),
and minifm's adapter_config.json fields are PEFT's own. Then the refusals (unknown peft_type, a target
module the model lacks, a shape mismatch, ...) and SmolLM2-135M (LoRA r=4 on q/v, both directions).
"""
import json
import warnings

import numpy as np
import pytest
from oracles import require
from safetensors.numpy import load_file, save_file

from minifm.models import GPT, GPTConfig
from minifm.peft import (
    AdapterConfig, IA3Config, LoraConfig, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model,
    save_adapter,
)
from minifm.peft.io import load_adapter_config

TOLERANCE = 2e-5  # float32 logits of order 1-3
LLAMA = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.1)
GPT2 = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.1)


@pytest.fixture(scope="module")
def libraries():
    torch = require("torch")
    transformers = require("transformers")
    peft = require("peft")
    return torch, transformers, peft


def _exported_base(tmp_path_factory, libraries, architecture: str):
    """A random transformers model, read by minifm and exported again: the directory both libraries load."""
    torch, transformers, _ = libraries
    torch.manual_seed(0)
    if architecture == "llama":
        hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    elif architecture == "qwen2":  # a Llama with q/k/v biases
        hf_model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**LLAMA))
    else:
        hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, bos_token_id=0, eos_token_id=0))
    source = tmp_path_factory.mktemp(f"{architecture}_source")
    hf_model.save_pretrained(source)
    exported = tmp_path_factory.mktemp(f"{architecture}_base")
    GPT.from_pretrained(source).save_pretrained(exported)
    return exported


@pytest.fixture(scope="module")
def bases(tmp_path_factory, libraries):
    return {name: _exported_base(tmp_path_factory, libraries, name) for name in ("llama", "qwen2", "gpt2")}


def _ids(rng, batch=2, steps=7):
    return rng.integers(0, 97, size=(batch, steps))


def _hf_model(libraries, base):
    torch, transformers, _ = libraries
    return transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


def _hf_logits(libraries, model, ids, virtual_tokens=0):
    """transformers logits (B, T, V); PEFT's prompt tuning also returns its P virtual positions first."""
    torch = libraries[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids)).logits.numpy()
    return logits[:, virtual_tokens:]


def _perturb_minifm(peft_model, rng, scale=0.3):
    for param in peft_model.parameters():
        if param.requires_grad:
            param.data[...] += scale * rng.standard_normal(param.shape)


def _perturb_peft(libraries, peft_model, seed=0, scale=0.3):
    torch = libraries[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in peft_model.named_parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn(param.shape, generator=generator))


def _saved(directory):
    """(tensors, adapter_config.json dict) of an adapter directory."""
    config = json.loads((directory / "adapter_config.json").read_text())
    return load_file(str(directory / "adapter_model.safetensors")), config


def minifm_to_peft(libraries, base, config, directory, rng, virtual_tokens=0):
    """(max |logit difference|, max |adapter effect|, saved tensors, saved config) of a minifm adapter run by peft."""
    peft = libraries[2]
    model = get_peft_model(GPT.from_pretrained(base), config)
    _perturb_minifm(model, rng)
    ids = _ids(rng)
    ours = model(ids).data
    with model.disable_adapter():
        plain = model(ids).data
    model.save_pretrained(directory)
    with warnings.catch_warnings():
        # peft warns about config fields it does not know or has to correct (fan_in_fan_out): none may be left
        warnings.filterwarnings("error", module=r"peft\.")
        theirs_model = peft.PeftModel.from_pretrained(_hf_model(libraries, base), directory).eval()
    theirs = _hf_logits(libraries, theirs_model, ids, virtual_tokens)
    return float(np.abs(ours - theirs).max()), float(np.abs(ours - plain).max()), *_saved(directory)


def peft_to_minifm(libraries, base, peft_config, directory, rng, virtual_tokens=0):
    """(max |logit difference|, max |adapter effect|, saved tensors, saved config) of a peft adapter run by minifm."""
    peft = libraries[2]
    hf_model = _hf_model(libraries, base)
    ids = _ids(rng)
    plain = _hf_logits(libraries, hf_model, ids)
    theirs_model = peft.get_peft_model(hf_model, peft_config)
    _perturb_peft(libraries, theirs_model)
    theirs = _hf_logits(libraries, theirs_model.eval(), ids, virtual_tokens)
    theirs_model.save_pretrained(directory)
    ours = PeftModel.from_pretrained(GPT.from_pretrained(base), directory)(ids).data
    return float(np.abs(ours - theirs).max()), float(np.abs(theirs - plain).max()), *_saved(directory)


def _peft_config(libraries, method: str, **fields):
    peft = libraries[2]
    classes = {"lora": peft.LoraConfig, "ia3": peft.IA3Config, "prompt": peft.PromptTuningConfig,
               "prefix": peft.PrefixTuningConfig}
    return classes[method](task_type="CAUSAL_LM", **fields)


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# (id, base, minifm config, (peft method, peft fields), prompt positions in PEFT's logits, equal shapes)
CASES = [
    ("llama-lora-qv-r4", "llama", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
     ("lora", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])), 0, True),
    ("llama-lora-attention-r3-alpha5", "llama", LoraConfig(r=3, lora_alpha=5, target_modules=ATTENTION),
     ("lora", dict(r=3, lora_alpha=5, target_modules=ATTENTION)), 0, True),
    ("llama-lora-all-linear-rslora", "llama",
     LoraConfig(r=2, lora_alpha=3, target_modules="all-linear", use_rslora=True),
     ("lora", dict(r=2, lora_alpha=3, target_modules="all-linear", use_rslora=True)), 0, True),
    ("llama-lora-patterns-tokens-saved", "llama",
     LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 3},
                alpha_pattern={"blocks.1.attn.q_proj": 7}, trainable_token_indices=[3, 5], modules_to_save=["norm1"]),
     ("lora", dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 3},
                   alpha_pattern={"layers.1.self_attn.q_proj": 7}, trainable_token_indices=[3, 5],
                   modules_to_save=["input_layernorm"])), 0, True),
    ("qwen2-lora-qk-biases", "qwen2", LoraConfig(r=2, target_modules=["q_proj", "k_proj"], bias="lora_only"),
     ("lora", dict(r=2, target_modules=["q_proj", "k_proj"], bias="lora_only")), 0, True),
    ("llama-ia3", "llama", IA3Config(), ("ia3", {}), 0, True),
    ("qwen2-ia3-no-feedforward", "qwen2", IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=["none"]),
     ("ia3", dict(target_modules=["k_proj", "v_proj"], feedforward_modules=[])), 0, True),
    ("llama-prompt", "llama", PromptTuningConfig(num_virtual_tokens=3),
     ("prompt", dict(num_virtual_tokens=3)), 3, True),
    ("llama-prefix", "llama", PrefixTuningConfig(num_virtual_tokens=3),
     ("prefix", dict(num_virtual_tokens=3)), 0, True),
    # GPT-2: minifm's q and v LoRAs (two As) are one rank-8 LoRA on c_attn in PEFT's file; PEFT's c_attn
    # LoRA is minifm LoRAs on q, k and v sharing one A
    ("gpt2-lora-qv-vs-c_attn", "gpt2", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
     ("lora", dict(r=4, lora_alpha=8, target_modules=["c_attn"])), 0, False),
    ("gpt2-lora-all-linear-bias", "gpt2", LoraConfig(r=2, lora_alpha=2, target_modules="all-linear", bias="lora_only"),
     ("lora", dict(r=2, lora_alpha=2, target_modules="all-linear", bias="lora_only")), 0, False),
    ("gpt2-ia3", "gpt2", IA3Config(), ("ia3", {}), 0, True),
    ("gpt2-prompt", "gpt2", PromptTuningConfig(num_virtual_tokens=2), ("prompt", dict(num_virtual_tokens=2)), 2, True),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_both_directions_give_the_same_logits_and_files(tmp_path, libraries, bases, case):
    name, base_name, minifm_config, (method, peft_fields), virtual_tokens, same_shapes = case
    base = bases[base_name]
    rng = np.random.default_rng(1)
    difference, effect, our_tensors, our_config = minifm_to_peft(
        libraries, base, minifm_config, tmp_path / "minifm", rng, virtual_tokens)
    assert difference < TOLERANCE, f"{name} minifm -> peft: max |logit difference| {difference}"
    assert effect > 0.05  # the adapter is not the identity
    peft_config = _peft_config(libraries, method, **peft_fields)
    difference, effect, their_tensors, their_config = peft_to_minifm(
        libraries, base, peft_config, tmp_path / "peft", rng, virtual_tokens)
    assert difference < TOLERANCE, f"{name} peft -> minifm: max |logit difference| {difference}"
    assert effect > 0.05

    # the files: the keys peft itself writes, and PEFT's config fields with PEFT's values
    assert set(our_tensors) == set(their_tensors)
    if same_shapes:
        assert {key: value.shape for key, value in our_tensors.items()} == \
               {key: value.shape for key, value in their_tensors.items()}
    assert set(our_config) <= set(their_config), sorted(set(our_config) - set(their_config))
    for field in ("peft_type", "task_type", "r", "lora_alpha", "use_rslora", "bias", "fan_in_fan_out",
                  "num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads", "trainable_token_indices"):
        if field in their_config and (same_shapes or field not in ("r", "lora_alpha")):
            assert our_config[field] == their_config[field], field
    for field in ("target_modules", "feedforward_modules", "modules_to_save"):
        if isinstance(peft_fields.get(field), list):  # PEFT writes "all-linear" out as full paths
            assert sorted(our_config[field]) == sorted(their_config[field]), field


def test_gpt2_c_attn_lora_reads_as_q_k_v_sharing_one_A(tmp_path, libraries, bases):
    """PEFT's one A (r, d) and B (3d, r) on c_attn: minifm holds copies of A and B's three row blocks."""
    peft = libraries[2]
    config = _peft_config(libraries, "lora", r=4, target_modules=["c_attn"])
    theirs = peft.get_peft_model(_hf_model(libraries, bases["gpt2"]), config)
    _perturb_peft(libraries, theirs)
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(GPT.from_pretrained(bases["gpt2"]), tmp_path)
    assert ours.peft_config["default"].target_modules == ["k_proj", "q_proj", "v_proj"]
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    lora_A = saved["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    lora_B = saved["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    attention = ours.base_model.blocks[0].attn
    for part, projection in enumerate((attention.q_proj, attention.k_proj, attention.v_proj)):
        np.testing.assert_array_equal(projection.lora_A["default"].weight.data, lora_A)
        np.testing.assert_array_equal(projection.lora_B["default"].weight.data, lora_B[part * 32:(part + 1) * 32])
    # written back: the shared A is recognised, so the file is PEFT's own again (rank 4, no pattern)
    ours.save_pretrained(tmp_path / "again")
    again = load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
    assert {key: value.shape for key, value in again.items()} == {key: value.shape for key, value in saved.items()}
    for key, value in saved.items():
        np.testing.assert_array_equal(again[key], value)
    config = json.loads((tmp_path / "again" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["c_attn"] and config["rank_pattern"] == {} and config["r"] == 4


def test_gpt2_independent_q_v_loras_become_one_block_diagonal_lora(tmp_path, bases, rng):
    config = LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(GPT.from_pretrained(bases["gpt2"]), config)
    _perturb_minifm(model, rng)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"c_attn": 4} and config["alpha_pattern"] == {"c_attn": 12}  # scale 3 kept
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    lora_A = saved["base_model.model.transformer.h.1.attn.c_attn.lora_A.weight"]
    lora_B = saved["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"]
    attention = model.base_model.blocks[1].attn
    np.testing.assert_array_equal(lora_A, np.concatenate([attention.q_proj.lora_A["default"].weight.data,
                                                          attention.v_proj.lora_A["default"].weight.data]))
    np.testing.assert_array_equal(lora_B[:32, :2], attention.q_proj.lora_B["default"].weight.data)
    np.testing.assert_array_equal(lora_B[64:, 2:], attention.v_proj.lora_B["default"].weight.data)
    assert not lora_B[:32, 2:].any() and not lora_B[32:64].any() and not lora_B[64:, :2].any()


def test_rank_and_alpha_patterns_follow_peft_rule(bases):
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 3},
                        alpha_pattern={"blocks.1.attn.q_proj": 7})
    assert (config.for_module("blocks.0.attn.v_proj").r, config.for_module("blocks.0.attn.v_proj").lora_alpha) == (3, 4)
    assert (config.for_module("blocks.1.attn.q_proj").r, config.for_module("blocks.1.attn.q_proj").lora_alpha) == (2, 7)
    assert config.for_module("blocks.0.attn.q_proj") is config
    model = get_peft_model(GPT.from_pretrained(bases["llama"]), config)
    state = model.adapter_state_dict()
    assert state["base_model.blocks.0.attn.v_proj.lora_A.weight"].shape == (3, 32)
    assert model.base_model.blocks[1].attn.q_proj.scaling["default"] == 3.5
    with pytest.raises(ValueError, match="rank_pattern"):
        LoraConfig(rank_pattern={"v_proj": 0})


# ---------------------------------------------------------------------- layouts
def test_layouts_auto_peft_and_minifm(tmp_path, bases, rng):
    ids = _ids(rng)
    lora = get_peft_model(GPT.from_pretrained(bases["llama"]), LoraConfig(r=2))
    _perturb_minifm(lora, rng)
    expected = lora(ids).data.copy()
    save_adapter(lora, tmp_path / "old", layout="minifm")  # minifm's own layout, as runs before this wrote
    old_config = json.loads((tmp_path / "old" / "adapter_config.json").read_text())
    assert old_config["peft_type"] == "lora"
    assert "base_model.blocks.0.attn.q_proj.lora_A.weight" in _saved(tmp_path / "old")[0]
    loaded = PeftModel.from_pretrained(GPT.from_pretrained(bases["llama"]), tmp_path / "old")
    np.testing.assert_array_equal(loaded(ids).data, expected)
    save_adapter(lora, tmp_path / "new")  # auto: PEFT's layout
    loaded = PeftModel.from_pretrained(GPT.from_pretrained(bases["llama"]), tmp_path / "new")
    np.testing.assert_array_equal(loaded(ids).data, expected)  # a Llama's names map one to one: bit for bit

    adapter = get_peft_model(GPT.from_pretrained(bases["llama"]), AdapterConfig(reduction_factor=4))
    save_adapter(adapter, tmp_path / "houlsby")  # auto: PEFT has no bottleneck adapter
    assert json.loads((tmp_path / "houlsby" / "adapter_config.json").read_text())["peft_type"] == "adapter"
    with pytest.raises(ValueError, match="layout='peft'.*Houlsby"):
        save_adapter(adapter, tmp_path / "houlsby", layout="peft")
    prefix = get_peft_model(GPT.from_pretrained(bases["gpt2"]), PrefixTuningConfig(num_virtual_tokens=2))
    save_adapter(prefix, tmp_path / "gpt2-prefix")  # auto: learned positions shift in PEFT
    assert json.loads((tmp_path / "gpt2-prefix" / "adapter_config.json").read_text())["peft_type"] == "prefix"
    with pytest.raises(ValueError, match="positions"):
        save_adapter(prefix, tmp_path / "gpt2-prefix", layout="peft")
    with pytest.raises(ValueError, match="layout must be"):
        save_adapter(lora, tmp_path / "x", layout="hf")


def test_peft_prefix_on_gpt2_is_refused(tmp_path, libraries, bases):
    theirs = libraries[2].get_peft_model(_hf_model(libraries, bases["gpt2"]),
                                         _peft_config(libraries, "prefix", num_virtual_tokens=2))
    theirs.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="PREFIX_TUNING.*positions"):
        PeftModel.from_pretrained(GPT.from_pretrained(bases["gpt2"]), tmp_path)


# ---------------------------------------------------------------------- bad inputs
@pytest.fixture
def lora_dir(tmp_path, bases, rng):
    """A Llama LoRA on q/v in PEFT's layout."""
    model = get_peft_model(GPT.from_pretrained(bases["llama"]), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    _perturb_minifm(model, rng)
    model.save_pretrained(tmp_path)
    return tmp_path


def _edit_config(directory, **changes):
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_tensors(directory, change):
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
V_B = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
X_A = "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight"  # no such module


@pytest.mark.parametrize("changes, error, message", [
    (dict(peft_type="LOHA"), ValueError, "peft_type='LOHA'"),
    (dict(target_modules=["w_q"]), ValueError, r"target_modules=\['w_q'\] matches no module.*'q_proj'"),
    (dict(target_modules=["embed_tokens"]), ValueError, "'model.embed_tokens', which is not a Linear"),
    (dict(use_dora=True), ValueError, "use_dora=True is not supported"),
    (dict(layers_to_transform=[0]), ValueError, r"layers_to_transform=\[0\] is not supported"),
    (dict(task_type="SEQ_CLS"), ValueError, "task_type='SEQ_CLS'"),
    (dict(init_lora_weights="pissa"), ValueError, "init_lora_weights='pissa'"),
    (dict(r=3), ValueError, f"adapter key '{Q_A}' .*file has shape \\(2, 32\\), model has \\(3, 32\\)"),
    (dict(target_modules=["q_proj"]), KeyError, "self_attn.v_proj.lora_A.weight"),
    (dict(target_modules=["q_proj", "v_proj", "k_proj"]), KeyError, "lacks.*k_proj.lora_A.weight"),
])
def test_bad_configs_are_named(lora_dir, bases, changes, error, message):
    _edit_config(lora_dir, **changes)
    with pytest.raises(error, match=message):
        PeftModel.from_pretrained(GPT.from_pretrained(bases["llama"]), lora_dir)


@pytest.mark.parametrize("change, error, message", [
    (lambda t: t.update({V_B: np.zeros((32, 2), np.float32)}), ValueError,
     f"adapter key '{V_B}'.*file has shape \\(32, 2\\), model has \\(16, 2\\)"),
    (lambda t: t.update({X_A: np.zeros((2, 32), np.float32)}), KeyError,
     "'model.layers.0.self_attn.x_proj' is not a module"),
    (lambda t: t.update({"prompt_embeddings": np.zeros((2, 32), np.float32)}), KeyError,
     "'prompt_embeddings' is not a PEFT key"),
    (lambda t: t.pop(V_B), KeyError, f"lacks \\['{V_B}'\\]"),
])
def test_bad_tensors_are_named(lora_dir, bases, change, error, message):
    _edit_tensors(lora_dir, change)
    with pytest.raises(error, match=message):
        PeftModel.from_pretrained(GPT.from_pretrained(bases["llama"]), lora_dir)


def test_peft_layout_needs_a_model_with_a_hugging_face_architecture(lora_dir, bases):
    with pytest.raises(ValueError, match="pass the base model"):
        load_adapter_config(lora_dir)
    odd = GPT(  # a GPT with RoPE and LayerNorm: no Hugging Face class holds it
        GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, pos="rope"))
    with pytest.raises(ValueError, match="PEFT's layout.*GPT"):
        PeftModel.from_pretrained(odd, lora_dir)
    (lora_dir / "adapter_model.safetensors").rename(lora_dir / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle"):
        PeftModel.from_pretrained(GPT.from_pretrained(bases["llama"]), lora_dir)


# ---------------------------------------------------------------------- a real model
def test_smollm2_lora_both_directions(tmp_path, libraries, smollm2_gguf):
    """SmolLM2-135M-Instruct (GGUF, a tied Llama): LoRA r=4 on q/v, minifm -> peft and peft -> minifm."""
    base = tmp_path / "base"
    GPT.from_pretrained(smollm2_gguf).save_pretrained(base)
    rng = np.random.default_rng(0)
    tolerance = 1e-3  # 30 layers: minifm and transformers differ by ~1e-4 on the base model already
    difference, effect, our_tensors, _ = minifm_to_peft(
        libraries, base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tmp_path / "minifm", rng)
    assert difference < tolerance and effect > 0.1, (difference, effect)
    peft_config = _peft_config(libraries, "lora", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    difference, effect, their_tensors, _ = peft_to_minifm(libraries, base, peft_config, tmp_path / "peft", rng)
    assert difference < tolerance and effect > 0.1, (difference, effect)
    assert {key: value.shape for key, value in our_tensors.items()} == \
           {key: value.shape for key, value in their_tensors.items()}
