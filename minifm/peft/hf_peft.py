"""Adapters in Hugging Face PEFT's file layout: adapter_config.json fields and tensor names, both ways.

`to_peft(peft_model, adapter_name)` gives what PEFT's save_pretrained would write for the same adapter
on the transformers model that `GPT.save_pretrained` exports (LlamaForCausalLM, Qwen2ForCausalLM or
GPT2LMHeadModel); `config_from_peft` and `state_from_peft` read such files back into minifm's names.
Tensor keys (<hf> is the module or parameter path in the transformers model, minifm/peft/hf_names.py):

    LoRA                 base_model.model.<hf>.lora_A.weight (r, in)   base_model.model.<hf>.lora_B.weight (out, r)
    IA3                  base_model.model.<hf>.ia3_l   (out, 1) rescales the output, (1, in) the input
                         (a feed-forward module)
    trainable tokens     base_model.model.<hf embedding>.token_adapter.trainable_tokens_delta (k, d)
    biases, modules_to_save   base_model.model.<hf parameter> (".base_layer" before the last part when
                         the module is wrapped by LoRA/IA3, as PEFT writes them)
    prompt tuning        prompt_embeddings (P, d)
    prefix tuning        prompt_embeddings (P, n_layer * 2 * kv_dim): per layer its keys, then its values
adapter_config.json carries PEFT's field names and upper-case peft_type ("LORA", "IA3",
"PROMPT_TUNING", "PREFIX_TUNING"), task_type "CAUSAL_LM", and module names in the transformers model's
spelling (target_modules ["q_proj", "v_proj"] for a Llama, ["c_attn"] for GPT-2).

GPT-2's fused c_attn. GPT-2 computes q, k and v with one Conv1D (c_attn, output 3 d); minifm has three
Linear layers. A PEFT LoRA on c_attn is one A (r, d) and one B (3d, r): minifm reads it exactly as LoRAs
on q_proj, k_proj and v_proj that hold copies of the same A and the three row blocks of B
(delta_q = s B_q (A x), and so on). minifm's LoRAs on q, k, v are written back exactly too:
  * when the present ones share one A (same values, r and alpha): A, and B with their row blocks
    (zero rows for a projection without LoRA), rank r;
  * otherwise (independently trained, say q and v): a LoRA of rank r_q + r_v whose A stacks A_q over A_v
    and whose B is block-diagonal, [B_q 0; 0 0; 0 B_v] — a sum of low-rank maps is a low-rank map of the
    summed rank — with alpha chosen so the scaling is unchanged; rank_pattern/alpha_pattern carry the
    c_attn rank when it differs from r. Exact, at the price of zeros in the file.
IA3 on c_attn: a k/v output scaling becomes the (3d, 1) vector with ones for the parts without IA3; an
input (feed-forward) scaling of c_attn scales q, k and v alike and is written only when all three hold
the same vector (else `NotExpressible`).

Prefix tuning and positions. PEFT passes prefixes as a KV cache of length P, so transformers places the
real tokens at positions P..P+T-1; minifm's prefixes enter through the attention's extra_kv and the
tokens keep positions 0..T-1. With RoPE (Llama) the two agree once the stored prefix keys are rotated:
a query at position t meets an unrotated prefix key k as (R_{t+P} q) . k in PEFT and as (R_t q) . k' in
minifm, so k' = R_{-P} k (RoPE depends on position differences only, so token-token scores agree). The
file therefore holds minifm's keys rotated by +P, and reading rotates them by -P. With learned absolute
positions (GPT-2) the shift changes the input embeddings themselves and no table can make up for it:
prefix tuning on GPT-2 stays in minifm's layout (`NotExpressible`). A prefix_projection MLP is written
as the table it computes (PEFT loads prefix adapters for inference as a table too); it is read back
as a table (prefix_projection=False).

Bottleneck adapters: PEFT has no Houlsby adapter (its "adapters" are LoRA-like or prompt methods), so
AdapterConfig adapters stay in minifm's layout (`NotExpressible`).

Reading refuses, with the field or key named: a task_type other than CAUSAL_LM, a PEFT field minifm
does not implement set to a non-default value (use_dora, layers_to_transform, lora_bias, loftq and
other initialisations that change the base weights, ...), target modules that are not Linear layers or
not in the model, a tensor key no module of the model has, and shape mismatches. Simplifications:
PEFT's own initialisation options are not carried over (prompt_tuning_init is written as "RANDOM":
PEFT requires a tokenizer path for "TEXT"; weights are loaded anyway); modules_to_save is minifm's
in-place unfreezing on the minifm side, PEFT's trained copy on the PEFT side, which compute the same.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minifm.peft.config import (
    IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig, pattern_key,
)
from minifm.peft.hf_names import (
    HFNames, parent_path, peft_suffix_matches, peft_target_matches, shortest_names, shortest_pattern,
)
from minifm.peft.ia3 import IA3Linear
from minifm.peft.lora import LoraLinear
from minifm.peft.targeting import name_matches
from minifm.peft.trainable_tokens import TrainableTokensEmbedding
from minifm.pretrained.name_maps import export_tensors, load_tensor

PEFT_TYPES = {"LORA": "lora", "IA3": "ia3", "PROMPT_TUNING": "prompt", "PREFIX_TUNING": "prefix"}
PEFT_TYPE_OF = {method: peft_type for peft_type, method in PEFT_TYPES.items()}
TASK_TYPE = "CAUSAL_LM"
KEY_PREFIX = "base_model.model."
PROMPT_KEY = "prompt_embeddings"
LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
IA3_SUFFIX = ".ia3_l"
TOKENS_SUFFIX = ".token_adapter.trainable_tokens_delta"

# fields every PEFT config may carry that describe the file or the run, not what the adapter computes
METADATA_FIELDS = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode",
                   "peft_version", "auto_mapping"}
# fields read (or deliberately ignored: they describe initialisation or storage only), per method
HANDLED_FIELDS = {
    "lora": {"r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "bias", "use_rslora",
             "modules_to_save", "init_lora_weights", "trainable_token_indices", "rank_pattern", "alpha_pattern",
             "fan_in_fan_out",  # how the base weights are stored (GPT-2's Conv1D): LoRA's A and B never change
             "layers_pattern",  # only used together with layers_to_transform, which is refused
             "megatron_core", "qalora_group_size", "ensure_weight_tying"},  # used only by refused options
    "ia3": {"target_modules", "exclude_modules", "feedforward_modules", "modules_to_save", "fan_in_fan_out",
            "init_ia3_weights"},
    "prompt": {"num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads",
               "num_layers", "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path",
               "tokenizer_kwargs", "modules_to_save"},
    "prefix": {"num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads",
               "num_layers", "prefix_projection", "encoder_hidden_size", "modules_to_save", "init_weights"},
}
LORA_INITIALISATIONS = (True, False, "gaussian")  # the others change the base weights or need data


class NotExpressible(ValueError):
    """This adapter has no exact counterpart in PEFT's layout (the message says why)."""


