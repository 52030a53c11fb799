"""`get_peft_model(model, config)` and `PeftModel`: a frozen base model plus one PEFT method.

`get_peft_model` freezes every base parameter (requires_grad=False, so no gradient and no optimizer
state is ever made for them) and then
  * LoRA / IA3 / bottleneck adapters: replaces the targeted Linear layers in place by wrappers
    (minifm/peft/lora.py, ia3.py, adapters.py) — the model's own forward then runs them; LoRA's
    trainable_token_indices also wraps the token embedding (minifm/peft/trainable_tokens.py);
  * prompt tuning: keeps a soft prompt and feeds [soft prompt ; token embeddings] as `inputs_embeds`;
  * prefix tuning: computes per-layer key/value prefixes and puts them in every attention module's
    `extra_kv` (the attention's general extra keys/values hook) for the duration of each forward call.

The wrapper has the base model's interface: GPT-style `forward(input_ids, attention_mask, cache,
inputs_embeds, return_hidden)`, `loss`, `make_cache` and `generate` (KV-cached, through
minifm.sampling.generate); BERT-style `forward(input_ids, attention_mask)` -> hidden; T5-style
`forward`, `encode`, `decode`. Other attributes (config, mlm_logits, classify, rng, ...) are looked up
on the base model. PEFT's management API: add_adapter, set_adapter, delete_adapter,
disable_adapter() (a context manager), merge_adapter, unmerge_adapter, merge_and_unload,
get_nb_trainable_parameters, print_trainable_parameters.

A base with quantized weights (GPT.from_pretrained(..., dtype="q8_0" | "q4_0" | "q4_1"), QLoRA-style
training): LoRA, IA3 and bottleneck adapters wrap its frozen QuantizedLinear layers with float32
parameters, and prompt / prefix tuning read its QuantizedEmbedding; the packed blocks never change.
Merging into those blocks rounds, so merge_adapter / merge_and_unload refuse it (a ValueError naming
the first quantized layer) unless called with requantize=True, and `mergeable` is False for such a
model: save_run then keeps the adapter apart, beside the quantized base (minifm/runs.py).

Simplifications: all adapters of one PeftModel are of the same method; `modules_to_save` unfreezes the
listed modules in place (PEFT trains a copy so that the original stays available).
"""
from __future__ import annotations

import contextlib

import numpy as np

import minifm.functional as F
from minifm.autograd import ops
from minifm.autograd.tensor import data_of
from minifm.nn import Embedding, Module
from minifm.nn.quantized import QuantizedEmbedding, QuantizedLinear
from minifm.peft.adapters import BottleneckAdapterLayer, adapter_targets
from minifm.peft.config import (
    AdapterConfig, IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig,
)
from minifm.peft.ia3 import IA3Linear
from minifm.peft.io import load_adapter, load_adapter_config, save_adapter
from minifm.peft.layer import AdapterDict, TunerLayer
from minifm.peft.lora import LoraLinear
from minifm.peft.prefix_tuning import PrefixEncoder
from minifm.peft.prompt_tuning import PromptEmbedding, init_prompt_embedding
from minifm.peft.targeting import find_linear_targets, name_matches
from minifm.peft.trainable_tokens import TrainableTokensEmbedding, resolve_token_targets
from minifm.sampling.generate import generate

QUANTIZED_LAYER_TYPES = (QuantizedLinear, QuantizedEmbedding)
DEFAULT_LORA_TARGETS = ["q_proj", "v_proj"]
DEFAULT_IA3_TARGETS = ["k_proj", "v_proj", "fc_out", "down_proj"]
DEFAULT_IA3_FEEDFORWARD = ["fc_out", "down_proj"]


def model_kind(model: Module) -> str:
    """'seq2seq' (encode + decode, T5), 'encoder' (mlm_logits, BERT) or 'causal' (GPT)."""
    if hasattr(model, "encode") and hasattr(model, "decode"):
        return "seq2seq"
    if hasattr(model, "mlm_logits"):
        return "encoder"
    return "causal"


