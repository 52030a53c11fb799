"""Sentence embeddings from a BERT encoder, as sentence-transformers computes them.

A sentence-transformers model directory describes a pipeline in `modules.json`, one module per step:

    Transformer  the encoder (a BertModel checkpoint in the directory itself) and its tokenizer;
                 sentence_bert_config.json sets max_seq_length (longer inputs are truncated)
    Pooling      1_Pooling/config.json: how token vectors become one vector per sentence:
                   mean      sum of the real tokens' hidden states / their count (padding excluded)
                   cls       the first token's hidden state
                   max       the element-wise maximum over the real tokens
                   mean_sqrt_len  the sum divided by sqrt(count)
    Normalize    x / max(||x||_2, 1e-12), so that a dot product is the cosine similarity

SentenceEncoder.from_pretrained(path) follows that file; `encode(sentences)` tokenizes in batches
(padding on the right, attention mask 0 on padding), runs the encoder without recording a graph,
pools and normalises. all-MiniLM-L6-v2 (6 layers, width 384) is mean pooling + normalisation.

Simplifications: only the Transformer, Pooling and Normalize modules (a Dense projection or any other
module is an error naming it); one pooling mode at a time; no prompts or task instructions.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.checkpoint import read_json_file
from minifm.models.bert import BERT
from minifm.pretrained.registry import resolve_model_path
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
MODULE_TYPES = {
    "sentence_transformers.models.Transformer": "transformer",
    "sentence_transformers.models.Pooling": "pooling",
    "sentence_transformers.models.Normalize": "normalize",
}


def _pooling_mode(config: dict, path: Path) -> str:
    """The one pooling mode a 1_Pooling/config.json switches on."""
    chosen = [mode for mode in POOLING_MODES if config.get(f"pooling_mode_{mode}_tokens" if mode != "cls"
                                                          else "pooling_mode_cls_token")]
    if len(chosen) != 1:
        raise ValueError(f"{str(path)!r}: exactly one pooling mode must be on (supported: {list(POOLING_MODES)}), "
                         f"got {chosen or 'none'}")
    return chosen[0]


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """hidden (B, T, d), mask (B, T) of 0/1 -> sentence vectors (B, d) by `mode` (see the module docstring)."""
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode must be one of {list(POOLING_MODES)}, got {mode!r}")
    if mode == "cls":
        return hidden[:, 0]
    weights = mask[:, :, None].astype(hidden.dtype)  # (B, T, 1)
    if mode == "max":
        return np.where(weights > 0, hidden, -1e9).max(axis=1)  # padding never wins (sentence-transformers' -1e9)
    total = (hidden * weights).sum(axis=1)  # (B, d)
    count = np.maximum(weights.sum(axis=1), 1e-9)  # (B, 1)
    return total / (np.sqrt(count) if mode == "mean_sqrt_len" else count)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (at least 1e-12, as torch.nn.functional.normalize)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (B, 1)
    return vectors / np.maximum(norms, 1e-12)


class SentenceEncoder:
    """A BERT encoder, its tokenizer, a pooling mode and optional normalisation (see the module docstring)."""

    def __init__(self, model: BERT, tokenizer, pooling: str = "mean", normalize: bool = True,
                 max_seq_length: int | None = None):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {list(POOLING_MODES)}, got {pooling!r}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize = pooling, bool(normalize)
        self.max_seq_length = min(max_seq_length or model.config.block_size, model.config.block_size)
        model.eval()

    @property
    def dimension(self) -> int:
        return self.model.config.n_embd

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "SentenceEncoder":
        """Load a sentence-transformers directory (or the short name all-minilm-l6-v2) by its modules.json."""
        directory = resolve_model_path(path)
        modules = read_json_file(directory / "modules.json", expected=list)
        kinds = {}
        for entry in modules:
            kind = MODULE_TYPES.get(entry.get("type"))
            if kind is None:
                raise ValueError(f"modules.json: module type {entry.get('type')!r} is not supported by minifm "
                                 f"(supported: {list(MODULE_TYPES)})")
            kinds[kind] = directory / entry.get("path", "")
        if "transformer" not in kinds:
            raise ValueError(f"modules.json in {str(directory)!r} has no sentence_transformers.models.Transformer")
        pooling = "cls"
        if "pooling" in kinds:
            pooling_file = kinds["pooling"] / "config.json"
            pooling = _pooling_mode(read_json_file(pooling_file), pooling_file)
        settings_file = kinds["transformer"] / "sentence_bert_config.json"
        settings = read_json_file(settings_file) if settings_file.exists() else {}
        return cls(BERT.from_pretrained(kinds["transformer"]), tokenizer_from_pretrained(kinds["transformer"]),
                   pooling=pooling, normalize="normalize" in kinds, max_seq_length=settings.get("max_seq_length"))

    def _batch(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (B, T) padded on the right and the attention mask (B, T), each row cut to max_seq_length."""
        rows = []
        for ids in self.tokenizer.encode_batch(sentences, add_special_tokens=True):
            if len(ids) > self.max_seq_length:
                ids = ids[:self.max_seq_length - 1] + ids[-1:]  # keep the closing [SEP], as the HF truncation does
            rows.append(ids)
        width = max(len(ids) for ids in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
        for row, tokens in enumerate(rows):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        return ids, mask

    def encode(self, sentences, batch_size: int = 32, normalize_embeddings: bool | None = None) -> np.ndarray:
        """Sentence vectors (n, d) float32 for a list of strings (a single string gives (d,))."""
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"sentences[{index}] must be a str, got {type(sentence).__name__}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        normalize = self.normalize if normalize_embeddings is None else normalize_embeddings
        vectors = np.zeros((len(sentences), self.dimension), dtype=np.float32)  # (n, d)
        with no_grad():
            for start in range(0, len(sentences), batch_size):
                ids, mask = self._batch(sentences[start:start + batch_size])
                hidden = self.model(ids, attention_mask=mask).data  # (B, T, d)
                pooled = pool(hidden, mask, self.pooling)  # (B, d)
                vectors[start:start + len(ids)] = l2_normalise(pooled) if normalize else pooled
        return vectors[0] if single else vectors


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The (n, m) matrix of cosine similarities between the rows of a (n, d) and b (m, d)."""
    return l2_normalise(np.atleast_2d(a)) @ l2_normalise(np.atleast_2d(b)).T