# ====================================================================== minifm -> PEFT
def to_peft(peft_model, adapter_name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(adapter_config.json dict, tensors) in PEFT's layout; NotExpressible when there is no exact one."""
    names = HFNames.for_model(peft_model.base_model)
    if names is None:
        raise NotExpressible(f"the base model ({type(peft_model.base_model).__name__}) is not a GPT that a "
                             f"Hugging Face architecture minifm exports (Llama, Qwen2, GPT-2) can hold")
    config = peft_model.peft_config[adapter_name]
    if isinstance(config, LoraConfig):
        fields, tensors = _lora_to_peft(peft_model, adapter_name, config, names)
    elif isinstance(config, IA3Config):
        fields, tensors = _ia3_to_peft(peft_model, adapter_name, config, names)
    elif isinstance(config, PromptTuningConfig):
        fields, tensors = _prompt_to_peft(peft_model, adapter_name, config)
    elif isinstance(config, PrefixTuningConfig):
        fields, tensors = _prefix_to_peft(peft_model, adapter_name, config, names)
    else:
        raise NotExpressible(f"PEFT has no {type(config).__name__} method: minifm's bottleneck adapters are "
                             f"Houlsby adapters, which PEFT does not implement")
    tensors.update(_saved_parameters_to_peft(peft_model, adapter_name, names))
    source = getattr(peft_model.base_model, "pretrained_source", None)
    header = {"peft_type": PEFT_TYPE_OF[config.peft_type], "task_type": TASK_TYPE,
              "base_model_name_or_path": source, "revision": None, "inference_mode": True}
    header.update(fields)
    header["modules_to_save"] = _modules_to_save_to_peft(config.modules_to_save, names)
    return header, tensors


def _adapter_layers(peft_model, adapter_name: str, layer_class) -> dict[str, object]:
    """{minifm module path: wrapper} of the `layer_class` wrappers that hold `adapter_name`."""
    return {name: module for name, module in peft_model.base_model.named_modules()
            if isinstance(module, layer_class) and adapter_name in module.adapter_names()}


def _group_by_hf_module(layers: dict, names: HFNames) -> dict[str, list[tuple]]:
    """{Hugging Face module path: [(row, minifm path, layer)] in part order} for the wrapped layers."""
    groups = {}
    for path, layer in layers.items():
        row = names.hf_module(path)
        groups.setdefault(row.hf, []).append((row, path, layer))
    for members in groups.values():
        members.sort(key=lambda member: member[0].part)
    return groups


def _lora_to_peft(peft_model, adapter_name, config: LoraConfig, names: HFNames):
    groups = _group_by_hf_module(_adapter_layers(peft_model, adapter_name, LoraLinear), names)
    tensors, ranks, alphas = {}, {}, {}
    for hf_path, members in sorted(groups.items()):
        lora_A, lora_B, rank, alpha = _fused_lora(members, adapter_name, config)
        tensors[KEY_PREFIX + hf_path + LORA_A_SUFFIX] = lora_A
        tensors[KEY_PREFIX + hf_path + LORA_B_SUFFIX] = lora_B
        ranks[hf_path], alphas[hf_path] = rank, alpha
    target_names, _ = shortest_names(groups, names.hf_linear_modules, peft_target_matches)
    fields = {
        "r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": target_names, "exclude_modules": None, "bias": config.bias,
        "fan_in_fan_out": any(members[0][0].transpose for members in groups.values()),  # GPT-2's Conv1D
        "use_rslora": config.use_rslora, "init_lora_weights": config.init_lora_weights,
        "rank_pattern": shortest_pattern(ranks, config.r),
        "alpha_pattern": shortest_pattern(alphas, config.lora_alpha),
        "use_dora": False, "layers_to_transform": None, "layers_pattern": None,
        "trainable_token_indices": None,
    }
    token_layers = _adapter_layers(peft_model, adapter_name, TrainableTokensEmbedding)
    if token_layers:
        fields["trainable_token_indices"] = _token_indices_to_peft(config, token_layers, adapter_name, names)
        for path, layer in token_layers.items():
            key = KEY_PREFIX + names.hf_module(path).hf + TOKENS_SUFFIX
            tensors[key] = np.ascontiguousarray(layer.trainable_tokens_delta[adapter_name].data)
    return fields, tensors


def _fused_lora(members: list[tuple], adapter_name: str, config: LoraConfig):
    """(A, B, r, alpha) of the PEFT LoRA on one Hugging Face module, from minifm's LoRAs on its parts."""
    entries = []
    for row, path, layer in members:
        module_config = config.for_module(path)
        entries.append((row, layer.lora_A[adapter_name].weight.data, layer.lora_B[adapter_name].weight.data,
                        module_config.r, module_config.lora_alpha, layer.scaling[adapter_name]))
    first_row, first_A, first_B, first_r, first_alpha, first_scaling = entries[0]
    if first_row.parts == 1:
        return first_A.copy(), first_B.copy(), first_r, first_alpha
    part_rows = first_B.shape[0]  # out features of one part (q, k and v are equally wide)
    shared = all(np.array_equal(A, first_A) and r == first_r and alpha == first_alpha
                 for _, A, _, r, alpha, _ in entries)
    if shared:  # one A for all parts (what a PEFT c_attn LoRA reads as): B's row blocks
        lora_B = np.zeros((first_row.parts * part_rows, first_r), dtype=first_B.dtype)
        for row, _, B, _, _, _ in entries:
            lora_B[row.part * part_rows:(row.part + 1) * part_rows] = B
        return first_A.copy(), lora_B, first_r, first_alpha
    total_rank = sum(entry[3] for entry in entries)
    lora_A = np.concatenate([A for _, A, _, _, _, _ in entries], axis=0)  # (sum r, in)
    lora_B = np.zeros((first_row.parts * part_rows, total_rank), dtype=first_B.dtype)  # block-diagonal
    column = 0
    for row, _, B, r, _, scaling in entries:
        block = B if scaling == first_scaling else B * (scaling / first_scaling)
        lora_B[row.part * part_rows:(row.part + 1) * part_rows, column:column + r] = block
        column += r
    if config.use_rslora:  # keep alpha / sqrt(r) at the first part's scaling
        alpha = first_alpha * float(np.sqrt(total_rank / first_r))
    else:  # keep alpha / r: (alpha k) / (r k) rounds exactly as alpha / r when both are exact
        alpha = first_alpha * total_rank / first_r
    return lora_A, lora_B, total_rank, alpha


def _token_indices_to_peft(config: LoraConfig, token_layers: dict, adapter_name: str, names: HFNames):
    if not isinstance(config.trainable_token_indices, dict):
        return list(config.trainable_token_indices)  # a list means the input embedding in both libraries
    indices = {}
    for path, layer in token_layers.items():
        hf_path = names.hf_module(path).hf
        short, _ = shortest_names([hf_path], names.all_hf_module_paths(), peft_suffix_matches)
        indices[short[0]] = list(layer.token_indices[adapter_name])
    return indices


def _ia3_to_peft(peft_model, adapter_name, config: IA3Config, names: HFNames):
    groups = _group_by_hf_module(_adapter_layers(peft_model, adapter_name, IA3Linear), names)
    tensors, feedforward = {}, set()
    for hf_path, members in sorted(groups.items()):
        vector, is_feedforward = _fused_ia3(hf_path, members, adapter_name)
        tensors[KEY_PREFIX + hf_path + IA3_SUFFIX] = vector
        if is_feedforward:
            feedforward.add(hf_path)
    target_names, depth = shortest_names(groups, names.hf_linear_modules, peft_target_matches)
    feedforward_names = []
    if feedforward:  # PEFT wants feedforward_modules to be a subset of target_modules: one depth for both
        feedforward_names, feedforward_depth = shortest_names(feedforward, groups, peft_target_matches, depth)
        if feedforward_depth > depth:
            target_names, _ = shortest_names(groups, names.hf_linear_modules, peft_target_matches, feedforward_depth)
    fields = {"target_modules": target_names, "feedforward_modules": feedforward_names,
              "exclude_modules": None, "fan_in_fan_out": any(m[0][0].transpose for m in groups.values()),
              "init_ia3_weights": True}
    return fields, tensors


def _fused_ia3(hf_path: str, members: list[tuple], adapter_name: str):
    """(ia3_l, is_feedforward) of the PEFT IA3 vector on one Hugging Face module."""
    flags = {layer.is_feedforward for _, _, layer in members}
    if len(flags) > 1:
        raise NotExpressible(f"IA3 on {hf_path!r}: its fused parts mix output and input (feed-forward) scaling")
    is_feedforward = flags.pop()
    vectors = [layer.ia3_l[adapter_name].weight.data for _, _, layer in members]
    first_row = members[0][0]
    if is_feedforward:
        complete = len(members) == first_row.parts and all(np.array_equal(v, vectors[0]) for v in vectors)
        if not complete:
            paths = [path for _, path, _ in members]
            raise NotExpressible(f"IA3 input scaling on {paths}: {hf_path!r} fuses {first_row.parts} projections "
                                 f"that share one input, so PEFT can hold only one vector for all of them")
        return vectors[0].reshape(1, -1).copy(), True  # (1, in)
    part_size = vectors[0].shape[0]
    vector = np.ones(first_row.parts * part_size, dtype=vectors[0].dtype)  # parts without IA3: scale 1
    for (row, _, _), part_vector in zip(members, vectors):
        vector[row.part * part_size:(row.part + 1) * part_size] = part_vector
    return vector.reshape(-1, 1), False  # (out, 1)


def _prompt_to_peft(peft_model, adapter_name, config: PromptTuningConfig):
    model_config = peft_model.base_model.config
    fields = {"num_virtual_tokens": config.num_virtual_tokens, "token_dim": model_config.n_embd,
              "num_transformer_submodules": 1, "num_attention_heads": model_config.n_head,
              "num_layers": model_config.n_layer, "prompt_tuning_init": "RANDOM",  # see the module docstring
              "prompt_tuning_init_text": config.prompt_tuning_init_text, "tokenizer_name_or_path": None,
              "tokenizer_kwargs": None}
    weight = peft_model.prompt_encoder[adapter_name].weight.data
    return fields, {PROMPT_KEY: np.ascontiguousarray(weight)}


def _prefix_to_peft(peft_model, adapter_name, config: PrefixTuningConfig, names: HFNames):
    if not names.uses_rope:
        raise NotExpressible("prefix tuning on a model with learned absolute positions (GPT-2): PEFT moves the "
                             "real tokens to positions P..P+T-1, minifm keeps 0..T-1, and no prefix table can "
                             "make up for different position embeddings")
    model_config = peft_model.base_model.config
    encoder = peft_model.prompt_encoder[adapter_name]
    table = np.asarray(encoder.table().data)  # (P, sum of 2 kv_dim): the MLP's output with a projection
    kv_heads, head_dim = encoder.kv_shapes[0]
    kv_dim = kv_heads * head_dim
    fields = {"num_virtual_tokens": config.num_virtual_tokens, "token_dim": kv_dim,
              "num_transformer_submodules": 1, "num_attention_heads": kv_heads,
              "num_layers": model_config.n_layer, "prefix_projection": False, "encoder_hidden_size": kv_dim}
    shifted = rotate_prefix_keys(table, encoder.kv_shapes, config.num_virtual_tokens, model_config.rope_base)
    return fields, {PROMPT_KEY: shifted}


def rotate_prefix_keys(table: np.ndarray, kv_shapes, positions: int, rope_base: float) -> np.ndarray:
    """The prefix table with every layer's keys rotated by RoPE at `positions` (values unchanged).

    table (P, sum over layers of 2 Hkv head_dim), columns per layer: keys (Hkv, head_dim), then values;
    "rotate half" RoPE as in minifm/nn/attention.py, computed in float64."""
    rotated = table.astype(np.float64)
    start = 0
    for kv_heads, head_dim in kv_shapes:
        width = kv_heads * head_dim
        keys = rotated[:, start:start + width].reshape(-1, kv_heads, head_dim)  # (P, Hkv, D)
        inverse_frequencies = rope_base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
        angles = positions * inverse_frequencies
        cos, sin = np.cos(angles), np.sin(angles)
        half = head_dim // 2
        first, second = keys[..., :half].copy(), keys[..., half:].copy()
        keys[..., :half] = first * cos - second * sin
        keys[..., half:] = second * cos + first * sin
        rotated[:, start:start + width] = keys.reshape(-1, width)
        start += 2 * width
    return rotated.astype(table.dtype)


def _wrapped_hf_modules(peft_model, adapter_name: str, names: HFNames) -> set[str]:
    layers = {**_adapter_layers(peft_model, adapter_name, LoraLinear),
              **_adapter_layers(peft_model, adapter_name, IA3Linear)}
    return {names.hf_module(path).hf for path in layers}


def _saved_parameters_to_peft(peft_model, adapter_name: str, names: HFNames) -> dict[str, np.ndarray]:
    """Trainable biases and modules_to_save under their Hugging Face names; the parts of a fused tensor
    (GPT-2's c_attn.bias) that are not trainable are written with the base model's (frozen) values."""
    plain = {}
    for key in peft_model.adapter_state_dict(adapter_name):
        parts = key.split(".")
        if parts[0] != "base_model" or any(part in ("lora_A", "lora_B", "ia3_l", "trainable_tokens_delta")
                                           for part in parts):
            continue
        plain[".".join(part for part in parts[1:] if part != "base_layer")] = key
    if not plain:
        return {}
    base_values = {name: param.data for name, param in _plain_parameters(peft_model.base_model, names).items()}
    hf_names = {names.hf_parameter(name).hf for name in plain}
    rules = [rule for hf_name in sorted(hf_names) for rule in names.hf_parameter_rules[hf_name]]
    exported = export_tensors(rules, base_values)
    wrapped = _wrapped_hf_modules(peft_model, adapter_name, names)
    tensors = {}
    for hf_name, tensor in exported.items():
        module, leaf = hf_name.rsplit(".", 1)
        stored = f"{module}.base_layer.{leaf}" if module in wrapped else hf_name  # PEFT keeps base_layer
        tensors[KEY_PREFIX + stored] = tensor
    return tensors


def _plain_parameters(model, names: HFNames) -> dict:
    parameters = dict(model.named_parameters())
    return {plain: parameters[actual] for plain, actual in names.actual_names.items()}


def _modules_to_save_to_peft(modules_to_save, names: HFNames):
    if not modules_to_save:
        return None
    minifm_modules = {path for path in names.all_minifm_module_paths() if name_matches(path, list(modules_to_save))}
    hf_modules = set()
    for name in names.parameter_rules:
        if any(name.startswith(module + ".") for module in minifm_modules):
            hf_modules.add(parent_path(names.parameter_rules[name].hf))
    if not hf_modules:
        raise NotExpressible(f"modules_to_save={modules_to_save!r} selects no module with a Hugging Face counterpart")
    short, _ = shortest_names(hf_modules, names.all_hf_module_paths(), peft_suffix_matches)
    return short


# ====================================================================== PEFT -> minifm
def config_from_peft(data: dict, model) -> PeftConfig:
    """The minifm config of a PEFT adapter_config.json dict, for the minifm GPT `model` (see the module
    docstring for what is refused)."""
    peft_type = data.get("peft_type")
    method = PEFT_TYPES[peft_type]  # the caller checked peft_type
    names = HFNames.for_model(model)
    if names is None:
        raise ValueError(f"adapter_config.json is in PEFT's layout (peft_type {peft_type!r}), which minifm reads "
                         f"onto a GPT with a Hugging Face architecture (Llama, Qwen2, GPT-2); got a "
                         f"{type(model).__name__} that none of them can hold")
    task_type = data.get("task_type")
    if task_type not in (TASK_TYPE, None):
        raise ValueError(f"adapter_config.json: task_type={task_type!r} is not supported by minifm's GPT "
                         f"(supported: {TASK_TYPE!r})")
    _refuse_unknown_fields(data, method)
    if method == "lora":
        return _lora_config_from_peft(data, names)
    if method == "ia3":
        return _ia3_config_from_peft(data, names)
    _check_prompt_sizes(data, method, model, names)
    if method == "prompt":
        init_text = data.get("prompt_tuning_init_text")
        return PromptTuningConfig(num_virtual_tokens=data["num_virtual_tokens"], prompt_tuning_init="RANDOM",
                                  prompt_tuning_init_text=init_text if isinstance(init_text, str) else None,
                                  modules_to_save=_modules_to_save_from_peft(data.get("modules_to_save"), names))
    return PrefixTuningConfig(num_virtual_tokens=data["num_virtual_tokens"], prefix_projection=False,
                              modules_to_save=_modules_to_save_from_peft(data.get("modules_to_save"), names))


def _is_empty(value) -> bool:
    return value is None or value is False or (isinstance(value, (dict, list, str)) and len(value) == 0)


def _refuse_unknown_fields(data: dict, method: str) -> None:
    """A field minifm does not implement may be present only with its "off" value."""
    for key, value in data.items():
        if key in METADATA_FIELDS or key in HANDLED_FIELDS[method] or _is_empty(value):
            continue
        raise ValueError(f"adapter_config.json: {key}={value!r} is not supported by minifm "
                         f"(for {PEFT_TYPE_OF[method]} it reads {sorted(HANDLED_FIELDS[method])})")


def _required(data: dict, key: str):
    if data.get(key) is None:
        raise ValueError(f"adapter_config.json has no {key!r} (PEFT writes it for {data.get('peft_type')!r})")
    return data[key]


def _minifm_targets(data: dict, names: HFNames, key: str = "target_modules") -> tuple[set[str], set[str]]:
    """(Hugging Face paths, minifm paths) of the modules `data[key]` selects, minus exclude_modules."""
    hf_paths = names.select_hf_linear(_required(data, key), key)
    excluded = data.get("exclude_modules")
    if not _is_empty(excluded):
        hf_paths = {path for path in hf_paths if not peft_target_matches(path, excluded)}
        if not hf_paths:
            raise ValueError(f"adapter_config.json: exclude_modules={excluded!r} excludes every module that "
                             f"{key} selects")
    minifm_paths = {row.minifm for path in hf_paths for row in names.hf_module_rules[path]}
    return hf_paths, minifm_paths


def _lora_config_from_peft(data: dict, names: HFNames) -> LoraConfig:
    init = data.get("init_lora_weights", True)
    if init not in LORA_INITIALISATIONS:
        raise ValueError(f"adapter_config.json: init_lora_weights={init!r} is not supported by minifm (these "
                         f"initialisations change the base weights or need data; supported: "
                         f"{list(LORA_INITIALISATIONS)})")
    r, alpha = _required(data, "r"), _required(data, "lora_alpha")
    hf_paths, minifm_paths = _minifm_targets(data, names)
    rank_pattern, alpha_pattern = data.get("rank_pattern") or {}, data.get("alpha_pattern") or {}
    ranks, alphas = {}, {}
    for hf_path in hf_paths:  # PEFT resolves the patterns on its own module paths
        rank_key, alpha_key = pattern_key(rank_pattern, hf_path), pattern_key(alpha_pattern, hf_path)
        for row in names.hf_module_rules[hf_path]:
            ranks[row.minifm] = r if rank_key is None else rank_pattern[rank_key]
            alphas[row.minifm] = alpha if alpha_key is None else alpha_pattern[alpha_key]
    target_names, _ = shortest_names(minifm_paths, names.linear_modules, name_matches)
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=data.get("lora_dropout") or 0.0, target_modules=target_names,
        bias=data.get("bias") or "none", use_rslora=bool(data.get("use_rslora", False)),
        modules_to_save=_modules_to_save_from_peft(data.get("modules_to_save"), names),
        init_lora_weights=init is not False,
        trainable_token_indices=_token_indices_from_peft(data.get("trainable_token_indices"), names),
        rank_pattern=shortest_pattern(ranks, r), alpha_pattern=shortest_pattern(alphas, float(alpha)),
    )