def find_token_embedding(model: Module) -> Embedding | QuantizedEmbedding:
    """The model's token embedding: get_input_embeddings() if it has one, else the Embedding (or quantized
    table) with vocab_size rows."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        return getter()
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    for _, module in model.named_modules():
        if isinstance(module, (Embedding, QuantizedEmbedding)) and (vocab_size is None or module.weight.shape[0] == vocab_size):
            return module
    raise ValueError(f"could not find the token embedding of {type(model).__name__} (no Embedding with "
                     f"vocab_size={vocab_size} rows)")


def embedding_table(embedding: Module) -> np.ndarray:
    """The (V, d) values of a token embedding: its weight array, or a quantized table's dequantized values."""
    if isinstance(embedding, QuantizedEmbedding):
        return embedding.dequantized_weight()  # (V, d) float32, a new array (the table stays packed)
    return embedding.weight.data


def embedding_width_and_dtype(embedding: Module) -> tuple[int, np.dtype]:
    """(d, dtype) of a token embedding's rows; a quantized table's rows come out as float32."""
    if isinstance(embedding, QuantizedEmbedding):
        return embedding.embedding_dim, np.dtype(np.float32)
    return embedding.weight.shape[1], embedding.weight.dtype


def attention_modules(model: Module) -> list[tuple[str, Module]]:
    """(name, module) of every attention module: the ones with the `extra_kv` hook (nn.MultiHeadAttention)."""
    found = [(name, module) for name, module in model.named_modules() if hasattr(module, "extra_kv")]
    if not found:
        raise ValueError(f"{type(model).__name__} has no attention module with an extra_kv hook")
    return found


def _embedding_width(model: Module) -> int:
    return embedding_width_and_dtype(find_token_embedding(model))[0]


