"""Post-training data as token ids: TRL's dataset rows through the chat template.

Every post-training stage reads its examples in one of TRL's dataset shapes and turns them into
ids here, so SFT, the reward model, DPO and PPO see exactly the same conversations:

    {"prompt", "completion"}            SFT demonstrations (and PPO-ptx's)
    {"messages": [{"role", "content"}]} SFT conversations; the loss falls on assistant turns
    {"prompt", "chosen", "rejected"}    preference pairs (reward model, DPO), optional "margin"
    {"prompt"}                          PPO's prompts: `prompt_ids` ends them in "<|assistant|>"

Two paths use this file.

**tinyworld** (the lifecycle, and `minifm sft|dpo` without --data): prompts and completions are
strings and always go through minifm's own chat template (minifm.tokenizer.chat), laid out as

    <|user|> prompt <|end|> <|assistant|> completion <|end|>

and a response is the completion's ids followed by <|end|> (`response_ids`), so a model learns to
close its turn. A sequence longer than `max_length` is cut on the response side (the prompt is kept).

**Your own data** (`encode_sft_rows`, `encode_preference_rows`: `minifm sft|dpo --data FILE.jsonl`,
rows read by minifm.data.sources.read_jsonl_records), on any model, following TRL:

* Conversational rows (lists of messages) go through the MODEL's own chat template: a real
  tokenizer's `apply_chat_template` (SmolLM2's ChatML, ...) or minifm's for a minifm-trained run.
* Standard rows (strings) are plain text, no template, as TRL: SFT tokenizes prompt + completion +
  eos_token as one text (with the tokenizer's own special tokens, e.g. a BOS) and masks the first
  len(tokens of prompt) positions -- when a token straddles the boundary (a prompt ending in a space)
  those are not exactly the prompt's, and a warning counts such rows, as TRL warns; DPO tokenizes
  the prompt, and each reply (no special tokens) + eos, separately (TRL's tokenize_row).
  minifm's tokenizer reads special-token text in rows as ordinary text and ends with <|endoftext|>.
* {"text"} rows (SFT only): the whole text + eos is trained, TRL's language-modelling format.

Which tokens of a conversation are the assistant's? Chat templates (Jinja) do not say, and TRL's
`assistant_only_loss` needs `{% generation %}` markers that few templates have. minifm renders
prefixes instead (`assistant_turns`): for the assistant message k,

    before  = render(messages[:k], add_generation_prompt=True)    ... up to "<|im_start|>assistant\n"
    through = render(messages[:k+1])                              ... up to the end of turn k

both tokenized; if both are token prefixes of render(messages), the turn is the tokens
[len(before), len(through)), cut after its last end-of-turn token (the tokenizer's eos_token,
<|im_end|> for SmolLM2; minifm's <|end|>), so what a template writes after it (SmolLM2's newline)
is not trained: the unmasked tokens are exactly the reply + its end token. A template that is not
prefix-stable (it renders earlier turns differently once more follow, e.g. drops earlier
"thinking", or inserts a default system prompt only when the conversation starts with the user)
makes one of these renderings differ from the start of the whole: that row is a clear error
naming the line, the rendering and the first differing token; nothing is guessed. Labels are -100
(IGNORE_INDEX) on every other token: prompt-completion rows train their completion's assistant
turns (TRL's completion_only_loss), "messages" rows every assistant turn (TRL's
assistant_only_loss=True; TRL's default trains the whole conversation). DPO's reply is everything
after the rendered prompt up to the end token of its last assistant turn, from the same
rendering of prompt + reply (TRL renders text and re-tokenizes prompt and reply apart, which for
ChatML adds a second end token; minifm keeps the ids the model sees at inference).

Truncation (`max_length`): SFT keeps a sequence's first max_length tokens (TRL's "keep_start");
a row left with no trained token is dropped with a warning naming its lines (an error if every
row is). DPO first cuts the prompt to its last `max_prompt_length` tokens (if set), then, when
prompt + the longer reply is still longer than max_length, cuts the prompt from the left (its end,
next to the reply, stays) down to max(max_length - longer reply, min(prompt, max_length // 2))
tokens, and the replies from the right to what is left: the prompt keeps at least half of
max_length and every reply at least one token. Every cut is counted in a warning naming the lines.

Errors: a row the template cannot render, that is not prefix-stable, or has no eos/chat template
to use is a DataFormatError naming the file, line and what was seen; all rows are encoded before
one error lists the bad lines (nothing trains on half-encoded data).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from minifm.data.batches import IGNORE_INDEX
from minifm.data.sources import DataFormatError, JsonlRecord, one_line_of_errors, plural, preference_parts
from minifm.tokenizer.chat import CHAT_SPECIAL_TOKENS, apply_chat_template
from minifm.tokenizer.special import ENDOFTEXT

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
    """Text of generated ids, cut at the first end-of-turn token (minifm's <|end|>, a real chat model's
    eos_token such as <|im_end|>) or padding token."""
    stops = {end_of_turn_id(tokenizer), padding_id(tokenizer)}
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


# ====================================================================== your own data, any model
def uses_minifm_template(tokenizer) -> bool:
    """True for minifm's own BPETokenizer (minifm's chat template, minifm.tokenizer.chat); False for a real
    tokenizer, which renders its model's own template with `apply_chat_template`."""
    return not hasattr(tokenizer, "apply_chat_template")