def _token_indices_from_peft(indices, names: HFNames):
    if indices is None or isinstance(indices, list):
        return indices
    if not isinstance(indices, dict):
        raise ValueError(f"adapter_config.json: trainable_token_indices must be a list of ids or a dict of them, "
                         f"got {indices!r}")
    translated = {}
    for name, ids in indices.items():
        hf_paths = {path for path in names.hf_module_rules if peft_suffix_matches(path, [name])}
        minifm_paths = [row.minifm for path in sorted(hf_paths) for row in names.hf_module_rules[path]]
        if not minifm_paths:
            raise ValueError(f"adapter_config.json: trainable_token_indices names {name!r}, which matches no "
                             f"module of this {names.architecture_name} model")
        for path in minifm_paths:
            translated[path] = list(ids)
    return translated


def _ia3_config_from_peft(data: dict, names: HFNames) -> IA3Config:
    hf_paths, minifm_paths = _minifm_targets(data, names)
    feedforward = data.get("feedforward_modules") or []
    hf_feedforward = {path for path in hf_paths if peft_target_matches(path, feedforward)} if feedforward else set()
    minifm_feedforward = {row.minifm for path in hf_feedforward for row in names.hf_module_rules[path]}
    target_names, depth = shortest_names(minifm_paths, names.linear_modules, name_matches)
    if minifm_feedforward:
        feedforward_names, _ = shortest_names(minifm_feedforward, minifm_paths, name_matches, depth)
    else:  # None would mean minifm's default (fc_out, down_proj); a regular expression that matches no module:
        feedforward_names = "$^"
    return IA3Config(target_modules=target_names, feedforward_modules=feedforward_names,
                     modules_to_save=_modules_to_save_from_peft(data.get("modules_to_save"), names))


