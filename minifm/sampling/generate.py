"""Autoregressive generation with a KV cache: greedy, sampling, beam search, stop conditions.

`generate(model, input_ids, max_new_tokens, ...)` follows Hugging Face transformers' `generate`:
the same argument names and defaults (`do_sample=False`, `temperature=1.0`, `top_k=50`,
`top_p=1.0`, `min_p=None`, `typical_p=1.0`, `repetition_penalty=1.0`, `num_beams=1`,
`length_penalty=1.0`, `num_return_sequences=1`), the same processor order (repetition penalty,
then temperature, top-k, top-p, min-p, typical-p: see minifm.sampling.processors) and the same
split between *processors* and *warpers*: greedy and beam search apply only the repetition
penalty, sampling applies everything.

How one step works (decoder-only model):
  1. the prompt (B, T0) goes through the model once, filling the KV cache (`model.make_cache`);
  2. each new token goes through the model alone (B, 1): its keys/values are appended to the cache
     and it attends to everything before it, so a step costs O(1) tokens of compute, not O(T);
  3. the last position's logits are processed and a token is chosen (argmax or a seeded draw).
Prompts of different lengths (a list of lists) are left-padded and an attention mask marks the
padding; the model derives positions from the mask, so a padded prompt continues exactly like the
same prompt alone. An encoder-decoder model (T5) is encoded once and its decoder is stepped the
same way, starting from `decoder_start_token_id` (the pad id by default, as in T5).

Simplifications / deviations (documented):
  * The result is a NumPy int64 array of sequences (prompt + new tokens), or a `GenerateOutput`
    when `return_dict_in_generate`, `output_scores` or `return_logprobs` is set.
  * `logprobs` are log-probabilities of the chosen tokens under the *unprocessed* model
    distribution (temperature 1, no truncation): the quantity that "mean log-likelihood under the
    model" needs. `scores` (output_scores) are the processed logits, as in transformers.
  * The repetition penalty sees the whole row, left padding included (transformers does the same).
  * `stop` accepts strings (needs `tokenizer=`) and token-id sequences; a row stops once its new
    tokens contain a stop string / end with a stop sequence; the stop text is kept in the output
    (like transformers' `stop_strings`). Finished rows are filled with `pad_token_id` (or
    `eos_token_id` when no pad id is given, or 0).
  * `best_of=N` with `reward_model` (a callable `(sequences, attention_mask) -> rewards (n,)`)
    samples N completions per prompt and keeps the highest-reward one(s): best-of-N sampling.
  * `logits_processor=[...]`: callables `(input_ids, scores) -> scores` (transformers' convention),
    run after the repetition penalty and before the warpers, as transformers places them
    (minifm.sampling.logits_processor); greedy, sampling and beam search alike. A processor with an
    `eos_token_id` attribute (minifm's constraints) ends its text with that token, so generate's
    `eos_token_id` must include it (else ValueError): the row then stops there.
"""
from __future__ import annotations

import inspect

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor, data_of
from minifm.kernels.softmax import log_softmax
from minifm.sampling.beam import beam_search
from minifm.sampling.logits_processor import check_logits_processors
from minifm.sampling.output import GenerateOutput, assemble_output
from minifm.sampling.processors import greedy, process_logits, sample_from_uniforms


