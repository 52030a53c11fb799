"""`minifm chat`: talk to a chat model, its reply streamed token by token.

    minifm chat --model smollm2-135m-instruct [--temperature 0.2 --top-p 0.9] [--system TEXT]
    minifm chat --model smollm2-135m-instruct --dtype float32      (default: the file's own Q4_1 weights)
    minifm chat --model runs/lifecycle/sft                   (a minifm SFT / DPO / PPO run)
    printf 'What is 2+2?\\n/reset\\nName a colour.\\n' | minifm chat --model smollm2-135m-instruct
    minifm chat --model smollm2-135m-instruct --json-schema answer.json     (every reply valid JSON)

Each line you type is a user turn. The conversation so far goes through the model's own chat
template (a real model's Jinja template, e.g. SmolLM2's ChatML, or minifm's <|user|>...<|end|>
template for its own runs) with the generation prompt, and the reply is sampled until the model's
end-of-turn token. Commands: /reset starts a new conversation, /exit (or Ctrl-D) quits; Ctrl-C
cancels the reply being written. Works with piped stdin (no prompt is printed then). When the
conversation outgrows the context, the oldest turns are dropped (the system message is kept).
--regex PATTERN or --json-schema FILE constrains every reply (as in `minifm generate`).
"""
from __future__ import annotations

try:
    import readline  # noqa: F401  (input() line editing and history)
except ImportError:
    readline = None

import sys
from dataclasses import dataclass

from minifm.cli.common import Command, add_dataclass_arguments, config_values, field_names, settings_from
from minifm.cli.generate import (
    GenerateSettings, add_dtype_argument, add_model_argument, add_structured_output_arguments, check_generates,
    decoding_options, load_for_generation, structured_output,
)
from minifm.sampling.generate import generate
from minifm.sampling.streamer import TextStreamer
from minifm.tokenizer.chat import apply_chat_template
from minifm.tokenizer.special import END_OF_TURN


@dataclass
class ChatSettings(GenerateSettings):
    """Decoding settings for chat: SmolLM2's recommended temperature 0.2 and top-p 0.9 by default."""

    max_new_tokens: int = 256               # longest reply, in tokens
    temperature: float = 0.2                # divide the logits by this before sampling (lower: more conservative)
    top_p: float = 0.9                      # nucleus sampling: keep the smallest set with this much probability


def add_chat_arguments(parser) -> None:
    add_model_argument(parser)
    add_dtype_argument(parser)
    parser.add_argument("--system", default=None, help="a system message that starts every conversation")
    add_structured_output_arguments(parser)
    add_dataclass_arguments(parser, ChatSettings, "decoding")


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The conversation through the tokenizer's chat template, ending with the assistant's generation prompt."""
    if hasattr(tokenizer, "apply_chat_template"):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    ids, _ = apply_chat_template(messages, tokenizer, add_generation_prompt=True)  # minifm's own template
    return ids


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant turn: a real model's eos (<|im_end|> for ChatML) or minifm's <|end|>."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        return eos
    if END_OF_TURN not in tokenizer.special_tokens:
        raise ValueError(f"this tokenizer has no {END_OF_TURN} token: the run was not trained for chat")
    return tokenizer.special_tokens[END_OF_TURN]


class Conversation:
    """The messages so far, and the prompt ids that fit the model's context with room for a reply."""

    def __init__(self, tokenizer, system: str | None, context: int, reply_room: int):
        self.tokenizer, self.context, self.reply_room = tokenizer, context, reply_room
        self.start = [{"role": "system", "content": system}] if system else []
        self.messages = list(self.start)

    def reset(self) -> None:
        self.messages = list(self.start)

    def prompt(self) -> list[int]:
        """Ids of the conversation; the oldest turns are dropped while it is too long for the context."""
        while True:
            ids = prompt_ids(self.tokenizer, self.messages)
            if len(ids) + self.reply_room <= self.context:
                return ids
            turns = self.messages[len(self.start):]
            if len(turns) <= 1:
                raise ValueError(f"the message is {len(ids)} tokens long; with {self.reply_room} tokens for the "
                                 f"reply it does not fit the model's context of {self.context}")
            self.messages = self.start + turns[2:] if len(turns) > 2 else self.start + turns[-1:]


def run_chat(args) -> int:
    settings = settings_from(args, ChatSettings, file_values=config_values(args, field_names(ChatSettings)))
    if settings.num_beams != 1 or settings.num_return_sequences != 1:
        raise ValueError("chat streams one reply: --num-beams and --num-return-sequences must be 1")
    make_constraint = structured_output(args)
    model, tokenizer = load_for_generation(args)  # default: as stored (SmolLM2: its Q4_1)
    check_generates(model, args.model)
    end_id = end_of_turn_id(tokenizer)
    processors = None if make_constraint is None else make_constraint(tokenizer, end_id)  # one for every reply
    conversation = Conversation(tokenizer, args.system, model.config.block_size, settings.max_new_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        print("minifm chat: type a message (/reset: new conversation, /exit or Ctrl-D: quit, Ctrl-C: cancel a reply)")
    options = decoding_options(settings)
    if processors is not None:
        options["logits_processor"] = processors
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print()
            continue
        command = line.strip()
        if command == "/exit":
            return 0
        if command == "/reset":
            conversation.reset()
            print("(new conversation)")
            continue
        if not command:
            continue
        conversation.messages.append({"role": "user", "content": line})
        streamer = TextStreamer(tokenizer, stop_token_ids=(end_id,))
        print("assistant> " if interactive else "", end="", flush=True)
        try:
            out = generate(model, [conversation.prompt()], settings.max_new_tokens, eos_token_id=end_id,
                           streamer=streamer, return_dict_in_generate=True, **options)
        except KeyboardInterrupt:
            print("\n(cancelled)")
            conversation.messages.pop()
            continue
        reply = [token for token in out.new_tokens(0) if token != end_id]
        conversation.messages.append({"role": "assistant", "content": tokenizer.decode(reply)})


COMMANDS = [Command("chat", "chat with a model, replies streamed (a real model's own chat template)",
                    add_chat_arguments, run_chat)]