def end_of_turn_id(tokenizer) -> int | None:
    """The token that closes an assistant turn: minifm's <|end|>, or a real tokenizer's eos_token (<|im_end|>
    for ChatML models such as SmolLM2); None when a real tokenizer has no eos_token."""
    if uses_minifm_template(tokenizer):
        return special_id(tokenizer, END_TOKEN)
    return tokenizer.eos_token_id


def padding_id(tokenizer) -> int:
    """The id that pads rows (its positions are masked, so any valid id works): minifm's <|pad|>, else the
    tokenizer's pad_token, else its eos_token (as TRL falls back to), else 0."""
    if uses_minifm_template(tokenizer):
        return special_id(tokenizer, PAD_TOKEN)
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def check_chat_template(tokenizer, source: str) -> None:
    """Conversational rows need a chat template: a clear error when the model's tokenizer has none."""
    if uses_minifm_template(tokenizer):
        missing = [token for token in CHAT_SPECIAL_TOKENS if token not in getattr(tokenizer, "special_tokens", {})]
        if missing:
            raise DataFormatError(f"{source}: the rows are conversations (lists of messages) but the model's tokenizer "
                                  f"lacks minifm's chat tokens {missing}; give the rows as strings (TRL's standard "
                                  "format)")
    elif tokenizer.chat_template is None:
        raise DataFormatError(f"{source}: the rows are conversations (lists of messages) but the model's tokenizer "
                              f"({getattr(tokenizer, 'source', 'tokenizer')}) has no chat template; give the rows as "
                              "strings (TRL's standard format) or use a chat model")


def end_of_sequence(tokenizer, source: str) -> tuple[int, str]:
    """(id, text) of the token TRL's standard format appends to every completion: eos_token, or minifm's
    <|endoftext|>."""
    if uses_minifm_template(tokenizer):
        return special_id(tokenizer, ENDOFTEXT), ENDOFTEXT
    if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
        raise DataFormatError(f"{source}: the model's tokenizer has no eos_token, which the standard format "
                              "(strings) appends to every completion; give the rows as conversations")
    return int(tokenizer.eos_token_id), tokenizer.eos_token


def text_ids(tokenizer, text: str) -> list[int]:
    """Ids of plain text as the start of a sequence: a real tokenizer adds its post-processor's tokens
    (a BOS for Llama-2-style models, nothing for SmolLM2); minifm's reads special-token text as text."""
    if uses_minifm_template(tokenizer):
        return [int(i) for i in tokenizer.encode(text, allowed_special="none")]
    return [int(i) for i in tokenizer.encode(text)]


def document_ids(tokenizer, text: str, source: str = "data") -> list[int]:
    """Ids of `text` ending in the end-of-sequence token, as TRL's SFT tokenizes text + eos_token (the eos
    is not added again when the text already ends with it)."""
    eos_id, eos_text = end_of_sequence(tokenizer, source)
    if uses_minifm_template(tokenizer):
        return text_ids(tokenizer, text) + [eos_id]
    return text_ids(tokenizer, text if text.endswith(eos_text) else text + eos_text)