def _check_prompt_sizes(data: dict, method: str, model, names: HFNames) -> None:
    config = model.config
    _required(data, "num_virtual_tokens")
    if method == "prefix" and not names.uses_rope:
        raise ValueError("adapter_config.json: PREFIX_TUNING on a model with learned absolute positions (GPT-2) "
                         "cannot be read exactly: PEFT runs the real tokens at positions P..P+T-1, minifm at "
                         "0..T-1 (minifm/peft/hf_peft.py)")
    kv_dim = (config.n_kv_head or config.n_head) * (config.n_embd // config.n_head)
    expected = {"token_dim": config.n_embd if method == "prompt" else kv_dim,
                "num_layers": config.n_layer, "num_transformer_submodules": 1}
    for key, value in expected.items():
        if data.get(key) is not None and data[key] != value:
            raise ValueError(f"adapter_config.json: {key}={data[key]!r} does not fit this model ({key} is {value})")


def _modules_to_save_from_peft(modules_to_save, names: HFNames):
    if _is_empty(modules_to_save):
        return None
    hf_modules = names.select_hf_saved_modules(modules_to_save)
    minifm_modules = set()
    for hf_name, rows in names.hf_parameter_rules.items():
        if any(hf_name.startswith(module + ".") for module in hf_modules):
            minifm_modules.update(parent_path(row.minifm) for row in rows)
    short, _ = shortest_names(minifm_modules, names.all_minifm_module_paths(), name_matches)
    return short


# ---------------------------------------------------------------------- tensors
def state_from_peft(tensors: dict[str, np.ndarray], peft_model, adapter_name: str) -> dict[str, tuple]:
    """{minifm adapter key (as adapter_state_dict names it): (array, the PEFT key it came from)}.

    KeyError naming the PEFT key for a key no module of the model has; ValueError naming it when its
    shape cannot be split the way the model needs."""
    names = HFNames.for_model(peft_model.base_model)
    method = peft_model.peft_type
    state = {}
    for key, tensor in tensors.items():
        tensor = np.asarray(tensor)
        if key == PROMPT_KEY and method in ("prompt", "prefix"):
            state.update(_prompt_state_from_peft(key, tensor, peft_model, adapter_name))
            continue
        if not key.startswith(KEY_PREFIX):
            valid = f"{PROMPT_KEY!r} or keys starting with {KEY_PREFIX!r}" if method in ("prompt", "prefix") \
                else f"keys starting with {KEY_PREFIX!r}"
            raise KeyError(f"adapter key {key!r} is not a PEFT key of a {PEFT_TYPE_OF[method]} adapter "
                           f"(it has {valid})")
        path = key[len(KEY_PREFIX):]
        if path.endswith(LORA_A_SUFFIX) or path.endswith(LORA_B_SUFFIX):
            state.update(_lora_state_from_peft(key, path, tensor, names))
        elif path.endswith(IA3_SUFFIX):
            state.update(_ia3_state_from_peft(key, path, tensor, names))
        elif path.endswith(TOKENS_SUFFIX):
            rows = names.minifm_modules(path[:-len(TOKENS_SUFFIX)], key)
            for row in rows:
                state[f"base_model.{row.minifm}.trainable_tokens_delta"] = (tensor, key)
        else:
            state.update(_parameter_state_from_peft(key, path, tensor, peft_model, names, adapter_name))
    return state


def _lora_state_from_peft(key: str, path: str, tensor: np.ndarray, names: HFNames) -> dict:
    is_A = path.endswith(LORA_A_SUFFIX)
    module = path[:-len(LORA_A_SUFFIX if is_A else LORA_B_SUFFIX)]
    rows = names.minifm_modules(module, key)
    if tensor.ndim != 2:
        raise ValueError(f"adapter key {key!r} has shape {tensor.shape}; LoRA matrices are 2-D")
    if not is_A and tensor.shape[0] % len(rows):
        raise ValueError(f"adapter key {key!r} has shape {tensor.shape}: its {tensor.shape[0]} rows do not split "
                         f"into the {len(rows)} fused parts of {module!r}")
    state = {}
    part_rows = tensor.shape[0] // len(rows)
    for row in rows:
        if is_A:  # the shared A: every part gets a copy
            state[f"base_model.{row.minifm}.lora_A.weight"] = (tensor, key)
        else:  # B's row block of this part
            block = tensor[row.part * part_rows:(row.part + 1) * part_rows]  # (out / parts, r)
            state[f"base_model.{row.minifm}.lora_B.weight"] = (block, key)
    return state


def _ia3_state_from_peft(key: str, path: str, tensor: np.ndarray, names: HFNames) -> dict:
    rows = names.minifm_modules(path[:-len(IA3_SUFFIX)], key)
    if tensor.ndim != 2 or 1 not in tensor.shape:
        raise ValueError(f"adapter key {key!r} has shape {tensor.shape}; IA3 vectors are (out, 1) or (1, in)")
    vector = tensor.reshape(-1)
    state = {}
    if tensor.shape[0] == 1 and len(rows) > 1:  # an input scaling (1, in): shared by every fused part
        for row in rows:
            state[f"base_model.{row.minifm}.ia3_l.weight"] = (vector, key)
        return state
    if vector.shape[0] % len(rows):
        raise ValueError(f"adapter key {key!r} has shape {tensor.shape}: not divisible into the {len(rows)} "
                         f"fused parts of {path[:-len(IA3_SUFFIX)]!r}")
    part_size = vector.shape[0] // len(rows)
    for row in rows:
        state[f"base_model.{row.minifm}.ia3_l.weight"] = (vector[row.part * part_size:(row.part + 1) * part_size], key)
    return state


def _parameter_state_from_peft(key, path, tensor, peft_model, names: HFNames, adapter_name: str) -> dict:
    """A bias or a modules_to_save parameter: split by the parameter's Rule rows (fused parts, transpose)."""
    hf_name = path.replace(".base_layer.", ".")
    if hf_name not in names.hf_parameter_rules:
        raise KeyError(f"adapter key {key!r}: {hf_name!r} is not a parameter of this {names.architecture_name} "
                       f"model, nor a LoRA, IA3 or trainable-token tensor")
    expected = peft_model.adapter_state_dict(adapter_name)
    parameters = dict(peft_model.base_model.named_parameters())
    state = {}
    for rule in names.hf_parameter_rules[hf_name]:
        try:
            array = load_tensor(rule, tensor)
        except ValueError as error:
            raise ValueError(f"adapter key {key!r}: {error}") from None
        minifm_key = "base_model." + names.actual_names[rule.minifm]
        if minifm_key in expected:
            state[minifm_key] = (array, key)
            continue
        current = parameters[names.actual_names[rule.minifm]].data  # a frozen part of a fused tensor
        if array.shape != current.shape or not np.array_equal(array, current):
            raise ValueError(f"adapter key {key!r} changes minifm's {rule.minifm!r}, which this adapter's "
                             f"config does not train")
    return state


def _prompt_state_from_peft(key: str, tensor: np.ndarray, peft_model, adapter_name: str) -> dict:
    if peft_model.peft_type == "prompt":
        return {"prompt_encoder.weight": (tensor, key)}
    encoder = peft_model.prompt_encoder[adapter_name]
    expected_columns = sum(2 * heads * head_dim for heads, head_dim in encoder.kv_shapes)
    if tensor.ndim != 2 or tensor.shape[1] != expected_columns:
        raise ValueError(f"adapter key {key!r} has shape {tensor.shape}; this model's prefix table is "
                         f"(num_virtual_tokens, {expected_columns})")
    table = rotate_prefix_keys(tensor, encoder.kv_shapes, -tensor.shape[0], peft_model.base_model.config.rope_base)
    return {"prompt_encoder.embedding": (table, key)}


def peft_key(minifm_key: str, peft_model) -> str:
    """The PEFT key that holds minifm's adapter key (for messages about missing entries)."""
    names = HFNames.for_model(peft_model.base_model)
    if minifm_key.startswith("prompt_encoder."):
        return PROMPT_KEY
    parts = minifm_key.split(".")[1:]  # without "base_model"
    for marker, suffix in (("lora_A", LORA_A_SUFFIX), ("lora_B", LORA_B_SUFFIX), ("ia3_l", IA3_SUFFIX),
                           ("trainable_tokens_delta", TOKENS_SUFFIX)):
        if marker in parts:
            module = ".".join(parts[:parts.index(marker)])
            return KEY_PREFIX + names.hf_module(module).hf + suffix
    plain = ".".join(part for part in parts if part != "base_layer")
    hf_name = names.hf_parameter(plain).hf
    if "base_layer" in parts:  # a bias of a wrapped layer: PEFT keeps ".base_layer" in its key
        module, leaf = hf_name.rsplit(".", 1)
        hf_name = f"{module}.base_layer.{leaf}"
    return KEY_PREFIX + hf_name


__all__ = ["NotExpressible", "PEFT_TYPES", "config_from_peft", "peft_key", "rotate_prefix_keys", "state_from_peft",
           "to_peft"]
