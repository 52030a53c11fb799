"""Trainable tokens: fine-tune a few rows of the token embedding (PEFT's `trainable_token_indices`).

A model meets the chat special tokens (<|user|>, <|assistant|>, <|end|>, ...) only in fine-tuning:
they never occur in pre-training text, so their embedding rows were never trained as inputs. LoRA on
the attention or MLP projections cannot change those rows; full fine-tuning can. Hugging Face PEFT
(>= 0.15) lets a LoRA adapter train just those rows: `LoraConfig(trainable_token_indices=[...])`.
This file is that option.

For the embedding table W (V, d) and the selected ids I = [i_1, ..., i_k] the wrapped table is

    W'[i] = T[j]    when i = i_j        (T (k, d), the trainable rows)
    W'[i] = W[i]    otherwise           (frozen, bit-identical)

T starts as a copy of W[I], so the model is unchanged at step 0; only T trains. Like PEFT, T holds
the rows' new *values* (an override), not an additive change, and keeps PEFT's parameter name
`trainable_tokens_delta`. Trainable parameters: k * d per wrapped embedding (len(indices) * d).

Weight tying: GPT (tie_weights=True), BERT's MLM head and T5 compute their output logits from
`embedding.weight`. The wrapper's `weight` property returns the overridden table W' (a Tensor built
by `RowOverride`, which routes gradients to T), so a tied head uses the same k trained rows and its
gradient reaches T too, with no second copy (PEFT's tied adapter). An untied head is left alone.

Forms of `trainable_token_indices` (PEFT's): a list of ids for the model's input embedding, or a dict
{embedding module name: list of ids} (names matched like target_modules, e.g. {"wte": [3, 5]}).

Merging writes T into W[I] in place and keeps a copy of the k original rows, so `unmerge()` restores
W bit for bit (PEFT copies the original rows back too); `merge_and_unload()` leaves the plain
Embedding holding W'. The saved adapter holds only T: key `<embedding name>.trainable_tokens_delta`.

Simplification: the indices of two adapters that are merged together must not overlap (PEFT's rule);
here only one adapter is active at a time, so overlapping indices are allowed between adapters.
"""
from __future__ import annotations

import numpy as np

from minifm.autograd import Function
from minifm.nn import Embedding, Module, Parameter
import minifm.functional as F
from minifm.peft.layer import AdapterDict, TunerLayer
from minifm.peft.targeting import name_matches


class RowOverride(Function):
    """weight with rows `indices` replaced by `rows`: weight (V, d), rows (k, d) -> (V, d).

    Backward: the gradient of `rows` is the output gradient's rows at `indices`; the gradient of
    `weight` is the output gradient with those rows zeroed (they no longer depend on weight).
    """

    @staticmethod
    def forward(ctx, weight, rows, indices=None):
        indices = np.asarray(indices, dtype=np.int64)  # (k,)
        if rows.shape != (indices.size, weight.shape[1]):
            raise ValueError(f"RowOverride needs rows of shape ({indices.size}, {weight.shape[1]}), got {rows.shape}")
        out = weight.copy()  # (V, d)
        out[indices] = rows
        ctx.indices = indices
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_weight = grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad.copy()  # (V, d)
            grad_weight[ctx.indices] = 0.0
        if ctx.needs_input_grad[1]:
            grad_rows = grad[ctx.indices]  # (k, d)
        return grad_weight, grad_rows


def check_token_indices(indices, num_embeddings: int, argument: str = "trainable_token_indices",
                        module_name: str = "the input embedding") -> list[int]:
    """The ids as a list of ints, or ValueError naming `argument` and the bad value."""
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(f"{argument} must be a list of token ids, got {indices!r}")
    ids = list(indices)
    if not ids:
        raise ValueError(f"{argument} must not be empty")
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{argument} must hold integer token ids, got {value!r} ({type(value).__name__})")
        if not 0 <= int(value) < num_embeddings:
            raise ValueError(f"{argument} holds token id {int(value)}, out of range for {module_name} with "
                             f"{num_embeddings} rows (valid ids 0 to {num_embeddings - 1})")
    duplicates = sorted({int(v) for v in ids if ids.count(v) > 1})
    if duplicates:
        raise ValueError(f"{argument} holds duplicate token ids {duplicates}")
    return [int(v) for v in ids]


