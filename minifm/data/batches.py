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
    sft_example         chat template -> (input_ids, labels), labels only on assistant tokens
    sft_batches         right-padded (pad id / -100) batches, or packed rows of max_length
    preference_batch    chosen and rejected sequences padded to one length, for DPO / reward models
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


# ------------------------------------------------------------------ supervised fine-tuning
def default_chat_template() -> Callable:
    from minifm.tokenizer.chat import apply_chat_template
    return apply_chat_template


def example_to_messages(example) -> list[dict]:
    """TRL's conversational ("messages") or prompt/completion (strings or message lists) -> messages."""
    if isinstance(example, dict) and "messages" in example:
        return list(example["messages"])
    if isinstance(example, dict) and "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        prompt_messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        completion_messages = ([{"role": "assistant", "content": completion}] if isinstance(completion, str)
                               else list(completion))
        return prompt_messages + completion_messages
    raise ValueError(f"example must be a dict with 'messages' or 'prompt'/'completion', got {example!r:.100}")


def sft_example(example, tokenizer, max_length: int, chat_template: Callable | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels), 1-D int64 of equal length <= max_length, PRE-SHIFTED:
    labels[t] = token t+1 of the templated conversation if that token belongs to an assistant
    turn (per the template's assistant mask), else -100. Longer conversations are truncated
    on the right to max_length + 1 tokens before shifting."""
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"sft_example: max_length must be an int >= 1, got {max_length!r}")
    template = chat_template or default_chat_template()
    ids, assistant_mask = template(example_to_messages(example), tokenizer)
    if len(ids) != len(assistant_mask):
        raise ValueError(f"sft_example: template returned {len(ids)} ids but {len(assistant_mask)} mask entries")
    ids = np.asarray(ids, dtype=np.int64)[: max_length + 1]
    mask = np.asarray(assistant_mask, dtype=bool)[: max_length + 1]
    if ids.size < 2:
        raise ValueError(f"sft_example: the templated example has {ids.size} tokens; need at least 2")
    return ids[:-1].copy(), np.where(mask[1:], ids[1:], IGNORE_INDEX).astype(np.int64)


def pad_id_of(tokenizer, pad_id: int | None) -> int:
    if pad_id is not None:
        return int(pad_id)
    special = getattr(tokenizer, "special_tokens", {})
    if "<|pad|>" not in special:
        raise ValueError("pad_id was not given and the tokenizer has no '<|pad|>' special token")
    return int(special["<|pad|>"])


def pad_right(sequences: Sequence[np.ndarray], value: int, length: int | None = None) -> np.ndarray:
    length = max(s.size for s in sequences) if length is None else length
    out = np.full((len(sequences), length), value, dtype=np.int64)   # (B, T)
    for row, sequence in enumerate(sequences):
        out[row, :sequence.size] = sequence
    return out


def sft_batches(examples: Sequence, tokenizer, max_length: int, batch_size: int, rng: np.random.Generator,
                pad_id: int | None = None, packing: bool = False, shuffle: bool = True,
                chat_template: Callable | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (input_ids (B, T), labels (B, T)), pre-shifted like sft_example.

    packing=False: each row is one example, right-padded with pad_id (labels -100) to the
    longest in the batch. packing=True: the (shuffled) examples' (input_ids, labels) are
    concatenated and cut into rows of exactly max_length (the last row padded); attention then
    crosses example boundaries, the usual packing simplification.
    """
    check_generator(rng, "sft_batches")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"sft_batches: batch_size must be an int >= 1, got {batch_size!r}")
    pad = pad_id_of(tokenizer, pad_id)
    encoded = [sft_example(e, tokenizer, max_length, chat_template) for e in examples]
    order = rng.permutation(len(encoded)) if shuffle else np.arange(len(encoded))
    if packing:
        if not encoded:
            return
        stream_ids = np.concatenate([encoded[i][0] for i in order])
        stream_labels = np.concatenate([encoded[i][1] for i in order])
        rows = [(stream_ids[s:s + max_length], stream_labels[s:s + max_length])
                for s in range(0, stream_ids.size, max_length)]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            yield (pad_right([r[0] for r in chunk], pad, max_length),
                   pad_right([r[1] for r in chunk], IGNORE_INDEX, max_length))
        return
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start:start + batch_size]]
        yield pad_right([c[0] for c in chunk], pad), pad_right([c[1] for c in chunk], IGNORE_INDEX)


# ------------------------------------------------------------------ preference data
def preference_batch(triples: Sequence[dict], tokenizer, max_length: int, pad_id: int | None = None,
                     chat_template: Callable | None = None) -> dict[str, np.ndarray]:
    """{"chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels",
        "chosen_attention_mask", "rejected_attention_mask"}: all (B, T) int64 with one common T
    (so chosen and rejected can be stacked into one forward pass). Each sequence is the prompt
    plus one response through the chat template, pre-shifted like sft_example (labels only on
    the response); padding is on the right (ids = pad id, labels = -100, attention mask = 0)."""
    pad = pad_id_of(tokenizer, pad_id)
    chosen, rejected = [], []
    for i, triple in enumerate(triples):
        for field in ("prompt", "chosen", "rejected"):
            if not isinstance(triple, dict) or field not in triple:
                raise ValueError(f"preference_batch: triples[{i}] is missing field {field!r}")
        chosen.append(sft_example({"prompt": triple["prompt"], "completion": triple["chosen"]}, tokenizer,
                                  max_length, chat_template))
        rejected.append(sft_example({"prompt": triple["prompt"], "completion": triple["rejected"]}, tokenizer,
                                    max_length, chat_template))
    if not chosen:
        raise ValueError("preference_batch: triples is empty")
    length = max(s[0].size for s in chosen + rejected)
    out = {}
    for name, pairs in (("chosen", chosen), ("rejected", rejected)):
        out[f"{name}_ids"] = pad_right([p[0] for p in pairs], pad, length)
        out[f"{name}_labels"] = pad_right([p[1] for p in pairs], IGNORE_INDEX, length)
        out[f"{name}_attention_mask"] = pad_right([np.ones(p[0].size, np.int64) for p in pairs], 0, length)
    return out
