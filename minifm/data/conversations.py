"""Post-training data as token ids: TRL's dataset rows through the chat template.

Every post-training stage reads its examples in one of TRL's dataset shapes and turns them into
ids here, so SFT, the reward model, DPO and PPO see exactly the same conversations:

    {"prompt", "completion"}            SFT demonstrations (and PPO-ptx's)
    {"messages": [{"role", "content"}]} SFT conversations; the loss falls on assistant turns
    {"prompt", "chosen", "rejected"}    preference pairs (reward model, DPO), optional "margin"
    {"prompt"}                          PPO's prompts: `prompt_ids` ends them in "<|assistant|>"

A one-turn conversation is laid out by minifm.tokenizer.chat.apply_chat_template as

    <|user|> prompt <|end|> <|assistant|> completion <|end|>

and a response is the completion's ids followed by <|end|> (`response_ids`), so a model learns to
close its turn. Labels follow PyTorch's convention: -100 (IGNORE_INDEX) marks a position the loss
skips; `sft_example` labels the prompt -100 and the response with its own ids (unshifted: the
collation in minifm.data.batches shifts inputs and targets by one).

Simplification: a sequence longer than `max_length` is cut on the response side (the prompt is kept).
"""
from __future__ import annotations

import numpy as np

from minifm.data.batches import IGNORE_INDEX
from minifm.tokenizer.chat import apply_chat_template

END_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"


def special_id(tokenizer, token: str) -> int:
    """The id of special token `token` in `tokenizer`, with a clear error when it is missing."""
    specials = getattr(tokenizer, "special_tokens", {})
    if token not in specials:
        raise KeyError(f"tokenizer has no special token {token!r}; it has {sorted(specials)[:8]}...")
    return int(specials[token])


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a one-turn user conversation ending in "<|assistant|>", ready for generation."""
    ids, _ = apply_chat_template([{"role": "user", "content": prompt}], tokenizer, add_generation_prompt=True)
    return [int(i) for i in ids]


def response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of an assistant reply as the model should produce it: the text then <|end|>."""
    return [int(i) for i in tokenizer.encode(response)] + [special_id(tokenizer, END_TOKEN)]


def decode_response(tokenizer, new_tokens) -> str:
    """Text of generated ids, cut at the first <|end|> (the end-of-turn token) or pad."""
    stops = {special_id(tokenizer, END_TOKEN), special_id(tokenizer, PAD_TOKEN)}
    kept = []
    for token in new_tokens:
        if int(token) in stops:
            break
        kept.append(int(token))
    return tokenizer.decode(kept).strip()


def sft_example(prompt_tokens, completion_tokens) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of one conversation: labels are -100 on the prompt, the ids on the completion."""
    prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
    completion_tokens = np.asarray(completion_tokens, dtype=np.int64)
    if prompt_tokens.ndim != 1 or completion_tokens.ndim != 1 or completion_tokens.size == 0:
        raise ValueError(f"sft_example needs 1-D prompt and non-empty completion ids, got shapes "
                         f"{prompt_tokens.shape} and {completion_tokens.shape}")
    input_ids = np.concatenate([prompt_tokens, completion_tokens])  # (T,)
    labels = np.concatenate([np.full(prompt_tokens.size, IGNORE_INDEX, dtype=np.int64), completion_tokens])  # (T,)
    return input_ids, labels


def encode_sft_examples(tokenizer, examples) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tokenise [{"prompt", "completion"}] or [{"messages"}] into (input_ids, labels) pairs."""
    encoded = []
    for index, example in enumerate(examples):
        if "messages" in example:
            ids, assistant_mask = apply_chat_template(example["messages"], tokenizer)
            ids = np.asarray(ids, dtype=np.int64)
            labels = np.where(np.asarray(assistant_mask, dtype=bool), ids, IGNORE_INDEX)
            encoded.append((ids, labels))
        elif "prompt" in example and "completion" in example:
            encoded.append(sft_example(prompt_ids(tokenizer, example["prompt"]),
                                       response_ids(tokenizer, example["completion"])))
        else:
            raise KeyError(f"example {index} needs 'prompt' and 'completion' or 'messages', got keys {sorted(example)}")
    return encoded


def prompt_and_response_ids(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    """The ids of prompt + response (ending in <|end|>), cut to max_length on the response side."""
    return (prompt_ids(tokenizer, prompt) + response_ids(tokenizer, response))[:max_length]


def encode_preference_pairs(tokenizer, pairs, max_length: int) -> list[dict]:
    """[{"chosen": ids, "rejected": ids, "prompt_length": n, "margin": m}] from
    [{"prompt", "chosen", "rejected", optional "margin"}]; both sequences share the prompt's ids."""
    encoded = []
    for index, pair in enumerate(pairs):
        missing = {"prompt", "chosen", "rejected"} - set(pair)
        if missing:
            raise KeyError(f"preference pair {index} lacks {sorted(missing)}")
        prompt = prompt_ids(tokenizer, pair["prompt"])
        encoded.append({"chosen": (prompt + response_ids(tokenizer, pair["chosen"]))[:max_length],
                        "rejected": (prompt + response_ids(tokenizer, pair["rejected"]))[:max_length],
                        "prompt_length": len(prompt), "margin": float(pair.get("margin", 0.0))})
    return encoded


__all__ = ["END_TOKEN", "IGNORE_INDEX", "PAD_TOKEN", "decode_response", "encode_preference_pairs",
           "encode_sft_examples", "prompt_and_response_ids", "prompt_ids", "response_ids", "sft_example",
           "special_id"]
