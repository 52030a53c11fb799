"""Batch builders for every training stage; seeded by a NumPy Generator, int64 arrays out.

Conventions (one for the whole package):
* Ignored label = IGNORE_INDEX = -100, as in PyTorch/Hugging Face.
* Causal-LM arrays are PRE-SHIFTED: `targets[b, t]` / `labels[b, t]` is the token that should
  follow `input_ids[b, :t+1]`, so the loss is simply cross_entropy(model(input_ids), targets)
  with no slicing. (Hugging Face instead passes unshifted labels and shifts inside the model.)

Builders:
    pack_causal_lm      documents + eos concatenated, cut into windows of block_size + 1 tokens
                        with stride block_size (consecutive windows share one token so every
                        token after the first is a target exactly once); the tail is dropped
    causal_lm_batches   shuffled (input_ids, targets) batches from packed windows
    mask_for_mlm        BERT: each non-special token selected with p = 0.15; of those 80% ->
                        mask_id, 10% -> a random non-special token, 10% unchanged; labels hold
                        the original token at selected positions (deviation: Hugging Face may
                        also draw special ids as random replacements, we never do)
    span_corruption     T5: round(L * noise_density) noise tokens in round(noise / mean_span)
                        spans, span lengths a uniformly random composition; the encoder sees
                        kept tokens with each noise span replaced by one sentinel, the decoder
                        target is sentinel_i followed by span i, for every span (no EOS added)
and for post-training (the rows come from minifm.data.conversations):
    pad_right           rows of ids -> (ids, attention_mask), right-padded
    collate_sft         (input_ids, labels) examples -> shifted (inputs, targets, mask) rows,
                        one example per row (padded to max_length, or to the batch's longest)
                        or packed end to end
    shuffled_batches    endless epochs of a list in a fresh random order: the batches(rng) that
                        the SFT, reward-model and DPO stages hand to the shared loop
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

IGNORE_INDEX = -100


def check_generator(rng, where: str) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


def as_token_array(tokens, where: str, vocab_size: int | None = None) -> np.ndarray:
    array = np.asarray(tokens)
    if array.size == 0:
        return array.astype(np.int64).reshape(array.shape)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: token ids must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"{where}: token ids must be >= 0, got {array.min()}")
    if vocab_size is not None and array.max() >= vocab_size:
        raise ValueError(f"{where}: token id {array.max()} >= vocab_size {vocab_size}")
    return array


# ------------------------------------------------------------------ causal language modelling
def pack_causal_lm(token_lists: Sequence[Sequence[int]], block_size: int, eos_id: int) -> np.ndarray:
    """(n_windows, block_size + 1) int64: documents joined by eos, windows with stride block_size."""
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"pack_causal_lm: block_size must be an int >= 1, got {block_size!r}")
    if not isinstance(eos_id, (int, np.integer)) or eos_id < 0:
        raise ValueError(f"pack_causal_lm: eos_id must be an int >= 0, got {eos_id!r}")
    pieces = []
    for i, tokens in enumerate(token_lists):
        pieces.append(as_token_array(tokens, f"pack_causal_lm: token_lists[{i}]").ravel())
        pieces.append(np.array([eos_id], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)   # (L,)
    n_windows = (stream.size - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"pack_causal_lm: {stream.size} tokens (with separators) are fewer than "
                         f"block_size + 1 = {block_size + 1}")
    starts = np.arange(n_windows)[:, None] * block_size            # (n_windows, 1)
    return stream[starts + np.arange(block_size + 1)[None, :]]     # (n_windows, block_size + 1)


def causal_lm_batches(packed: np.ndarray, batch_size: int, rng: np.random.Generator, shuffle: bool = True,
                      drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (input_ids (B, T), targets (B, T)) from packed windows (n, T + 1)."""
    check_generator(rng, "causal_lm_batches")
    packed = np.asarray(packed)
    if packed.ndim != 2 or packed.shape[1] < 2:
        raise ValueError(f"causal_lm_batches: packed must have shape (n_windows, block_size + 1), got {packed.shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"causal_lm_batches: batch_size must be an int >= 1, got {batch_size!r}")
    order = rng.permutation(packed.shape[0]) if shuffle else np.arange(packed.shape[0])
    for start in range(0, order.size, batch_size):
        rows = order[start:start + batch_size]
        if drop_last and rows.size < batch_size:
            return
        windows = packed[rows].astype(np.int64)                    # (B, T + 1)
        yield windows[:, :-1].copy(), windows[:, 1:].copy()


# ------------------------------------------------------------------ BERT masked language modelling
def mask_for_mlm(input_ids, rng: np.random.Generator, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                 mlm_probability: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT 80/10/10 masking; returns (inputs, labels) of the input's shape, labels -100 where unselected."""
    check_generator(rng, "mask_for_mlm")
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mask_for_mlm: mlm_probability must be in [0, 1], got {mlm_probability}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_for_mlm: mask_id {mask_id} outside [0, vocab_size={vocab_size})")
    ids = as_token_array(input_ids, "mask_for_mlm: input_ids", vocab_size)
    specials = np.unique(np.asarray(list(special_ids) + [mask_id], dtype=np.int64))
    replaceable = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), specials)
    if replaceable.size == 0:
        raise ValueError("mask_for_mlm: every id is special; no random replacement token exists")
    selected = (rng.random(ids.shape) < mlm_probability) & ~np.isin(ids, specials)
    action = rng.random(ids.shape)
    random_tokens = replaceable[rng.integers(0, replaceable.size, size=ids.shape)]
    inputs = ids.copy()
    inputs[selected & (action < 0.8)] = mask_id
    use_random = selected & (action >= 0.8) & (action < 0.9)
    inputs[use_random] = random_tokens[use_random]
    labels = np.where(selected, ids, IGNORE_INDEX).astype(np.int64)
    return inputs, labels