class TrainableTokensEmbedding(TunerLayer):
    """An Embedding whose rows at each adapter's token indices are trainable (see the module docstring)."""

    adapter_container_names = ("trainable_tokens_delta",)

    def __init__(self, base_layer: Embedding):
        if not isinstance(base_layer, Embedding):
            raise TypeError(f"trainable tokens wrap an Embedding, got {type(base_layer).__name__}")
        super().__init__(base_layer)
        self.trainable_tokens_delta = AdapterDict()  # adapter name -> Parameter (k, d)
        self.token_indices = {}  # adapter name -> list of k ids

    @property
    def num_embeddings(self) -> int:
        return self.base_layer.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base_layer.weight.shape[1]

    def add_adapter(self, name: str, indices, module_name: str = "the input embedding") -> None:
        if name in self.trainable_tokens_delta:
            raise ValueError(f"adapter {name!r} already exists on this embedding")
        indices = check_token_indices(indices, self.num_embeddings, module_name=module_name)
        rows = self.base_layer.weight.data[indices].copy()  # (k, d): starts as the current rows
        self.trainable_tokens_delta[name] = Parameter(rows)
        self.token_indices[name] = indices

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        del self.token_indices[name]

    # ------------------------------------------------------------------ the effective table
    @property
    def weight(self):
        """W' (V, d): the base table with the active adapters' rows; the base table itself when merged
        or disabled. A fresh Tensor when unmerged: write to `base_layer.weight`, not to this."""
        weight = self.base_layer.weight
        if self.disable_adapters and self.merged:
            self.unmerge()  # a disabled adapter must not stay folded into the table
        if self.disable_adapters or self.merged:
            return weight
        for name in self.active_adapters:
            weight = RowOverride.apply(weight, self.trainable_tokens_delta[name],
                                       indices=self.token_indices[name])  # (V, d)
        return weight

    def forward(self, ids):
        return F.embedding(ids, self.weight)  # (..., d)

    # ------------------------------------------------------------------ merging
    def merge(self, adapter_names=None, requantize: bool = False, layer_name: str | None = None) -> None:
        """Write the active adapters' rows into base_layer.weight in place, keeping the original rows
        (the embedding is never quantized here: requantize and layer_name are accepted for the common call)."""
        names = list(self.active_adapters if adapter_names is None else adapter_names)
        weight = self.base_layer.weight.data  # (V, d)
        backup = list(self._merge_backup or [])
        for name in names:
            if name in self.merged_adapters:
                continue
            rows = self.trainable_tokens_delta[name].data  # (k, d)
            if not np.all(np.isfinite(rows)):
                raise FloatingPointError(f"merging adapter {name!r} produced non-finite weights")
            indices = self.token_indices[name]
            backup.append((indices, weight[indices].copy()))
            weight[indices] = rows  # in place: optimizers keep pointing at the same array
            self.merged_adapters.append(name)
        self._merge_backup = backup or None

    def unmerge(self) -> None:
        """Copy the original rows back (in reverse merge order), so W is restored bit for bit."""
        if not self.merged:
            return
        weight = self.base_layer.weight.data
        for indices, rows in reversed(self._merge_backup):
            weight[indices] = rows
        self._merge_backup = None
        self.merged_adapters.clear()

    def extra_repr(self) -> str:
        sizes = {name: len(ids) for name, ids in self.token_indices.items()}
        return (f"{self.num_embeddings}, {self.embedding_dim}, trainable rows={sizes}, "
                f"active={self.active_adapters}")


def resolve_token_targets(model: Module, trainable_token_indices, input_embedding: Embedding) -> dict[str, list]:
    """{dotted module name: token ids} for `trainable_token_indices` (a list -> the input embedding).

    Dict keys are matched like target_modules (equal, or ending in "." + key); each must select
    exactly Embedding modules (or already wrapped ones), else ValueError naming the key.
    """
    if isinstance(trainable_token_indices, dict):
        resolved = {}
        for key, indices in trainable_token_indices.items():
            found = [name for name, module in model.named_modules()
                     if name and not name.endswith("base_layer") and name_matches(name, [key])
                     and isinstance(module, (Embedding, TrainableTokensEmbedding))]
            if not found:
                names = sorted(n for n, m in model.named_modules() if isinstance(m, Embedding) and n)
                raise ValueError(f"trainable_token_indices key {key!r} matched no Embedding; the model's "
                                 f"embeddings are {names}")
            for name in found:
                resolved[name] = indices
        return resolved
    for name, module in model.named_modules():
        if module is input_embedding:
            if name.endswith("base_layer"):  # already wrapped by an earlier adapter
                name = name[: -len(".base_layer")]
            return {name: trainable_token_indices}
    raise ValueError(f"could not find the input embedding of {type(model).__name__} inside the model")


def trainable_tokens_parameter_count(num_indices: int, embedding_dim: int) -> int:
    """Closed form: one trainable (d,) row per selected token, shared with a tied output head."""
    return num_indices * embedding_dim


__all__ = ["RowOverride", "TrainableTokensEmbedding", "check_token_indices", "resolve_token_targets",
           "trainable_tokens_parameter_count"]