class PeftModel(Module):
    """A frozen base model with PEFT adapters (see the module docstring)."""

    def __init__(self, model: Module, peft_config: PeftConfig, adapter_name: str = "default",
                 tokenizer=None, rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(peft_config, PeftConfig):
            raise TypeError(f"peft_config must be a LoraConfig, AdapterConfig, PromptTuningConfig, "
                            f"PrefixTuningConfig or IA3Config, got {type(peft_config).__name__}")
        self.base_model = model
        self.peft_config = {}
        self.peft_type = peft_config.peft_type
        self.active_adapter = adapter_name
        self.kind = model_kind(model)
        self.tokenizer = tokenizer
        self._adapters_disabled = False
        if rng is None:
            rng = getattr(model, "rng", None)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0)
        model.requires_grad_(False)
        if peft_config.peft_type in ("prompt", "prefix"):
            self.prompt_encoder = AdapterDict()
        self.add_adapter(adapter_name, peft_config)
        self.set_adapter(adapter_name)

    # ------------------------------------------------------------------ attribute fall-through
    def __getattr__(self, name: str):
        # only called when normal lookup fails: look on the base model (config, rng, mlm_logits, ...)
        if name.startswith("_") or "base_model" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        base = self.__dict__["base_model"]
        if name in ("encode", "decode") and hasattr(base, name):
            return getattr(self, f"_peft_{name}")
        if name == "make_cache" and hasattr(base, "make_cache"):
            return self._peft_make_cache
        return getattr(base, name)

    # ------------------------------------------------------------------ adapters
    def add_adapter(self, adapter_name: str, peft_config: PeftConfig) -> None:
        """Add a new adapter of this model's method under `adapter_name` (inactive until set_adapter)."""
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists; adapters: {list(self.peft_config)}")
        if peft_config.peft_type != self.peft_type:
            raise ValueError(f"this PeftModel holds {self.peft_type!r} adapters; cannot add a "
                             f"{peft_config.peft_type!r} adapter (one method per PeftModel)")
        was_training = self.training
        self.peft_config[adapter_name] = peft_config
        if isinstance(peft_config, LoraConfig):
            self._inject(adapter_name, peft_config, peft_config.target_modules or DEFAULT_LORA_TARGETS,
                         lambda base, name: LoraLinear(base, self.rng))
            if peft_config.trainable_token_indices is not None:
                self._inject_trainable_tokens(adapter_name, peft_config.trainable_token_indices)
        elif isinstance(peft_config, IA3Config):
            targets = peft_config.target_modules or DEFAULT_IA3_TARGETS
            feedforward = peft_config.feedforward_modules or DEFAULT_IA3_FEEDFORWARD
            self._inject(adapter_name, peft_config, targets,
                         lambda base, name: IA3Linear(base, is_feedforward=name_matches(name, feedforward)))
        elif isinstance(peft_config, AdapterConfig):
            self._inject(adapter_name, peft_config, adapter_targets(peft_config),
                         lambda base, name: BottleneckAdapterLayer(base))
        elif isinstance(peft_config, PromptTuningConfig):
            embedding = find_token_embedding(self.base_model)
            width, dtype = embedding_width_and_dtype(embedding)
            prompt = PromptEmbedding(peft_config.num_virtual_tokens, width, dtype)
            init_prompt_embedding(prompt, peft_config, embedding_table(embedding), self.rng, self.tokenizer)
            self.prompt_encoder[adapter_name] = prompt
        elif isinstance(peft_config, PrefixTuningConfig):
            kv_shapes = [(m.num_kv_heads, m.head_dim) for _, m in attention_modules(self.base_model)]
            encoder = PrefixEncoder(peft_config.num_virtual_tokens, kv_shapes, _embedding_width(self.base_model),
                                    peft_config.prefix_projection, peft_config.encoder_hidden_size, self.rng,
                                    dtype=embedding_width_and_dtype(find_token_embedding(self.base_model))[1])
            self.prompt_encoder[adapter_name] = encoder
        else:
            raise TypeError(f"unsupported config {type(peft_config).__name__}")
        self._apply_modules_to_save(peft_config)
        self.set_adapter(self.active_adapter if self.active_adapter in self.peft_config else adapter_name)
        self.train(was_training)

    def _inject(self, adapter_name, config, targets, make_wrapper) -> None:
        argument = "target_modules" if not isinstance(config, AdapterConfig) else "mh_adapter/output_adapter"
        for name in find_linear_targets(self.base_model, targets, argument):
            module = self.base_model.get_submodule(name)
            if not isinstance(module, TunerLayer):
                module = make_wrapper(module, name)
                self.base_model.set_submodule(name, module)
            module_config = config.for_module(name) if isinstance(config, LoraConfig) else config  # rank_pattern
            module.add_adapter(adapter_name, module_config, self.rng)
        if isinstance(config, LoraConfig) and config.bias != "none":
            for name, module in self.base_model.named_modules():
                if isinstance(module, LoraLinear) and module.bias is not None:
                    module.bias.requires_grad = True
                elif config.bias == "all" and name and getattr(module, "bias", None) is not None \
                        and not isinstance(module, TunerLayer) and hasattr(module.bias, "requires_grad"):
                    module.bias.requires_grad = True

    def _inject_trainable_tokens(self, adapter_name: str, trainable_token_indices) -> None:
        """Wrap the selected embedding(s) so that the rows at the given token ids train (a tied output
        head reads the same rows through the wrapper's `weight`; minifm/peft/trainable_tokens.py)."""
        targets = resolve_token_targets(self.base_model, trainable_token_indices, find_token_embedding(self.base_model))
        for name, indices in targets.items():
            module = self.base_model.get_submodule(name)
            if isinstance(module, QuantizedEmbedding):
                raise ValueError(f"trainable_token_indices: the embedding {name!r} holds frozen {module.weight_type} "
                                 f"blocks, whose rows cannot train; load the model with its embedding in float32 "
                                 f"(dtype='float32') or leave trainable_token_indices out")
            if not isinstance(module, TrainableTokensEmbedding):
                module = TrainableTokensEmbedding(module)
                self.base_model.set_submodule(name, module)
            module.add_adapter(adapter_name, indices, module_name=f"embedding {name!r}")

    def _apply_modules_to_save(self, config: PeftConfig) -> None:
        if not config.modules_to_save:
            return
        found = False
        for name, module in self.base_model.named_modules():
            if name and name_matches(name, list(config.modules_to_save)):
                module.requires_grad_(True)
                found = True
        if not found:
            raise ValueError(f"modules_to_save={config.modules_to_save!r} matched no module")

    def tuner_layers(self) -> list[TunerLayer]:
        return [m for m in self.base_model.modules() if isinstance(m, TunerLayer)]

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the adapter that runs and trains; the other adapters are frozen."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; adapters: {list(self.peft_config)}")
        for layer in self.tuner_layers():
            if adapter_name in layer.adapter_names():
                layer.set_adapter(adapter_name)
            else:
                layer.set_adapter([])
        if "prompt_encoder" in self._modules:
            for name in self.prompt_encoder.keys():
                self.prompt_encoder[name].requires_grad_(name == adapter_name)
        self.active_adapter = adapter_name

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter]

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; adapters: {list(self.peft_config)}")
        if len(self.peft_config) == 1:
            raise ValueError("cannot delete the only adapter; use merge_and_unload() or unload()")
        for layer in self.tuner_layers():
            if adapter_name in layer.adapter_names():
                layer.delete_adapter(adapter_name)
        if "prompt_encoder" in self._modules:
            del self.prompt_encoder[adapter_name]
        del self.peft_config[adapter_name]
        if self.active_adapter == adapter_name:
            self.set_adapter(next(iter(self.peft_config)))

    @contextlib.contextmanager
    def disable_adapter(self):
        """Context manager: run the plain base model inside the block (PEFT's name)."""
        layers = self.tuner_layers()
        for layer in layers:
            layer.disable_adapters = True
        self._adapters_disabled = True
        try:
            yield self
        finally:
            for layer in layers:
                layer.disable_adapters = False
            self._adapters_disabled = False

    # ------------------------------------------------------------------ merging
    def merge_adapter(self, requantize: bool = False) -> None:
        """Fold the active LoRA/IA3 adapter into the base weights (outputs unchanged, no extra compute).
        Quantized base layers need requantize=True: the merged weights are rounded to their format again."""
        self._require_mergeable(requantize)
        for name, layer in self._named_tuner_layers():
            layer.merge(requantize=requantize, layer_name=name)

    def unmerge_adapter(self) -> None:
        """Restore the exact pre-merge base weights."""
        for layer in self.tuner_layers():
            layer.unmerge()

    def merge_and_unload(self, requantize: bool = False) -> Module:
        """Merge the active adapter and return the base model with every wrapper replaced by its Linear.
        Quantized base layers need requantize=True (they stay quantized, holding the rounded merge)."""
        self._require_mergeable(requantize)
        for name, layer in self._named_tuner_layers():
            layer.merge(requantize=requantize, layer_name=name)
        return self._unload()

    def _named_tuner_layers(self) -> list[tuple[str, TunerLayer]]:
        return [(name, m) for name, m in self.base_model.named_modules() if isinstance(m, TunerLayer)]

    def convert_weights(self, dtype: str) -> "PeftModel":
        """The base model's own convert_weights(dtype) (GPT: "float32" | "q8_0" | "q4_0" | "q4_1"), in place,
        with the adapters left as they are: the base's method alone would quantize every Linear it finds,
        LoRA's A and B included. Each wrapper gets its converted base layer back; the base stays frozen
        and every adapter parameter keeps its requires_grad. Returns self."""
        base = self.base_model
        if not hasattr(base, "convert_weights"):
            raise AttributeError(f"convert_weights: the base model, a {type(base).__name__}, has no convert_weights")
        wrappers = self._named_tuner_layers()
        if any(layer.merged for _, layer in wrappers):
            raise ValueError(f"convert_weights({dtype!r}): the adapter is merged into the weights; unmerge_adapter() first")
        if dtype != "float32" and any(isinstance(layer, TrainableTokensEmbedding) for _, layer in wrappers):
            raise ValueError(f"convert_weights({dtype!r}): this adapter trains token rows of the embedding, which "
                             f"cannot be quantized under it (trainable_token_indices)")
        trainable = {id(param): param.requires_grad for param in self.parameters()}
        for name, layer in wrappers:
            base.set_submodule(name, layer.base_layer)
        try:
            base.convert_weights(dtype)
        finally:
            for name, layer in wrappers:
                layer.base_layer = base.get_submodule(name)
                layer.base_layer.requires_grad_(False)
                base.set_submodule(name, layer)
        for param in self.parameters():
            param.requires_grad = trainable.get(id(param), False)  # a converted base layer's new parameters: frozen
        return self

    def quantized_base_layers(self) -> list[str]:
        """Names of the wrapped layers whose base keeps quantized blocks (QLoRA-style training)."""
        return [name for name, layer in self._named_tuner_layers() if getattr(layer, "base_is_quantized", False)]

    def unload(self) -> Module:
        """Remove every wrapper without merging: the original base model back."""
        self.unmerge_adapter()
        return self._unload()

    def _unload(self) -> Module:
        names = [name for name, m in self.base_model.named_modules() if isinstance(m, TunerLayer)]
        for name in names:
            layer = self.base_model.get_submodule(name)
            layer._merge_backup = None  # the merged weights are now the weights
            self.base_model.set_submodule(name, layer.base_layer)
        return self.base_model

    @property
    def mergeable(self) -> bool:
        """Whether merge_and_unload() folds the method into the weights exactly: LoRA and IA3 on float
        layers (on quantized blocks the merge rounds and needs requantize=True)."""
        return self.peft_type in ("lora", "ia3") and not self.quantized_base_layers()

    def _require_mergeable(self, requantize: bool = False) -> None:
        if self.peft_type not in ("lora", "ia3"):
            raise NotImplementedError(f"{self.peft_type!r} adapters cannot be merged into the weights "
                                      f"(only LoRA and IA3 change the layers linearly)")
        quantized = self.quantized_base_layers()
        if quantized and not requantize:
            layer = self.base_model.get_submodule(quantized[0]).base_layer
            raise ValueError(f"cannot merge the adapter into {quantized[0]!r} ({len(quantized)} quantized layers in "
                             f"all): its weight is frozen {layer.weight_type} blocks, and W + delta would be rounded "
                             f"to {layer.weight_type} again. Keep the adapter apart (save_pretrained, then load it "
                             f"onto the base), pass requantize=True to accept that rounding, or load the base with "
                             f"dtype='float32' to merge exactly")

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory, adapter_name: str | None = None, layout: str = "auto"):
        """Write one adapter (default: the active one): adapter_model.safetensors + adapter_config.json,
        in PEFT's layout where that is exact, else minifm's (layout="auto"|"peft"|"minifm", minifm/peft/io.py)."""
        return save_adapter(self, directory, adapter_name, layout=layout)

    @classmethod
    def from_pretrained(cls, model: Module, directory, adapter_name: str = "default", is_trainable: bool = False,
                        tokenizer=None) -> "PeftModel":
        """PEFT's PeftModel.from_pretrained: wrap `model` with the adapter saved in `directory`
        (frozen for inference unless is_trainable=True)."""
        config = load_adapter_config(directory, model)  # a file in PEFT's layout is translated for `model`
        peft_model = get_peft_model(model, config, adapter_name=adapter_name, tokenizer=tokenizer)
        load_adapter(peft_model, directory, adapter_name=adapter_name, is_trainable=is_trainable)
        return peft_model

    # ------------------------------------------------------------------ parameter counts
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), PEFT's function. Quantized weights (buffers of packed
        blocks, not Parameters) count as their logical (rows x columns) weights, as PEFT counts a
        bitsandbytes 4-bit base by its unpacked size."""
        trainable = sum(p.size for p in self.parameters() if p.requires_grad)
        total = sum(p.size for p in self.parameters())
        total += sum(rows * columns for rows, columns in
                     (m.logical_shape for m in self.modules() if isinstance(m, QUANTIZED_LAYER_TYPES)))
        return int(trainable), int(total)

    def print_trainable_parameters(self) -> str:
        trainable, total = self.get_nb_trainable_parameters()
        line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        print(line)
        return line

    def adapter_state_dict(self, adapter_name: str | None = None) -> dict[str, np.ndarray]:
        """The parameters that belong to one adapter (+ trainable biases / modules_to_save), keyed
        by their name with the adapter name removed (PEFT's saved layout)."""
        adapter_name = self.active_adapter if adapter_name is None else adapter_name
        others = [name for name in self.peft_config if name != adapter_name]
        state = {}
        for name, param in self.named_parameters():
            parts = name.split(".")
            if adapter_name in parts:
                state[".".join(p for p in parts if p != adapter_name)] = param.data
            elif any(other in parts for other in others):
                continue
            elif param.requires_grad and not _is_adapter_param(parts):
                state[name] = param.data  # trainable biases / modules_to_save
        return state

    # ------------------------------------------------------------------ forward passes
    @property
    def _prompt_active(self) -> bool:
        return self.peft_type == "prompt" and not self._adapters_disabled

    @property
    def _prefix_active(self) -> bool:
        return self.peft_type == "prefix" and not self._adapters_disabled

    @property
    def num_virtual_tokens(self) -> int:
        if self.peft_type not in ("prompt", "prefix"):
            return 0
        return self.peft_config[self.active_adapter].num_virtual_tokens

    @contextlib.contextmanager
    def _prefixes_installed(self):
        if not self._prefix_active:
            yield
            return
        modules = [module for _, module in attention_modules(self.base_model)]
        pairs = self.prompt_encoder[self.active_adapter]()
        try:
            for module, pair in zip(modules, pairs):
                module.extra_kv = pair
            yield
        finally:
            for module in modules:
                module.extra_kv = None

    def _extend_mask(self, attention_mask, batch: int, dtype=np.int64):
        """Prepend num_virtual_tokens ones to a (B, T) mask (None stays None)."""
        if attention_mask is None:
            return None
        mask = np.asarray(data_of(attention_mask))
        if mask.ndim != 2 or mask.shape[0] != batch:
            raise ValueError(f"attention_mask must be (batch={batch}, T), got shape {mask.shape}")
        ones = np.ones((batch, self.num_virtual_tokens), dtype=mask.dtype)
        return np.concatenate([ones, mask], axis=1)

    def _soft_prompt_embeds(self, input_ids, inputs_embeds):
        """[soft prompt ; token embeddings] (B, P + T, d)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            ids = np.asarray(data_of(input_ids))
            if ids.ndim != 2:
                raise ValueError(f"input_ids must be (batch, T), got shape {ids.shape}")
            inputs_embeds = find_token_embedding(self.base_model)(ids)  # (B, T, d)
        batch = inputs_embeds.shape[0]
        prompt = self.prompt_encoder[self.active_adapter](batch)  # (B, P, d)
        return ops.concatenate([prompt, inputs_embeds], axis=1)  # (B, P + T, d)

    def _strip_virtual(self, output):
        """Drop the outputs at the virtual positions (axis 1) of a Tensor or a tuple of Tensors."""
        count = self.num_virtual_tokens
        if isinstance(output, tuple):
            return tuple(item[:, count:] for item in output)
        return output[:, count:]

    def forward(self, *args, **kwargs):
        if self.kind == "causal":
            return self._causal_forward(*args, **kwargs)
        if self.kind == "encoder":
            return self._encoder_forward(*args, **kwargs)
        return self._seq2seq_forward(*args, **kwargs)

    def _causal_forward(self, input_ids=None, attention_mask=None, cache=None, inputs_embeds=None, **kwargs):
        if not self._prompt_active:
            with self._prefixes_installed():
                return self.base_model(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                       inputs_embeds=inputs_embeds, **kwargs)
        batch = (inputs_embeds if inputs_embeds is not None else np.asarray(input_ids)).shape[0]
        mask = self._extend_mask(attention_mask, batch)
        if cache is not None and cache.length > 0:
            # the soft prompt went in with the first call and lives in the cache now
            return self.base_model(input_ids=input_ids, attention_mask=mask, cache=cache,
                                   inputs_embeds=inputs_embeds, **kwargs)
        embeds = self._soft_prompt_embeds(input_ids, inputs_embeds)  # (B, P + T, d)
        output = self.base_model(attention_mask=mask, cache=cache, inputs_embeds=embeds, **kwargs)
        return self._strip_virtual(output)

    @contextlib.contextmanager
    def _soft_prompt_embedding_installed(self):
        """Swap the token embedding for one that writes the soft prompt over the first P positions.

        For models whose forward has no `inputs_embeds` (BERT.forward, T5.encode): the caller prepends
        P placeholder ids, so positions and masks are computed for P + T tokens, exactly as if the soft
        prompt had been passed as embeddings.
        """
        embedding = find_token_embedding(self.base_model)
        name = next(n for n, m in self.base_model.named_modules() if m is embedding)
        self.base_model.set_submodule(name, _SoftPromptEmbedding(embedding, self.prompt_encoder[self.active_adapter]))
        try:
            yield
        finally:
            self.base_model.set_submodule(name, embedding)

    def _with_placeholders(self, input_ids, attention_mask):
        """(placeholder ids + input_ids, ones + attention_mask), both (B, P + T)."""
        ids = np.asarray(data_of(input_ids))
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, T), got shape {ids.shape}")
        placeholders = np.zeros((ids.shape[0], self.num_virtual_tokens), dtype=ids.dtype)
        mask = self._extend_mask(attention_mask, ids.shape[0])
        if mask is None:
            mask = np.ones((ids.shape[0], self.num_virtual_tokens + ids.shape[1]), dtype=np.int64)
        return np.concatenate([placeholders, ids], axis=1), mask

    def _encoder_forward(self, input_ids=None, attention_mask=None, **kwargs):
        if not self._prompt_active:
            with self._prefixes_installed():
                return self.base_model(input_ids, attention_mask=attention_mask, **kwargs)
        ids, mask = self._with_placeholders(input_ids, attention_mask)
        with self._soft_prompt_embedding_installed():
            hidden = self.base_model(ids, attention_mask=mask, **kwargs)  # (B, P + T, d)
        return self._strip_virtual(hidden)

    def _peft_encode(self, input_ids=None, attention_mask=None, **kwargs):
        """T5 encode; with prompt tuning the returned states include the virtual positions."""
        base = self.base_model
        if not self._prompt_active:
            with self._prefixes_installed():
                return base.encode(input_ids, attention_mask=attention_mask, **kwargs)
        ids, mask = self._with_placeholders(input_ids, attention_mask)
        with self._soft_prompt_embedding_installed():
            return base.encode(ids, attention_mask=mask, **kwargs)  # (B, P + S, d)

    def _peft_decode(self, decoder_input_ids, encoder_hidden, encoder_mask=None, **kwargs):
        """T5 decode; a caller's encoder mask that lacks the virtual positions is extended."""
        if self._prompt_active and encoder_mask is not None:
            mask = np.asarray(data_of(encoder_mask))
            if mask.shape[1] == encoder_hidden.shape[1] - self.num_virtual_tokens:
                encoder_mask = self._extend_mask(mask, mask.shape[0])
        with self._prefixes_installed():
            return self.base_model.decode(decoder_input_ids, encoder_hidden, encoder_mask=encoder_mask, **kwargs)

    def _seq2seq_forward(self, input_ids=None, decoder_input_ids=None, attention_mask=None, **kwargs):
        encoder_hidden = self._peft_encode(input_ids, attention_mask=attention_mask)
        encoder_mask = attention_mask
        if encoder_mask is None:
            batch = encoder_hidden.shape[0]
            encoder_mask = np.ones((batch, encoder_hidden.shape[1] - (self.num_virtual_tokens if self._prompt_active else 0)),
                                   dtype=np.int64)
        return self._peft_decode(decoder_input_ids, encoder_hidden, encoder_mask=encoder_mask, **kwargs)

    def _peft_make_cache(self, batch_size: int, max_length: int):
        extra = self.num_virtual_tokens if (self._prompt_active and self.kind == "causal") else 0
        return self.base_model.make_cache(batch_size, max_length + extra)

    def loss(self, *args, ignore_index: int = -100, **kwargs):
        """The base model's loss, computed through this wrapper's forward (so every method applies)."""
        if self.kind == "causal":
            input_ids, targets = args[0], args[1]
            logits = self(input_ids, **kwargs)  # (B, T, V)
            return F.cross_entropy(logits, np.asarray(data_of(targets)), ignore_index=ignore_index)
        if self.kind == "seq2seq":
            return self._seq2seq_loss(*args, ignore_index=ignore_index, **kwargs)
        with self._prefixes_installed():
            return self.base_model.loss(*args, ignore_index=ignore_index, **kwargs)

    def _seq2seq_loss(self, input_ids, labels, attention_mask=None, decoder_input_ids=None, ignore_index=-100):
        """T5.loss's contract: decoder inputs default to shift_right(labels)."""
        labels = np.asarray(data_of(labels))
        if decoder_input_ids is None:
            decoder_input_ids = self.base_model.shift_right(labels)
        logits = self(input_ids, decoder_input_ids, attention_mask=attention_mask)  # (B, T, V)
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)

    def generate(self, input_ids, max_new_tokens: int, **kwargs):
        """KV-cached generation through this wrapper (minifm.sampling.generate)."""
        return generate(self, input_ids, max_new_tokens, **kwargs)