# ---------------------------------------------------------------------------------------- inputs
def prepare_prompts(input_ids, attention_mask=None, pad_token_id: int = 0):
    """Turn prompts into a left-padded (B, T) int64 array and its (B, T) 0/1 attention mask.

    `input_ids` is a list of token-id lists (any lengths), a single list of ints (batch of one), or
    a 2-D array / Tensor (with an optional `attention_mask` of the same shape).
    """
    input_ids, attention_mask = data_of(input_ids), data_of(attention_mask)
    if isinstance(input_ids, np.ndarray):
        ids = input_ids
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {input_ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if attention_mask is None:
            mask = np.ones_like(ids)
        else:
            mask = np.asarray(attention_mask)
            if mask.ndim == 1:
                mask = mask[None, :]
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask shape {mask.shape} must equal input_ids shape {ids.shape}")
            mask = (mask != 0).astype(np.int64)
    else:
        rows = list(input_ids)
        if rows and not isinstance(rows[0], (list, tuple, np.ndarray)):
            rows = [rows]  # one prompt given as a flat list
        if not rows:
            raise ValueError("input_ids is empty: give at least one prompt")
        if attention_mask is not None:
            raise ValueError("attention_mask is built automatically for a list of prompts; pass an array to give one")
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            if len(row):
                ids[i, width - len(row):] = np.asarray(row, dtype=np.int64)
                mask[i, width - len(row):] = 1
    empty_rows = np.flatnonzero(mask.sum(axis=1) == 0)
    if ids.shape[1] == 0 or empty_rows.size:
        raise ValueError(f"prompt rows {empty_rows.tolist() or 'all'} are empty: every prompt needs at least one "
                         "token (start it with a begin/end-of-text token)")
    return ids, mask


def _normalise_stop(stop, tokenizer):
    """Split `stop` into a list of strings and a list of token-id tuples."""
    if stop is None:
        return [], []
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, (tuple, list)) and stop and all(isinstance(s, (int, np.integer)) for s in stop):
        stop = [stop]  # a single token-id sequence
    strings, sequences = [], []
    for item in stop:
        if isinstance(item, str):
            if not item:
                raise ValueError("stop strings must be non-empty")
            strings.append(item)
        else:
            seq = tuple(int(t) for t in item)
            if not seq:
                raise ValueError("stop token sequences must be non-empty")
            sequences.append(seq)
    if strings and tokenizer is None:
        raise ValueError(f"stop strings {strings} need tokenizer= to decode the generated tokens")
    return strings, sequences


class StopChecker:
    """Decides whether a row's generated tokens end it: eos id, a stop token sequence, a stop string."""

    def __init__(self, eos_token_id=None, stop=None, tokenizer=None):
        if eos_token_id is None:
            self.eos_ids = set()
        elif isinstance(eos_token_id, (int, np.integer)):
            self.eos_ids = {int(eos_token_id)}
        else:
            self.eos_ids = {int(t) for t in eos_token_id}
        self.strings, self.sequences = _normalise_stop(stop, tokenizer)
        self.tokenizer = tokenizer

    @property
    def active(self) -> bool:
        return bool(self.eos_ids or self.strings or self.sequences)

    def __call__(self, new_tokens: list[int]) -> bool:
        """True when the list of new tokens (the last one just chosen) finishes the row."""
        if not new_tokens:
            return False
        if new_tokens[-1] in self.eos_ids:
            return True
        for seq in self.sequences:
            if len(new_tokens) >= len(seq) and tuple(new_tokens[-len(seq):]) == seq:
                return True
        if self.strings:
            text = self.tokenizer.decode(new_tokens)
            return any(s in text for s in self.strings)
        return False


# ---------------------------------------------------------------------------------------- steppers
class DecoderStepper:
    """Runs a decoder-only model one step at a time, with a KV cache (or recomputing, use_cache=False).

    start(ids, mask) -> logits (B, V) of the last position; step(tokens) -> logits (B, V) after
    appending one token per row; reorder(index) keeps only / duplicates rows (beam search).
    """

    def __init__(self, model, max_length: int, use_cache: bool = True):
        self.model = model
        self.max_length = max_length
        self.use_cache = use_cache and hasattr(model, "make_cache")
        self.cache = None
        # the prompt's forward needs only the last position's logits: ask for just those when the model
        # takes transformers' logits_to_keep (minifm's GPT does; wrappers without it compute them all)
        forward = getattr(model, "forward", None)
        takes_option = forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
        self.last_only = {"logits_to_keep": 1} if takes_option else {}

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.ids, self.mask = ids, mask  # (B, T0)
        self.prompt_ids, self.prompt_mask = ids, mask  # what the returned sequences start with
        if self.use_cache:
            self.cache = self.model.make_cache(ids.shape[0], self.max_length)
            logits = self.model(ids, attention_mask=mask, cache=self.cache, **self.last_only)  # (B, 1 or T0, V)
        else:
            logits = self.model(ids, attention_mask=mask, **self.last_only)  # (B, 1 or T0, V)
        return np.asarray(logits.data[:, -1, :])  # (B, V)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        column = tokens.astype(np.int64)[:, None]  # (B, 1)
        self.ids = np.concatenate([self.ids, column], axis=1)  # (B, T+1)
        self.mask = np.concatenate([self.mask, np.ones_like(column)], axis=1)  # (B, T+1)
        if self.use_cache:
            logits = self.model(column, attention_mask=self.mask, cache=self.cache)  # (B, 1, V)
        else:
            logits = self.model(self.ids, attention_mask=self.mask, **self.last_only)  # (B, 1 or T+1, V)
        return np.asarray(logits.data[:, -1, :])  # (B, V)

    def reorder(self, index: np.ndarray) -> None:
        self.ids, self.mask = self.ids[index], self.mask[index]
        if self.cache is not None:
            self.cache.reorder(index)


