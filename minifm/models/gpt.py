"""GPT: a decoder-only transformer language model (GPT-2's layout, with LLaMA-style options).

    ids (B, T) -> wte(ids) [+ wpe(positions)] -> dropout -> n_layer x TransformerBlock (causal, pre-norm)
               -> norm_f -> logits = h @ wte.weight^T (tied) or lm_head(h)           (B, T, vocab)

Options in GPTConfig: learned absolute positions or RoPE; LayerNorm or RMSNorm; GELU MLP (exact, or
GPT-2's tanh approximation: mlp="gelu_tanh") or SwiGLU; grouped-query attention (n_kv_head < n_head);
tied or separate output head; biases on or off (q/k/v biases alone with qkv_bias, as Qwen2 has).
These options cover the GPT-2 and Llama families, whose checkpoints GPT.from_pretrained reads.

Positions: with an attention_mask (B, cached + new) of 1/0 (0 = padding), a token's position is the
number of real tokens before it (cumulative sum of the mask - 1, as Hugging Face does), so a
left-padded prompt gets the same positions as the unpadded one; padding keys are never attended.

Decoding fast paths (graph recording off, float32, a KV cache): a one-token step of unpadded sequences
through stock GPT-2-layout blocks (LayerNorm, learned positions, GELU MLP, no GQA) runs each block as one
minifm.kernels.gpt2_step call (batch 1-16); other blocks take TransformerBlock's no-grad path (and a Llama
block at batch 1 its decode_step kernel). The tied head is decode_step.matvec for one row and the fewrows
kernel for 2-16 rows. These differ from the recorded path by float32 rounding (other summation orders).

Initialisation: GPT-2's (minifm.models.config.init_gpt2_style): N(0, 0.02) weights, zero biases,
residual projections scaled by 1/sqrt(2 * n_layer). The generator is seeded by config.seed; a second
generator from the same seed, `model.rng`, drives every Dropout.

Config fields beyond the core ones (vocab_size ... tie_weights), all with defaults: mlp_ratio=4.0, mlp_hidden=None
(explicit FFN width), rope_base=10000.0, norm_eps=None (1e-5 LayerNorm / 1e-6 RMSNorm),
init_std=0.02, seed=0, dtype="float32" ("float64" for exact-math tests).

Quantized weights (minifm/nn/quantized.py): weight_dtype="q8_0" | "q4_0" | "q4_1" stores every Linear of
the blocks (and an untied lm_head) as frozen GGUF blocks, embedding_dtype the same for the token
embedding, which a tied model also uses as its output head (rows dequantized for the lookup, the
quantized product for the logits). None (the default) keeps them in `dtype`. int8_activations=True
rounds the inputs of those quantized products to int8 per block of 32, as llama.cpp does (faster
decoding, a small rounding error; nn/quantized.py); `use_int8_activations` switches it on a built model. Quantized models
compute in float32 and are frozen (every parameter requires_grad=False; adapters train on top). A GPT built with them quantizes its GPT-2 initialisation; GPT.from_pretrained
and run directories fill them with the stored blocks instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minifm.functional as F
from minifm.autograd.grad_mode import is_grad_enabled
from minifm.autograd.tensor import Tensor, data_of
from minifm.kernels import decode_step, fewrows, gpt2_step
from minifm.models.config import (
    TransformerConfigBase, check_ids, check_mask, initialise_weights, rotary_embedding, transformer_blocks,
)
from minifm.nn.attention import KVCache
from minifm.nn.block import TransformerBlock
from minifm.nn.checkpoint import checkpoint
from minifm.nn.layers import Dropout, Embedding, Linear, make_norm
from minifm.nn.mlp import MLP
from minifm.models.pretrained import EMBEDDING_DTYPE, load_pretrained, save_pretrained
from minifm.nn import init
from minifm.nn.module import Module
from minifm.nn.quantized import (
    QuantizedEmbedding, check_weight_type, convert_linears, empty_quantized_linears, set_int8_activations,
)
from minifm.sampling.generate import generate


# BERTConfig and T5Config repeat most of these fields on purpose: each config shows all its fields and
# defaults in one place; their checks and derived sizes are shared (TransformerConfigBase, models/config.py)
@dataclass
class GPTConfig(TransformerConfigBase):
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    n_kv_head: int | None = None
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    tie_weights: bool = True
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None
    rope_base: float = 10000.0
    norm_eps: float | None = None
    init_std: float = 0.02
    seed: int = 0
    dtype: str = "float32"
    qkv_bias: bool | None = None  # q/k/v biases apart from `bias` (Qwen2: True with bias=False); None = bias
    weight_dtype: str | None = None  # "q8_0" | "q4_0" | "q4_1": Linear weights kept quantized; None = dtype
    embedding_dtype: str | None = None  # the same for the token embedding (and a tied head); None = dtype
    int8_activations: bool = False  # quantized products round their inputs to int8 (llama.cpp's); needs quantized weights

    def validate(self) -> None:  # after ConfigBase's type checks
        self.check_shared_fields()  # positive sizes, choices, heads, dropout (TransformerConfigBase)
        for field in ("weight_dtype", "embedding_dtype"):
            value = getattr(self, field)
            if value is None:
                continue
            check_weight_type(value, f"GPTConfig.{field}")
            if value != value.lower():
                raise ValueError(f"GPTConfig.{field} is spelt in lower case ({value.lower()!r}), got {value!r}")
            widths = {"n_embd": self.n_embd} if field == "embedding_dtype" else \
                {"n_embd": self.n_embd, "the FFN width": self.ffn_hidden}
            for width_name, width in widths.items():
                if width % 32:
                    raise ValueError(f"GPTConfig.{field}={value!r} stores rows in blocks of 32 values: {width_name} "
                                     f"must be a multiple of 32, got {width}")
            if self.dtype != "float32":
                raise ValueError(f"GPTConfig.{field}={value!r} needs dtype 'float32' (quantized weights compute in "
                                 f"float32), got dtype {self.dtype!r}")

        if self.int8_activations and not self.quantized:
            raise ValueError("GPTConfig.int8_activations=True rounds the inputs of quantized products: it needs "
                             "weight_dtype or embedding_dtype, got neither")

    @property
    def quantized(self) -> bool:
        """True when some weights are kept in a quantized block format."""
        return self.weight_dtype is not None or self.embedding_dtype is not None


class GPT(Module):
    """Decoder-only language model (see the module docstring)."""

    # transformers' name: when True, training forwards keep only each block's input and recompute the
    # block's activations in backward (minifm/nn/checkpoint.py); set by gradient_checkpointing_enable()
    gradient_checkpointing = False

    def __init__(self, config: GPTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        self.config = config
        d = config.n_embd
        self.wte = Embedding(config.vocab_size, d)
        if config.pos == "learned":
            self.wpe = Embedding(config.block_size, d)
        self.drop = Dropout(config.dropout)
        self.blocks = transformer_blocks(config, config.n_layer, causal=True, rope=rotary_embedding(config))
        self.norm_f = make_norm(config.norm, d, config.norm_eps, config.bias)
        if not config.tie_weights:
            self.lm_head = Linear(d, config.vocab_size, bias=False)
        self.rng = initialise_weights(self, config, config.n_layer)  # GPT-2 init; drives every Dropout
        if config.quantized:
            self._quantize_weights(config)

    def _quantize_weights(self, config: GPTConfig) -> None:
        """Swap the Linear layers (weight_dtype) and the embedding (embedding_dtype) for frozen quantized
        ones: the initialised values quantized, or zero blocks when the initialisation was skipped
        (a checkpoint fills them next, and the float layers' np.empty memory is never read). Every
        parameter is frozen: training such a model means adapters (minifm/nn/quantized.py)."""
        skipped = init._skipping  # True inside init.skipped_initialisation()
        if config.weight_dtype is not None:
            swap = empty_quantized_linears if skipped else convert_linears
            swap(self, config.weight_dtype)
        if config.embedding_dtype is not None:
            if skipped:
                self.wte = QuantizedEmbedding(config.vocab_size, config.n_embd, config.embedding_dtype)
            else:
                self.wte = QuantizedEmbedding.from_embedding(self.wte, config.embedding_dtype, "wte.weight")
        set_int8_activations(self, config.int8_activations)
        self.requires_grad_(False)  # a quantized model is a frozen base (nn/quantized.py, "Training")

    # ------------------------------------------------------------------ forward
    @classmethod
    def from_pretrained(cls, path, dtype: str | None = None) -> "GPT":
        """A GPT holding a real checkpoint: a Hugging Face directory or a .gguf file (minifm/models/pretrained.py).

        dtype: "float32" | "float64" | "q8_0" | "q4_0" | "q4_1"; None = the file's own (a GGUF's
        quantized weights kept as stored; float32 for a Hugging Face directory)."""
        return load_pretrained(cls, GPTConfig, "gpt", path, dtype)

    def convert_weights(self, dtype: str) -> "GPT":
        """Store the weights as `dtype`, in place, and return self (as GPT.from_pretrained would load them):
        "q8_0" | "q4_0" | "q4_1" quantizes every Linear weight, and the token embedding (the head of a tied
        model) to Q8_0 (models/pretrained.py EMBEDDING_DTYPE); layers already in their format keep their
        blocks, others are requantized from their float32 values; every parameter is then frozen.
        "float32" dequantizes every quantized layer back into float32 layers, all parameters trainable."""
        if dtype not in ("float32", "q8_0", "q4_0", "q4_1"):
            raise ValueError(f"dtype must be one of ['float32', 'q8_0', 'q4_0', 'q4_1'], got {dtype!r}")
        if self.config.dtype != "float32":
            raise ValueError(f"convert_weights({dtype!r}) needs a float32 model, this one is {self.config.dtype}")
        weight_type = None if dtype == "float32" else dtype
        embedding_type = None if dtype == "float32" else EMBEDDING_DTYPE
        convert_linears(self, weight_type)
        current = self.wte.weight_type.lower() if isinstance(self.wte, QuantizedEmbedding) else None
        if current != embedding_type:
            table = self.wte.to_embedding() if current else self.wte
            self.wte = table if embedding_type is None else \
                QuantizedEmbedding.from_embedding(table, embedding_type, "wte.weight")
        self.config.weight_dtype, self.config.embedding_dtype = weight_type, embedding_type
        self.config.int8_activations = self.config.int8_activations and weight_type is not None
        set_int8_activations(self, self.config.int8_activations)  # the new quantized layers too
        self.requires_grad_(weight_type is None)  # quantized: a frozen base (nn/quantized.py, "Training")
        return self

    def use_int8_activations(self, enabled: bool = True) -> "GPT":
        """Round the inputs of every quantized product to int8 per block of 32 (llama.cpp's faster products;
        the module docstring), or multiply them in float32 again (enabled=False). Returns self."""
        if enabled and not self.config.quantized:
            raise ValueError("use_int8_activations(True) rounds the inputs of quantized products, and this model "
                             "has no quantized weights: load it with a quantized dtype (e.g. 'q8_0') first")
        self.config.int8_activations = bool(enabled)
        set_int8_activations(self, self.config.int8_activations)
        return self

    def save_pretrained(self, directory):
        """Write this model as a Hugging Face directory (config.json + model.safetensors) that transformers loads."""
        return save_pretrained(self, "gpt", directory)

    def forward(self, input_ids=None, attention_mask=None, cache: KVCache | None = None, inputs_embeds=None,
                return_hidden: bool = False, logits_to_keep: int = 0):
        """Logits (B, T, vocab) for the new tokens (and the final hidden states if return_hidden).

        logits_to_keep (transformers' name and meaning): 0 = every position's logits; k > 0 = only the
        last k positions' (B, k, vocab), which is what generation needs after a prompt: the output head
        (vocab x n_embd, the largest matrix of a small model) then runs on k rows instead of T. The
        hidden states returned with return_hidden are always every position's.

        input_ids (B, T) integers, or inputs_embeds (B, T, n_embd) instead of the token lookup.
        attention_mask (B, cached + T): 1 = real token, 0 = padding (left padding allowed).
        cache: a KVCache from make_cache(); read, extended in place, and advanced by T.
        """
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if isinstance(logits_to_keep, (bool, np.bool_)) or not isinstance(logits_to_keep, (int, np.integer)) \
                or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an integer >= 0 (0 = every position), got {logits_to_keep!r}")
        if input_ids is not None:
            input_ids = check_ids("input_ids", input_ids)
            batch, steps = input_ids.shape
            x = self.wte(input_ids)  # (B, T, d)
        else:
            x = inputs_embeds if isinstance(inputs_embeds, Tensor) else Tensor(np.asarray(inputs_embeds))
            if x.ndim != 3 or x.shape[-1] != config.n_embd:
                raise ValueError(f"inputs_embeds must be (B, T, {config.n_embd}), got {x.shape}")
            batch, steps = x.shape[:2]
        past = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"the cache holds batch size {cache.batch_size}, the input has {batch}")
        if config.pos == "learned" and past + steps > config.block_size:
            raise ValueError(
                f"sequence length {past + steps} (cached {past} + new {steps}) exceeds block_size {config.block_size}"
            )
        positions, key_padding_mask = self._positions_and_mask(attention_mask, batch, past, steps)
        if config.pos == "learned":
            x = x + self.wpe(positions)  # (B, T, d)
        x = self.drop(x)
        if steps == 1 and key_padding_mask is None and self._can_run_gpt2_step(x, cache):
            x = self._gpt2_step_blocks(x, cache)  # (B, 1, d): one call per block
        else:
            for index, block in enumerate(self.blocks):
                if self.gradient_checkpointing and cache is None:
                    x = checkpoint(block, x, positions=positions, key_padding_mask=key_padding_mask)
                    continue
                x = block(x, positions=positions, key_padding_mask=key_padding_mask, cache=cache, layer_index=index)
        hidden = self.norm_f(x)  # (B, T, d)
        kept = hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]  # (B, T or k, d)
        logits = self.logits_from_hidden(kept)  # (B, T or k, vocab)
        if cache is not None:
            cache.advance(steps)
        return (logits, hidden) if return_hidden else logits

    def _can_run_gpt2_step(self, x, cache: KVCache | None) -> bool:
        """True when minifm.kernels.gpt2_step computes every block of this one-token step: graph recording
        off, a KV cache with room, float32, at most gpt2_step.MAX_BATCH rows, learned positions, LayerNorm,
        a GELU MLP, no GQA, and blocks on TransformerBlock's no-grad path with float Linear layers (no PEFT
        wrapper, no quantized layer, no prefix, no sliding window). The caller checked: one token, no padding."""
        config = self.config
        if is_grad_enabled() or cache is None or cache.length >= cache.max_length or x.dtype != np.float32 \
                or x.shape[0] > gpt2_step.MAX_BATCH or x.requires_grad:
            return False
        if config.pos != "learned" or config.norm != "layernorm" or config.mlp not in ("gelu", "gelu_tanh") \
                or config.kv_heads != config.n_head:
            return False
        for index, block in enumerate(self.blocks):
            keys = cache.keys[index]
            if type(block) is not TransformerBlock or type(block.mlp) is not MLP or keys is None \
                    or not keys.flags.c_contiguous or not cache.values[index].flags.c_contiguous \
                    or keys.dtype != np.float32 or not block.attn.causal or not block._can_run_inference_path(x):
                return False
            layers = (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.o_proj, block.mlp.fc_in,
                      block.mlp.fc_out)
            if any(type(layer) is not Linear or layer.weight.data.dtype != np.float32 for layer in layers):
                return False
        return True

    def _gpt2_step_blocks(self, x: Tensor, cache: KVCache) -> Tensor:
        """Every block on one token per row by gpt2_step.gpt2_layer; writes the cache at cache.length."""
        batch = x.shape[0]
        rows = np.array(x.data.reshape(batch, -1), dtype=np.float32, order="C")  # (B, d), updated in place
        for index, block in enumerate(self.blocks):
            gpt2_step.gpt2_layer(rows, gpt2_step.layer_weights(block), cache.keys[index], cache.values[index],
                                 cache.length)
        return Tensor._from_array(rows.reshape(batch, 1, -1))  # (B, 1, d)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in backward instead of keeping them (transformers' name)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def logits_from_hidden(self, hidden):
        """Apply the output head to final hidden states (B, T, d) -> (B, T, vocab)."""
        if self.config.tie_weights:
            if isinstance(self.wte, QuantizedEmbedding):
                return self.wte.logits(hidden)  # the quantized table as the head
            if hidden.shape[:2] == (1, 1) and not is_grad_enabled():
                # one decoded token: the streaming matrix-vector product (minifm/kernels/decode_step.py)
                row = decode_step.matvec(hidden.data.reshape(-1), self.wte.weight.data)  # (vocab,)
                return Tensor._from_array(row.reshape(1, 1, -1))
            if hidden.shape[1] == 1 and not is_grad_enabled():
                # one decoded token per row of a batch: the few-rows kernel reads the table once for all
                # rows, where BLAS would pack it on every call (minifm/kernels/fewrows.py)
                rows = hidden.data.reshape(hidden.shape[0], -1)  # (B, d)
                if fewrows.applies(rows, self.wte.weight.data):
                    logits = fewrows.fewrows(rows, self.wte.weight.data)  # (B, vocab)
                    return Tensor._from_array(logits.reshape(hidden.shape[0], 1, -1))
            return F.linear(hidden, self.wte.weight)
        return self.lm_head(hidden)

    @staticmethod
    def _positions_and_mask(attention_mask, batch: int, past: int, steps: int):
        """Positions (B, T) or (T,) of the new tokens and the key padding mask (None when nothing is padded)."""
        if attention_mask is None:
            return np.arange(past, past + steps), None
        mask = check_mask("attention_mask", attention_mask, (batch, past + steps))
        positions = np.cumsum(mask, axis=1) - 1  # (B, past + T): real tokens before each token
        positions = np.maximum(positions, 0)[:, past:]  # (B, T)
        key_padding_mask = None if mask.all() else mask
        return positions, key_padding_mask

    def make_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        """An empty KVCache for `batch_size` sequences of up to max_length (default block_size) tokens."""
        config = self.config
        return KVCache(config.n_layer, batch_size, config.kv_heads, config.head_dim,
                       config.block_size if max_length is None else max_length)

    def loss(self, input_ids, targets, ignore_index: int = -100, attention_mask=None):
        """Mean next-token cross-entropy of targets (B, T) under the logits of input_ids (B, T)."""
        logits = self.forward(input_ids, attention_mask=attention_mask)  # (B, T, V)
        targets = np.asarray(data_of(targets))
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"targets must have shape {logits.shape[:2]}, got {targets.shape}")
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)

    def generate(self, input_ids, max_new_tokens: int, **kwargs):
        """Sample continuations; see minifm.sampling.generate.generate for the arguments."""
        return generate(self, input_ids, max_new_tokens, **kwargs)