class _SoftPromptEmbedding(Module):
    """Token embedding whose first P output positions are the soft prompt (ids there are placeholders)."""

    def __init__(self, embedding: Embedding, prompt: PromptEmbedding):
        super().__init__()
        # object.__setattr__ stores plain references, bypassing Module.__setattr__'s registration of
        # submodules: this stand-in replaces the token embedding for one forward call only, and as
        # registered children the embedding and the soft prompt would appear in the base model's
        # named_parameters() and state_dict() under new names during that call
        object.__setattr__(self, "inner", embedding)
        object.__setattr__(self, "prompt", prompt)

    @property
    def weight(self):
        return self.inner.weight

    def forward(self, ids):
        count = self.prompt.num_virtual_tokens
        tokens = self.inner(ids[:, count:])  # (B, T, d)
        return ops.concatenate([self.prompt(ids.shape[0]), tokens], axis=1)  # (B, P + T, d)


def _is_adapter_param(parts: list[str]) -> bool:
    return any(part in ("lora_A", "lora_B", "ia3_l", "adapters", "prompt_encoder", "trainable_tokens_delta")
               for part in parts)


def get_peft_model(model: Module, peft_config: PeftConfig, adapter_name: str = "default", tokenizer=None,
                   rng: np.random.Generator | None = None) -> PeftModel:
    """Wrap `model` with the method that `peft_config` describes (PEFT's entry point).

    The base model is modified in place (its targeted layers are wrapped and all its parameters frozen).
    `tokenizer` is needed only for PromptTuningConfig(prompt_tuning_init="TEXT"); `rng` seeds the
    adapter initialisation (default: the model's own `rng`, else a Generator seeded with 0).
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minifm.nn.Module, got {type(model).__name__}")
    if isinstance(model, PeftModel):
        raise ValueError(f"model is already a PeftModel (method {model.peft_type!r}); stacking PEFT methods is "
                         f"not supported: use add_adapter() for a second adapter of the same method, or "
                         f"merge_and_unload() a LoRA/IA3 model first")
    return PeftModel(model, peft_config, adapter_name=adapter_name, tokenizer=tokenizer, rng=rng)