def reply_ids(tokenizer, text: str, source: str = "data") -> list[int]:
    """Ids of a standard-format DPO reply: the text without special tokens added, then eos (TRL's tokenize_row)."""
    eos_id, _ = end_of_sequence(tokenizer, source)
    if uses_minifm_template(tokenizer):
        return text_ids(tokenizer, text) + [eos_id]
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)] + [eos_id]


def chat_ids(tokenizer, messages, add_generation_prompt: bool = False, where: str = "conversation") -> list[int]:
    """Ids of `messages` in the model's own chat template; a template that fails is a DataFormatError."""
    try:
        if uses_minifm_template(tokenizer):
            ids, _ = apply_chat_template(messages, tokenizer, add_generation_prompt=add_generation_prompt)
        else:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # a chat template is code of the model's authors: any failure is this row's
        detail = " ".join(str(error).split())  # one line, whatever the template's message
        raise DataFormatError(f"{where}: the chat template cannot render this conversation "
                              f"({type(error).__name__}: {detail})") from None
    return [int(i) for i in ids]


def _token_text(tokenizer, ids: list[int], position: int) -> str:
    return repr(tokenizer.decode([ids[position]])) if position < len(ids) else "the end"


def check_token_prefix(tokenizer, prefix: list[int], full: list[int], what: str, where: str) -> None:
    """`prefix` must be the first len(prefix) tokens of `full`; else the template is not prefix-stable."""
    if full[:len(prefix)] == prefix:
        return
    at = next((i for i, (a, b) in enumerate(zip(prefix, full)) if a != b), min(len(prefix), len(full)))
    raise DataFormatError(
        f"{where}: the chat template is not prefix-stable: {what} renders to {len(prefix)} tokens that are not the "
        f"start of the whole conversation's {len(full)} (token {at}: {_token_text(tokenizer, prefix, at)} vs "
        f"{_token_text(tokenizer, full, at)}); minifm finds each assistant turn by rendering the conversation up to "
        "it, so it cannot tell which tokens to train. Write such rows as prompt/completion pairs, or use a template "
        "that renders earlier turns the same whatever follows")


def assistant_turns(tokenizer, messages, where: str = "conversation") -> tuple[list[int], list[tuple[int, int, int]]]:
    """(ids of the whole conversation, [(message index, start, stop)] of every assistant turn).

    The turn of assistant message k is ids[start:stop]: start = the length of messages[:k] rendered with the
    generation prompt, stop = the length of messages[:k+1] rendered, cut after the turn's last
    end-of-turn token; both renderings must be token prefixes of the whole (see the module docstring)."""
    full = chat_ids(tokenizer, messages, where=where)
    end_token = end_of_turn_id(tokenizer)
    turns = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = chat_ids(tokenizer, messages[:index], add_generation_prompt=True, where=where)
        through = chat_ids(tokenizer, messages[:index + 1], where=where)
        check_token_prefix(tokenizer, before, full, f"messages[:{index}] with the generation prompt", where)
        check_token_prefix(tokenizer, through, full, f"messages[:{index + 1}]", where)
        start, stop = len(before), len(through)
        turn = full[start:stop]
        if end_token is not None and end_token in turn:
            last_end = max(position for position, token in enumerate(turn) if token == end_token)
            stop = start + last_end + 1  # what the template writes after the end token is not trained
        if stop <= start:
            raise DataFormatError(f"{where}: assistant message {index} renders to no tokens after the generation "
                                  "prompt; the chat template does not write it")
        turns.append((index, start, stop))
    return full, turns


@dataclass
class EncodingReport:
    """What happened to rows on their way to ids, by line number: the source of the warnings and the summary."""

    rows: int = 0                                           # rows encoded
    kept: int = 0                                           # rows that train (rows minus dropped)
    truncated: list[int] = field(default_factory=list)     # rows cut to max_length
    dropped: list[int] = field(default_factory=list)       # SFT rows left with no trained token, not used
    prompt_not_prefix: list[int] = field(default_factory=list)  # standard SFT rows: a token spans prompt|completion
    identical: list[int] = field(default_factory=list)     # DPO pairs whose chosen and rejected ids are equal

    def to_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, "truncated": len(self.truncated), "dropped": len(self.dropped),
                "prompt_not_prefix": len(self.prompt_not_prefix), "identical_pairs": len(self.identical)}


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(line) for line in lines[:8])
    return f"line {shown}" if len(lines) == 1 else f"lines {shown}" + (", ..." if len(lines) > 8 else "")