# ------------------------------------------------------------------ T5 span corruption
def random_composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive integers summing to `total`, uniformly among all such compositions."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.zeros(0, int)
    return np.diff(np.concatenate(([0], cuts, [total]))).astype(np.int64)


def span_corruption(token_ids, rng: np.random.Generator, sentinel_ids: Sequence[int], noise_density: float = 0.15,
                    mean_span_length: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """T5 span corruption of one sequence -> (encoder_ids, decoder_target_ids), 1-D int64."""
    check_generator(rng, "span_corruption")
    tokens = as_token_array(token_ids, "span_corruption: token_ids").ravel()
    length = tokens.size
    if length < 2:
        raise ValueError(f"span_corruption: need at least 2 tokens, got {length}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"span_corruption: noise_density must be in (0, 1), got {noise_density}")
    if mean_span_length < 1.0:
        raise ValueError(f"span_corruption: mean_span_length must be >= 1, got {mean_span_length}")
    sentinels = np.asarray(list(sentinel_ids), dtype=np.int64)
    if np.isin(tokens, sentinels).any():
        raise ValueError("span_corruption: token_ids already contain a sentinel id")
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    if num_spans > sentinels.size:
        raise ValueError(f"span_corruption: {num_spans} spans need {num_spans} sentinel ids, got {sentinels.size}")
    noise_lengths = random_composition(num_noise, num_spans, rng)
    keep_lengths = random_composition(length - num_noise, num_spans, rng)
    encoder, decoder = [], []
    position = 0
    for span in range(num_spans):            # kept run, then noise span (T5 starts with kept tokens)
        encoder.append(tokens[position:position + keep_lengths[span]])
        position += keep_lengths[span]
        encoder.append(sentinels[span:span + 1])
        decoder.append(sentinels[span:span + 1])
        decoder.append(tokens[position:position + noise_lengths[span]])
        position += noise_lengths[span]
    return np.concatenate(encoder), np.concatenate(decoder)


def fill_sentinels(encoder_ids, decoder_ids, sentinel_ids: Sequence[int]) -> np.ndarray:
    """Inverse of span_corruption: put each decoder span back in place of its sentinel."""
    sentinel_set = {int(s) for s in sentinel_ids}
    spans: dict[int, list[int]] = {}
    current = None
    for token in np.asarray(decoder_ids).tolist():
        if token in sentinel_set:
            current = token
            spans[current] = []
        elif current is None:
            raise ValueError("fill_sentinels: decoder_ids must start with a sentinel")
        else:
            spans[current].append(token)
    out: list[int] = []
    for token in np.asarray(encoder_ids).tolist():
        out.extend(spans[token] if token in sentinel_set else [token])
    return np.asarray(out, dtype=np.int64)


# ------------------------------------------------------------------ post-training rows
def pad_right(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), each (N, length) int64: the rows left-aligned, pad_id / 0 after them.
    `length` defaults to the longest row."""
    if not rows:
        raise ValueError("pad_right: no rows to pad")
    width = max(len(row) for row in rows) if length is None else length
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (N, T)
    mask = np.zeros((len(rows), width), dtype=np.int64)  # (N, T)
    for index, row in enumerate(rows):
        ids[index, :len(row)], mask[index, :len(row)] = row, 1
    return ids, mask


def collate_sft(examples: Sequence[tuple[np.ndarray, np.ndarray]], max_length: int, pad_id: int,
                packing: bool = False, pad_to_longest: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (inputs, targets, attention_mask), each (N, max_length), targets shifted by one, from
    (input_ids, labels) pairs (minifm.data.conversations.sft_example).

    Without packing each example is one row, right-padded (targets -100 on padding) and truncated
    to max_length + 1 tokens; with pad_to_longest the rows are only as wide as the longest example
    of the batch needs (N, min(longest, max_length + 1) - 1), so short rows do not pay for a long
    max_length. With packing examples are laid end to end and cut into rows.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    width = max_length + 1
    if pad_to_longest and not packing:
        width = max(2, min(width, max(ids.size for ids, _ in examples)))
    if packing:
        # row r holds stream tokens [r L, r L + L + 1): consecutive rows overlap by one token, so
        # every token but the very first is a target exactly once
        all_ids = np.concatenate([ids for ids, _ in examples])
        all_labels = np.concatenate([labels for _, labels in examples])
        n_rows = max(1, int(np.ceil((all_ids.size - 1) / max_length)))
        stream = n_rows * max_length + 1
        ids = np.full(stream, pad_id, dtype=np.int64)
        labels = np.full(stream, IGNORE_INDEX, dtype=np.int64)
        valid = np.zeros(stream, dtype=np.int64)
        ids[:all_ids.size], labels[:all_labels.size], valid[:all_ids.size] = all_ids, all_labels, 1
        starts = np.arange(n_rows)[:, None] * max_length + np.arange(width)[None, :]  # (N, L+1)
        ids, labels, mask = ids[starts], labels[starts], valid[starts]
    else:
        ids = np.full((len(examples), width), pad_id, dtype=np.int64)  # (N, L+1)
        labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)  # (N, L+1)
        mask = np.zeros((len(examples), width), dtype=np.int64)  # (N, L+1)
        for row, (example_ids, example_labels) in enumerate(examples):
            length = min(example_ids.size, width)
            ids[row, :length], labels[row, :length], mask[row, :length] = (example_ids[:length],
                                                                          example_labels[:length], 1)
    return ids[:, :-1], labels[:, 1:], mask[:, :-1]


def shuffled_batches(items: list, batch_size: int) -> Callable[[np.random.Generator], Iterator[list]]:
    """batches(rng) for the shared training loop: endless epochs of `items`, each in a fresh random
    order drawn from rng, in full batches of min(batch_size, len(items)) (a short last batch is dropped)."""
    if not items:
        raise ValueError("no training examples")
    size = min(batch_size, len(items))

    def batches(rng):
        while True:
            order = rng.permutation(len(items))
            for start in range(0, len(order) - size + 1, size):
                yield [items[i] for i in order[start:start + size]]

    return batches