class EncoderDecoderStepper:
    """Encodes the prompt once, then steps the decoder from `decoder_start_token_id` (T5-style)."""

    def __init__(self, model, max_length: int, decoder_start_token_id: int, use_cache: bool = True):
        self.model = model
        self.max_length = max_length
        self.start_id = int(decoder_start_token_id)
        self.use_cache = use_cache and hasattr(model, "make_cache")
        self.cache = None

    def start(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.encoder_hidden = self.model.encode(ids, attention_mask=mask)  # (B, T0, d)
        self.encoder_mask = mask  # (B, T0)
        self.ids = np.full((ids.shape[0], 1), self.start_id, dtype=np.int64)  # (B, 1)
        self.prompt_ids, self.prompt_mask = self.ids, np.ones_like(self.ids)  # outputs are decoder sequences
        if self.use_cache:
            self.cache = self.model.make_cache(ids.shape[0], self.max_length)
        return self._decode(self.ids)

    def _decode(self, new_ids: np.ndarray) -> np.ndarray:
        if self.use_cache:
            logits = self.model.decode(new_ids, self.encoder_hidden, encoder_mask=self.encoder_mask,
                                       cache=self.cache)  # (B, t, V)
        else:
            logits = self.model.decode(self.ids, self.encoder_hidden, encoder_mask=self.encoder_mask)  # (B, T, V)
        return np.asarray(logits.data[:, -1, :])  # (B, V)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        column = tokens.astype(np.int64)[:, None]  # (B, 1)
        self.ids = np.concatenate([self.ids, column], axis=1)  # (B, T+1)
        return self._decode(column)

    def reorder(self, index: np.ndarray) -> None:
        self.ids = self.ids[index]
        self.encoder_mask = self.encoder_mask[index]
        self.encoder_hidden = Tensor(self.encoder_hidden.data[index])
        if self.cache is not None:
            self.cache.reorder(index)


def is_encoder_decoder(model) -> bool:
    return hasattr(model, "encode") and hasattr(model, "decode")


def _block_size(model):
    config = getattr(model, "config", None)
    return getattr(config, "block_size", None)


def _make_rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _check_options(max_new_tokens, do_sample, temperature, top_k, top_p, min_p, typical_p,
                   repetition_penalty, num_beams, num_return_sequences, best_of):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be an int >= 1, got {num_return_sequences!r}")
    if num_beams > 1 and do_sample:
        raise ValueError("beam sampling (num_beams > 1 with do_sample=True) is not implemented; "
                         "use num_beams=1 to sample or do_sample=False for beam search")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences={num_return_sequences} cannot exceed num_beams={num_beams}")
    if num_beams == 1 and not do_sample and num_return_sequences > 1 and best_of is None:
        raise ValueError("greedy search returns one sequence per prompt: set do_sample=True or num_beams > 1 "
                         f"for num_return_sequences={num_return_sequences}")
    if do_sample and (temperature is None or not temperature > 0):
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r} (use do_sample=False for greedy)")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if not 0.0 < typical_p <= 1.0:
        raise ValueError(f"typical_p must be in (0, 1], got {typical_p}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")