def _are(items: list) -> str:
    return "is" if len(items) == 1 else "are"


def encode_rows(rows: Sequence[JsonlRecord], encode_one, source: str) -> list:
    """[encode_one(row, where)] for every row; the rows that fail are gathered into one DataFormatError."""
    results, errors = [], []
    for row in rows:
        try:
            results.append(encode_one(row, f"{source}:{row.line}"))
        except DataFormatError as error:
            errors.append((row.line, str(error)))
    if errors:
        raise DataFormatError(one_line_of_errors(errors))
    return results


def sft_row_ids(tokenizer, row: JsonlRecord, where: str) -> tuple[list[int], list[int], bool]:
    """(ids, labels, prompt_is_prefix) of one SFT row, before truncation (see the module docstring)."""
    record = row.record
    if row.format == "text":
        ids = document_ids(tokenizer, record["text"], where)
        return ids, list(ids), True
    if row.conversational:
        if row.format == "messages":
            messages, first_trained = record["messages"], 0
        else:
            messages, first_trained = record["prompt"] + record["completion"], len(record["prompt"])
        ids, turns = assistant_turns(tokenizer, messages, where)
        labels = [IGNORE_INDEX] * len(ids)
        for index, start, stop in turns:
            if index >= first_trained:
                labels[start:stop] = ids[start:stop]
        return ids, labels, True
    prompt_tokens = text_ids(tokenizer, record["prompt"])
    ids = document_ids(tokenizer, record["prompt"] + record["completion"], where)
    masked = min(len(prompt_tokens), len(ids))
    labels = [IGNORE_INDEX] * masked + ids[masked:]
    return ids, labels, ids[:len(prompt_tokens)] == prompt_tokens


def encode_sft_rows(tokenizer, rows: Sequence[JsonlRecord], max_length: int,
                    source: str = "data") -> tuple[list[tuple[np.ndarray, np.ndarray]], EncodingReport]:
    """(input_ids, labels) pairs of SFT rows (TRL's text, prompt/completion or messages), each at most
    max_length tokens (its start kept), and the report; warns about cut, dropped and straddling rows."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to train on a token, got {max_length}")
    if any(row.conversational for row in rows):
        check_chat_template(tokenizer, source)
    encoded = encode_rows(rows, lambda row, where: sft_row_ids(tokenizer, row, where), source)
    report = EncodingReport(rows=len(rows))
    examples = []
    for row, (ids, labels, prompt_is_prefix) in zip(rows, encoded):
        if not prompt_is_prefix:
            report.prompt_not_prefix.append(row.line)
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            report.truncated.append(row.line)
        if all(label == IGNORE_INDEX for label in labels[1:]):  # position 0 is never a target
            report.dropped.append(row.line)
            continue
        examples.append((np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)))  # (T,), (T,)
    report.kept = len(examples)
    if report.prompt_not_prefix:
        warnings.warn(f"{source}: in {plural(len(report.prompt_not_prefix), 'row')} the prompt's tokens are not the "
                      "start of prompt + completion's (a token spans the boundary, e.g. a prompt ending in a space); "
                      "their first len(prompt) tokens are masked anyway, as TRL does "
                      f"({_lines(report.prompt_not_prefix)})", stacklevel=2)
    if report.truncated:
        warnings.warn(f"{source}: {len(report.truncated)} of {len(rows)} rows {_are(report.truncated)} longer than "
                      f"max_length {max_length} and were cut to their first {max_length} tokens "
                      f"({_lines(report.truncated)})", stacklevel=2)
    if report.dropped and examples:
        warnings.warn(f"{source}: {plural(len(report.dropped), 'row')} lost every trained token to the cut at "
                      f"max_length {max_length} and are left out ({_lines(report.dropped)}); raise --max-length "
                      "to keep them", stacklevel=2)
    if not examples:
        raise DataFormatError(f"{source}: every row lost its trained tokens to the cut at max_length {max_length} "
                              f"({_lines(report.dropped)}); raise --max-length")
    return examples, report


def preference_row_ids(tokenizer, row: JsonlRecord, where: str) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen reply ids, rejected reply ids) of one preference row, before truncation."""
    prompt, chosen, rejected = preference_parts(row.record, where)
    if not row.conversational:
        return text_ids(tokenizer, prompt), reply_ids(tokenizer, chosen, where), reply_ids(tokenizer, rejected, where)
    prompt_tokens = chat_ids(tokenizer, prompt, add_generation_prompt=True, where=where)
    replies = []
    for reply in (chosen, rejected):
        # the reply starts with an assistant message (sources.validate_reply), so assistant_turns has checked
        # that prompt_tokens (= messages[:len(prompt)] with the generation prompt) start these ids
        ids, turns = assistant_turns(tokenizer, prompt + reply, where)
        replies.append(ids[len(prompt_tokens):turns[-1][2]])
    return prompt_tokens, replies[0], replies[1]