# ---------------------------------------------------------------------------------------- generate
def generate(model, input_ids, max_new_tokens: int = 20, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0, min_p: float | None = None,
             typical_p: float = 1.0, repetition_penalty: float = 1.0, num_beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool = False, num_return_sequences: int = 1,
             stop=None, tokenizer=None, eos_token_id=None, pad_token_id: int | None = None,
             decoder_start_token_id: int | None = None, attention_mask=None, seed=None,
             use_cache: bool = True, output_scores: bool = False, return_logprobs: bool = False,
             return_dict_in_generate: bool = False, best_of: int | None = None, reward_model=None, streamer=None,
             logits_processor=None):
    """Continue each prompt by up to `max_new_tokens` tokens (see the module docstring).

    Returns an int64 array (N, T0 + T_new) with N = batch * num_return_sequences (rows of one
    prompt are adjacent), or a GenerateOutput when return_dict_in_generate / output_scores /
    return_logprobs is set. `seed` (int or numpy Generator) makes sampling reproducible.
    """
    _check_options(max_new_tokens, do_sample, temperature, top_k, top_p, min_p, typical_p,
                   repetition_penalty, num_beams, num_return_sequences, best_of)
    output_pad = pad_token_id
    if output_pad is None:
        output_pad = 0 if eos_token_id is None else int(np.ravel([eos_token_id])[0])
    ids, mask = prepare_prompts(input_ids, attention_mask, pad_token_id=output_pad)
    if streamer is not None and (ids.shape[0] != 1 or num_beams > 1 or num_return_sequences > 1 or best_of):
        raise ValueError(f"streamer needs one sequence: batch 1 (got {ids.shape[0]}), num_beams 1 (got {num_beams}), "
                         f"num_return_sequences 1 (got {num_return_sequences}) and no best_of")
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"input_ids must be in [0, {vocab_size}), got values in [{ids.min()}, {ids.max()}]")
    stopper = StopChecker(eos_token_id, stop, tokenizer)
    processors = check_logits_processors(logits_processor)
    for index, processor in enumerate(processors):  # a constraint ends its text with its eos token
        required = getattr(processor, "eos_token_id", None)
        if required is not None and int(required) not in stopper.eos_ids:
            raise ValueError(f"logits_processor[{index}] ({type(processor).__name__}) ends its text with token "
                             f"{required}: pass eos_token_id={required} to generate so rows stop there "
                             f"(got eos_token_id={eos_token_id!r})")
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder:
        if decoder_start_token_id is None:
            decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
        if decoder_start_token_id is None:
            decoder_start_token_id = getattr(model.config, "pad_token_id", None)
        if decoder_start_token_id is None:
            decoder_start_token_id = output_pad
        max_length = 1 + max_new_tokens
    else:
        max_length = ids.shape[1] + max_new_tokens
    block_size = _block_size(model)
    if block_size is not None and max_length > block_size:
        raise ValueError(f"prompt length {ids.shape[1] if not encoder_decoder else 1} + max_new_tokens "
                         f"{max_new_tokens} = {max_length} exceeds the model's block_size {block_size}")

    def make_stepper():
        if encoder_decoder:
            return EncoderDecoderStepper(model, max_length, decoder_start_token_id, use_cache=use_cache)
        return DecoderStepper(model, max_length, use_cache=use_cache)

    want_dict = return_dict_in_generate or output_scores or return_logprobs
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # no dropout while generating (and no draws from the model's training RNG)
    try:
        with no_grad():
            if num_beams > 1:
                result = beam_search(make_stepper(), ids, mask, num_beams=num_beams,
                                     max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                     early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                                     stopper=stopper, pad_token_id=output_pad,
                                     repetition_penalty=repetition_penalty, output_scores=output_scores,
                                     logits_processor=processors)
            else:
                copies = num_return_sequences if best_of is None else int(best_of)
                if best_of is not None:
                    if reward_model is None or copies < num_return_sequences:
                        raise ValueError(f"best_of={best_of} needs reward_model= and best_of >= num_return_sequences "
                                         f"({num_return_sequences})")
                    do_sample = True
                ids_rep, mask_rep = np.repeat(ids, copies, axis=0), np.repeat(mask, copies, axis=0)
                if streamer is not None:
                    streamer.put(ids[0][mask[0].astype(bool)])
                result = _search(make_stepper(), ids_rep, mask_rep, max_new_tokens=max_new_tokens,
                                 do_sample=do_sample, rng=_make_rng(seed), stopper=stopper, pad_token_id=output_pad,
                                 output_scores=output_scores, want_logprobs=return_logprobs or best_of is not None,
                                 streamer=streamer, logits_processor=processors,
                                 temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p, repetition_penalty=repetition_penalty)
                if best_of is not None:
                    result = _keep_best_of(result, reward_model, ids.shape[0], copies, num_return_sequences)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
        if streamer is not None:
            streamer.end()
    if encoder_decoder:
        result.extras["encoder_input_ids"] = ids
    return result if want_dict else result.sequences


def _search(stepper, ids, mask, *, max_new_tokens, do_sample, rng, stopper, pad_token_id, output_scores,
            want_logprobs=True, streamer=None, logits_processor=(), **processor_options) -> GenerateOutput:
    """Greedy decoding or sampling, one token per row per step, rows finishing independently."""
    batch = ids.shape[0]
    repetition_penalty = processor_options["repetition_penalty"]
    warper_options = dict(processor_options, repetition_penalty=1.0)  # the warpers alone
    new_tokens = np.full((batch, max_new_tokens), pad_token_id, dtype=np.int64)  # (N, T_new)
    logprobs = np.zeros((batch, max_new_tokens), dtype=np.float64)  # (N, T_new)
    finished = np.zeros(batch, dtype=bool)
    num_generated = np.zeros(batch, dtype=np.int64)
    scores = [] if output_scores else None
    history = [[] for _ in range(batch)]
    steps_done = 0
    logits = stepper.start(ids, mask) if max_new_tokens else None  # (N, V)
    for step in range(max_new_tokens):
        if not np.isfinite(logits).all():
            bad = np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist()
            raise FloatingPointError(f"the model produced non-finite logits at generation step {step} (rows {bad})")
        context = stepper.ids  # (N, T) everything so far, for the repetition penalty
        if do_sample and not logits_processor:
            processed = process_logits(logits, input_ids=context, **processor_options)  # (N, V)
            chosen = sample_from_uniforms(processed, rng.random(batch))  # (N,): sample()'s draw, processed once
        elif do_sample:  # transformers' order: repetition penalty, the user's processors, then the warpers
            processed = process_logits(logits, input_ids=context, repetition_penalty=repetition_penalty)
            processed = process_logits(logits_processor(context, processed), **warper_options)  # (N, V)
            chosen = sample_from_uniforms(processed, rng.random(batch))  # (N,)
        else:
            processed = logits
            if repetition_penalty != 1.0:
                processed = process_logits(logits, input_ids=context, repetition_penalty=repetition_penalty)
            if logits_processor:
                processed = logits_processor(context, processed)
            chosen = greedy(processed)  # (N,)
        chosen = np.where(finished, pad_token_id, np.asarray(chosen, dtype=np.int64))  # (N,)
        new_tokens[:, step] = chosen
        if want_logprobs:
            row_logprobs = log_softmax(logits.astype(np.float64))[np.arange(batch), chosen]  # (N,)
            logprobs[:, step] = np.where(finished, 0.0, row_logprobs)
        if scores is not None:
            scores.append(np.asarray(processed, dtype=np.float32).copy())
        num_generated += ~finished
        steps_done = step + 1
        if streamer is not None:
            streamer.put(chosen[:1])
        if stopper.active:
            for row in np.flatnonzero(~finished):
                history[row].append(int(chosen[row]))
                if stopper(history[row]):
                    finished[row] = True
            if finished.all():
                break
        if step + 1 < max_new_tokens:
            logits = stepper.step(chosen)
    new_tokens, logprobs = new_tokens[:, :steps_done], logprobs[:, :steps_done]
    if max_new_tokens:
        ids, mask = stepper.prompt_ids, stepper.prompt_mask
    return assemble_output(ids, mask, new_tokens, num_generated, logprobs if want_logprobs else None, scores)


def _keep_best_of(result: GenerateOutput, reward_model, batch: int, copies: int, keep: int) -> GenerateOutput:
    """Best-of-N: score all `copies` samples of each prompt with the reward model, keep the top `keep`."""
    rewards = reward_model(result.sequences, result.attention_mask)
    rewards = np.asarray(data_of(rewards), dtype=np.float64).reshape(-1)
    if rewards.shape != (batch * copies,):
        raise ValueError(f"reward_model must return one reward per sequence ({batch * copies}), got shape {rewards.shape}")
    if not np.all(np.isfinite(rewards)):
        raise FloatingPointError("reward_model returned non-finite rewards")
    grouped = rewards.reshape(batch, copies)  # (B, N)
    order = np.argsort(-grouped, axis=1, kind="stable")[:, :keep]  # (B, keep)
    rows = (np.arange(batch)[:, None] * copies + order).reshape(-1)  # (B*keep,)
    output = GenerateOutput(sequences=result.sequences[rows], attention_mask=result.attention_mask[rows],
                            num_generated=result.num_generated[rows], prompt_length=result.prompt_length,
                            logprobs=None if result.logprobs is None else result.logprobs[rows],
                            scores=None if result.scores is None else [s[rows] for s in result.scores],
                            sequences_scores=rewards[rows])
    output.extras["all_rewards"] = grouped
    return output


__all__ = ["GenerateOutput", "StopChecker", "generate", "prepare_prompts"]