def truncate_pair(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int,
                  max_prompt_length: int | None = None) -> tuple[list[int], list[int], list[int], bool]:
    """(prompt, chosen, rejected, cut) after DPO's truncation (see the module docstring)."""
    cut = False
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt, cut = prompt[len(prompt) - max_prompt_length:], True
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_length:
        kept = max(max_length - longest, min(len(prompt), max_length // 2))
        prompt = prompt[len(prompt) - kept:]
        room = max_length - len(prompt)
        chosen, rejected, cut = chosen[:room], rejected[:room], True
    return prompt, chosen, rejected, cut


def encode_preference_rows(tokenizer, rows: Sequence[JsonlRecord], max_length: int,
                           max_prompt_length: int | None = None,
                           source: str = "data") -> tuple[list[dict], EncodingReport]:
    """[{"chosen": ids, "rejected": ids, "prompt_length": n, "margin": 0.0, "line": line}] of preference
    rows (explicit or implicit prompt, strings or messages), truncated, and the report; warns about cut
    pairs and pairs whose chosen and rejected ids are equal."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to hold a prompt and a reply token, got {max_length}")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be >= 1, got {max_prompt_length}")
    if any(row.conversational for row in rows):
        check_chat_template(tokenizer, source)
    encoded = encode_rows(rows, lambda row, where: preference_row_ids(tokenizer, row, where), source)
    report = EncodingReport(rows=len(rows), kept=len(rows))
    pairs = []
    for row, (prompt, chosen, rejected) in zip(rows, encoded):
        prompt, chosen, rejected, cut = truncate_pair(prompt, chosen, rejected, max_length, max_prompt_length)
        if cut:
            report.truncated.append(row.line)
        if chosen == rejected:
            report.identical.append(row.line)
        pairs.append({"chosen": prompt + chosen, "rejected": prompt + rejected, "prompt_length": len(prompt),
                      "margin": 0.0, "line": row.line})
    if report.truncated:
        warnings.warn(f"{source}: {len(report.truncated)} of {len(rows)} pairs {_are(report.truncated)} longer than "
                      f"max_length {max_length} (or their prompt than max_prompt_length) and were cut: prompts lose "
                      f"their start, replies their end ({_lines(report.truncated)})", stacklevel=2)
    if report.identical:
        verb = "has" if len(report.identical) == 1 else "have"
        warnings.warn(f"{source}: {plural(len(report.identical), 'pair')} {verb} the same chosen and rejected tokens "
                      f"(after any cut), which gives DPO no signal ({_lines(report.identical)})", stacklevel=2)
    return pairs, report


__all__ = ["END_TOKEN", "IGNORE_INDEX", "PAD_TOKEN", "EncodingReport", "assistant_turns", "chat_ids",
           "decode_response", "document_ids", "encode_preference_pairs", "encode_preference_rows",
           "encode_sft_examples", "encode_sft_rows", "end_of_turn_id", "padding_id", "prompt_and_response_ids",
           "prompt_ids", "reply_ids", "response_ids", "sft_example", "special_id", "text_ids", "truncate_pair",
           "uses_minifm_template"]
