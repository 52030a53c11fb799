"""Lab: PEFT on a real base. "Parameter-efficient fine-tuning reaches nearly full fine-tuning's quality at a
fraction of the cost."

The question. The chapter's claim, in issue 14's numbers: LoRA r=16 reaches at least 90% of full
fine-tuning's held-out accuracy while training under 5% of its parameters. On minifm's own 1M-parameter
model it did not (docs/peft.md: 20%), and the diagnosis pointed at the weak base. Here the base is real:
SmolLM2-135M-Instruct (30 layers, d=576, 134.5M parameters, its own chat template), fine-tuned with
    full fine-tuning; LoRA r = 1, 4, 16 on the attention projections (q, k, v, o) and on every linear
    layer ("all-linear"); bottleneck adapters; prompt tuning; prefix tuning; IA3,
and for each run: held-out accuracy graded by tinyworld's ground truth (tinyworld.grade against the world
the question was drawn from), trainable parameters, optimizer-state memory (AdamW's two moment arrays,
measured from the optimizer), peak resident memory (RSS) and wall time.

The task (what "facts and formats" means here). Compute decides it: one full fine-tuning step of SmolLM2
costs ~6 CPU-seconds at 2 x 128 tokens, so the default preset affords tens of steps per run, not the
hundreds that memorising a world's facts would need. So the facts are given in the prompt, as a chat:

    system     "Tomas owns nine sheep. Pia owns one goat. Tomas has a purple boat."
    user       "How many cats does Tomas have?"
    assistant  "Tomas has no cats."

The system turn states the facts in tinyworld's non-canonical wordings (variants 1-2 of
minifm/data/tinyworld/sentences.py: "keeps", "owns", "has a home in", "likes ... best", "The favourite colour
of X is ..."), with two distractors (another fact of the same person, the same kind of fact about someone
else). The user turn is a tinyworld fact question (town, job, pets, favourite colour, an object's colour, the
count of the animal the person keeps, the count of one they do not keep), and the answer must be tinyworld's
canonical sentence: number words ("three", not "3"), "no cats" for zero, British "favourite colour", one
sentence and nothing else. The untuned model gets ~10% ("Aron has 8 cats.", "Greta lives in the town of
Yarrow, which is located in ..."); learning the format and picking the right fact is what the fine-tuning
must do. Facts come from many tinyworld worlds (World(seed)), and the held-out test is out of distribution
by construction: its people have names never seen in training (4 female, 4 male names of the lexicon) and
live in towns never seen in training (4 of its 14 towns); training contexts never mention either. A test
answer is graded by tinyworld.grade(question, answer, world) against the world the facts came from.

The setup (preset "default"): every run starts from the same base (a copy; the base is never touched),
trains on `n_train` examples drawn with the run's seed (so seeds differ in data, order and initialisation),
batch `batch_size`, `max_steps` steps, AdamW with constant learning rate, gradient clipping 1.0, no weight
decay, the loss on the assistant turn only (its <|im_end|> included), each batch padded to its longest row;
then answers the `n_test` held-out questions greedily (KV cache, up to `max_new_tokens`).
Learning rates per method family (PEFT usually wants a larger one; `lr` of the preset, named in every
sub-run's key and in the report): full 1e-4, LoRA 2e-3 (lora_alpha = 2r), bottleneck adapter 2e-3 (reduction
factor 16), prompt tuning 3e-2 (P = 8 virtual tokens, random init), prefix tuning 1e-2 (P = 8), IA3 2e-2.
Only full fine-tuning and LoRA were probed (one run each, 16 steps, 32 test questions: full 1e-4 -> 0.84,
LoRA r=16 on q, k, v, o at 2e-3 -> 0.59); the other rates are common starting points, not tuned. Seeds: `seeds` (3) for the methods the claim is about (`key_methods`: full, LoRA r=16 attention,
LoRA r=16 all-linear) and `other_seeds` for the rest (3 in the default preset; lower it when compute is short:
the report says which method ran how many). Cost, measured: the whole default preset (the untuned evaluation and
33 runs) took 30.5 minutes on a quiet 2-core AMD EPYC (load 1.1), a PEFT run 45-67 s (~29 s of training at
2.3-2.7 s per step, ~20 s of evaluation), a full fine-tuning run ~80 s; the same runs took 3-6 minutes each
at load 6-10. DEFAULT_MINUTES is that measurement, rounded up. The tiny preset (tests, CI) keeps SmolLM2's
first 2 layers and trains 2 steps.

Measured per run: trainable parameters (counted; also the closed forms below), optimizer state (bytes of the
optimizer's arrays after training; AdamW: 2 x 4 bytes per trainable parameter), peak RSS of the process
during the run (sampled every 20 ms from /proc/self/statm) and how far above the process's RSS at the run's
start it went (the copy of the model, gradients, optimizer state, activations), training wall time and
seconds per step, the final training loss (mean of the last 4 steps), held-out accuracy.

Closed forms (LoRA on SmolLM2's layout, tested): per layer, a Linear (in, out) adds r (in + out); attention
q (d, d), k (d, kv), v (d, kv), o (d, d) with kv = n_kv_head * head_dim; the MLP gate and up (d, d_ff) and
down (d_ff, d). SmolLM2 (d 576, kv 192, d_ff 1536, 30 layers): r x 115,200 (attention), r x 305,280
(all-linear), i.e. 1.37% and 3.63% of its 134,515,008 parameters at r = 16.

Simplifications: one small task family (fact questions with the facts in context), tens of steps, one
learning rate per method family from a single short probe (not tuned per rank), greedy decoding; wall times
depend on the machine's load (the report records it).
"""
from __future__ import annotations

import copy
import os
import time

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.data.batches import IGNORE_INDEX, collate_sft, shuffled_batches
from minifm.data.conversations import assistant_turns, chat_ids, end_of_turn_id, padding_id
from minifm.data.tinyworld import lexicon, sentences
from minifm.data.tinyworld.tasks import fact_tasks, grade
from minifm.data.tinyworld.world import World
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, settings_fingerprint
from minifm.lifecycle.peft_comparison import lora_verdict, optimizer_state_bytes
from minifm.memory import PeakRSS, current_rss_bytes, release_free_memory
from minifm.models import GPT, GPTConfig
from minifm.peft import AdapterConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from minifm.pretrained.registry import resolve_model_path
from minifm.sampling.generate import generate
from minifm.train.loop import make_optimizer, train
from minifm.train.plots import pyplot, save_figure
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained
from minifm.train.sft import SFTConfig, sft_loss

NAME = "peft-real"
CLAIM = "PEFT reaches nearly full fine-tuning's quality at a fraction of the cost"
SUMMARY = ("SmolLM2-135M on tinyworld: full vs LoRA r=1/4/16 (attention, all-linear), adapter, prompt, prefix, IA3: "
           "accuracy, parameters, memory, time")
DEFAULT_MINUTES = 31

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_METHODS = ["full", "lora_r1", "lora_r4", "lora_r16", "lora_r1_all", "lora_r4_all", "lora_r16_all", "adapter",
               "prompt", "prefix", "ia3"]
KEY_METHODS = ["full", "lora_r16", "lora_r16_all"]   # the claim's methods: every seed
# the tiny preset's model: SmolLM2's layout (RoPE, RMSNorm, SwiGLU, grouped-query attention, tied head, its
# vocabulary and tokenizer) at a size that trains in a blink, randomly initialised (the real weights take 8-40 s
# to dequantize, too slow for CI)
TINY_MODEL = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=128)
LEARNING_RATES = {"full": 1e-4, "lora": 2e-3, "adapter": 2e-3, "prompt": 3e-2, "prefix": 1e-2, "ia3": 2e-2}

PRESETS = {
    "tiny": dict(model="smollm2-135m-instruct", tiny_model=TINY_MODEL, methods=ALL_METHODS, key_methods=KEY_METHODS,
                 seeds=1, other_seeds=1, max_steps=2, batch_size=2, n_train=4, n_test=4, max_new_tokens=4,
                 num_virtual_tokens=4, reduction_factor=16, lr=LEARNING_RATES),
    "default": dict(model="smollm2-135m-instruct", tiny_model=None, methods=ALL_METHODS, key_methods=KEY_METHODS,
                    seeds=3, other_seeds=3, max_steps=12, batch_size=4, n_train=48, n_test=40, max_new_tokens=14,
                    num_virtual_tokens=8, reduction_factor=16, lr=LEARNING_RATES),
}
SCHEDULE_SETTINGS = ("lr", "methods", "key_methods", "other_seeds")   # not in the sub-run keys' fingerprint
ACCURACY_SHARE, PARAM_SHARE = 0.9, 0.05   # the claim: >= 90% of full fine-tuning's accuracy with < 5% of its parameters

# ------------------------------------------------------------------ the task
TEST_NAMES = frozenset(lexicon.FEMALE_NAMES[-4:] + lexicon.MALE_NAMES[-4:])
TEST_TOWNS = frozenset(lexicon.TOWN_NAMES[-4:])
FACT_QUESTION_KINDS = ("town", "job", "pets", "colour", "object", "pets", "pets")  # fact_tasks' 7 per person, in order
FIRST_TEST_WORLD = 100_001   # train worlds are World(1), World(2), ...; test worlds World(100001), ...


def held_out(person) -> bool:
    return person.name in TEST_NAMES and person.town in TEST_TOWNS


def in_training_side(person) -> bool:
    return person.name not in TEST_NAMES and person.town not in TEST_TOWNS


def paraphrase(person, kind: str, rng) -> str:
    """`person`'s fact of `kind` in a non-canonical English wording (variant >= 1), never the answer's sentence."""
    return sentences.fact_sentence(person, kind, "en", variant=rng.randrange(1, sentences.FACT_VARIANTS[kind]["en"]))


def context_examples(split: str, n: int, seed: int) -> list[dict]:
    """n examples {"world", "context", "question", "answer"} of `split` (see the module docstring).

    Train: people whose name and town are both on the training side, from worlds 1, 2, ...; test: people whose
    name and town are both held out, from worlds FIRST_TEST_WORLD, ... . A person gives one question (a kind
    drawn by `seed`); the context holds the needed fact, another fact of the person and the same kind of
    fact about another person of the same side, shuffled."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import random
    rng = random.Random(seed * 7919 + (0 if split == "train" else 1))
    wanted = held_out if split == "test" else in_training_side
    world_seed = FIRST_TEST_WORLD if split == "test" else 1
    out: list[dict] = []
    while len(out) < n:
        world = World(world_seed)
        world_seed += 1
        tasks = fact_tasks(world)  # 7 per person, in world.people's order
        people = [p for p in world.people if wanted(p)]
        others = ([p for p in world.people if p.name in TEST_NAMES] if split == "test" else people)
        for person in people:
            if len(out) >= n:
                break
            candidates = [p for p in others if p is not person]
            if not candidates:
                continue
            kind_index = rng.randrange(len(FACT_QUESTION_KINDS))
            task = tasks[7 * world.people.index(person) + kind_index]
            kind = FACT_QUESTION_KINDS[kind_index]
            other_kind = rng.choice([k for k in ("town", "job", "pets", "colour", "object") if k != kind])
            context = [paraphrase(person, kind, rng), paraphrase(person, other_kind, rng),
                       paraphrase(rng.choice(candidates), kind, rng)]
            rng.shuffle(context)
            out.append({"world": world.seed, "context": " ".join(context), "question": task.prompt,
                        "answer": task.answer})
    return out


def messages(example: dict, with_answer: bool = False) -> list[dict]:
    turns = [{"role": "system", "content": example["context"]}, {"role": "user", "content": example["question"]}]
    return turns + ([{"role": "assistant", "content": example["answer"]}] if with_answer else [])


def encode(tokenizer, example: dict) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) in the model's own chat template, labels -100 outside the assistant turn."""
    ids, turns = assistant_turns(tokenizer, messages(example, with_answer=True))
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    for _, start, stop in turns:
        labels[start:stop] = ids[start:stop]
    return np.asarray(ids, dtype=np.int64), labels


def is_correct(example: dict, answer: str) -> bool:
    """tinyworld's grader, against the world the example's facts came from."""
    return bool(grade(example["question"], answer, World(example["world"])))


# ------------------------------------------------------------------ the methods and their sizes
def family(method: str) -> str:
    return "lora" if method.startswith("lora") else method


def peft_config(method: str, settings: dict):
    """The PEFT config of `method` (None for full fine-tuning)."""
    if method == "full":
        return None
    if method.startswith("lora_r"):
        rank = int(method[len("lora_r"):].split("_")[0])
        targets = "all-linear" if method.endswith("_all") else list(ATTENTION)
        return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
    if method == "adapter":
        return AdapterConfig(reduction_factor=settings["reduction_factor"])
    if method == "prompt":
        return PromptTuningConfig(num_virtual_tokens=settings["num_virtual_tokens"])
    if method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=settings["num_virtual_tokens"])
    if method == "ia3":
        return IA3Config()
    raise ValueError(f"unknown method {method!r}; the methods are {ALL_METHODS}")


def describe(method: str, settings: dict) -> str:
    if method == "full":
        return "full fine-tuning"
    if method.startswith("lora_r"):
        rank = int(method[len("lora_r"):].split("_")[0])
        where = "all linear layers" if method.endswith("_all") else "q, k, v, o"
        return f"LoRA r={rank} ({where}), alpha {2 * rank}"
    return {"adapter": f"bottleneck adapter (rf {settings['reduction_factor']})",
            "prompt": f"prompt tuning (P={settings['num_virtual_tokens']})",
            "prefix": f"prefix tuning (P={settings['num_virtual_tokens']})", "ia3": "IA3"}[method]


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in, out) of each Linear of one transformer block of a Llama-layout GPTConfig (SwiGLU MLP)."""
    d, head_dim = config.n_embd, config.n_embd // config.n_head
    kv = (config.n_kv_head or config.n_head) * head_dim
    d_ff = config.mlp_hidden
    return {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
            "gate_proj": (d, d_ff), "up_proj": (d, d_ff), "down_proj": (d_ff, d)}


def lora_param_count(config, rank: int, targets) -> int:
    """Trainable parameters of LoRA rank `rank` on `targets` ("all-linear" or names) of every block: r (in + out)."""
    shapes = linear_shapes(config)
    names = list(shapes) if targets == "all-linear" else list(targets)
    return config.n_layer * sum(rank * sum(shapes[name]) for name in names)


def adamw_state_bytes(trainable_params: int, bytes_per_value: int = 4) -> int:
    """AdamW keeps two moment arrays (exp_avg, exp_avg_sq) per trainable parameter."""
    return 2 * bytes_per_value * int(trainable_params)


def claim_verdict(full_accuracies, lora_accuracies, full_params: int, lora_params: int,
                  accuracy_share: float = ACCURACY_SHARE, param_share: float = PARAM_SHARE) -> dict:
    """LoRA r=16 against full fine-tuning over seeds: the ratio of mean accuracies and of trainable parameters,
    `met` (>= accuracy_share of the accuracy with < param_share of the parameters, on the means: the rule of
    lora_verdict in minifm/lifecycle/peft_comparison.py), and `settled`: whether the same answer holds with
    each mean moved two standard errors the unfavourable way and the favourable way (False: within noise)."""
    full_mean, full_se = mean_and_stderr(full_accuracies)
    lora_mean, lora_se = mean_and_stderr(lora_accuracies)
    rows = [{"method": "full", "accuracy": full_mean, "trainable_params": full_params},
            {"method": "lora_r16", "accuracy": lora_mean, "trainable_params": lora_params}]
    base = lora_verdict(rows)
    met = bool(full_mean > 0 and lora_mean >= accuracy_share * full_mean and lora_params < param_share * full_params)

    def holds(lora_value, full_value):
        return bool(full_value > 0 and lora_value >= accuracy_share * full_value
                    and lora_params < param_share * full_params)

    pessimistic = holds(lora_mean - 2 * lora_se, full_mean + 2 * full_se)
    optimistic = holds(lora_mean + 2 * lora_se, max(full_mean - 2 * full_se, 1e-12))
    return {"accuracy_ratio": lora_mean / full_mean if full_mean > 0 else float("nan"),
            "param_ratio": lora_params / full_params, "met": met, "settled": pessimistic == optimistic,
            "full_accuracy": full_mean, "full_se": full_se, "lora_accuracy": lora_mean, "lora_se": lora_se,
            "lifecycle_rule_met": base["met"]}


# ------------------------------------------------------------------ the model
def load_base(name: str, tiny_model: dict | None = None):
    """(SmolLM2 as a float32 GPT, its tokenizer); with tiny_model, a random GPT of SmolLM2's layout and vocabulary
    at the sizes given (the tiny preset) instead of the real weights."""
    path = resolve_model_path(name)
    tokenizer = tokenizer_from_pretrained(path)
    if tiny_model is None:
        model = GPT.from_pretrained(path, dtype="float32")
    else:
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=512, bias=False, pos="rope", norm="rmsnorm",
                              mlp="swiglu", tie_weights=True, rope_base=100000.0, norm_eps=1e-5, **tiny_model))
    model.eval()
    return model, tokenizer


def answer_all(model, tokenizer, examples: list[dict], max_new_tokens: int, batch_size: int = 20) -> list[str]:
    """Greedy answers (the text before the end-of-turn token) to each example's system + user turns."""
    end_id, pad_id = end_of_turn_id(tokenizer), padding_id(tokenizer)
    answers = []
    with no_grad():
        for start in range(0, len(examples), batch_size):
            prompts = [chat_ids(tokenizer, messages(e), add_generation_prompt=True)
                       for e in examples[start:start + batch_size]]
            out = generate(model, prompts, max_new_tokens, eos_token_id=end_id, pad_token_id=pad_id,
                           return_dict_in_generate=True)
            for row in range(len(prompts)):
                new = [int(token) for token in out.new_tokens(row)]
                if end_id in new:
                    new = new[:new.index(end_id)]
                answers.append(tokenizer.decode(new).strip())
    return answers


def greedy_writes_reference(model, tokenizer, examples: list[dict], batch_size: int = 20) -> list[bool]:
    """Per example: would greedy decoding write exactly the reference answer and its end-of-turn token?

    One teacher-forced forward pass over prompt + reference answers it: greedy decoding writes the reference
    iff at every answer position the argmax of the next-token distribution, given the reference so far, is
    the reference's next token (the end-of-turn token included). It costs one pass instead of a token-by-token
    generation; it agrees with generation up to float rounding between the cached and uncached forward."""
    pad_id = padding_id(tokenizer)
    matches = []
    with no_grad():
        for start in range(0, len(examples), batch_size):
            batch = [encode(tokenizer, e) for e in examples[start:start + batch_size]]
            inputs, targets, mask = collate_sft(batch, 4096, pad_id, False, True)  # (B, T) each
            predictions = np.argmax(model(inputs, attention_mask=mask).data, axis=-1)  # (B, T)
            answer = targets != IGNORE_INDEX
            matches += [bool(np.all(predictions[row][answer[row]] == targets[row][answer[row]]))
                        for row in range(len(batch))]
    return matches


def evaluate(model, tokenizer, examples: list[dict], max_new_tokens: int) -> dict:
    """Greedy answers graded by tinyworld: answers that greedy decoding provably writes word for word (the
    teacher-forced check above) are the reference; the rest are generated and graded (the grader also accepts
    other spellings of the right fact, e.g. "Sure! ..." or a second sentence)."""
    exact = greedy_writes_reference(model, tokenizer, examples)
    answers = [e["answer"] for e in examples]
    rest = [index for index, match in enumerate(exact) if not match]
    for index, answer in zip(rest, answer_all(model, tokenizer, [examples[i] for i in rest], max_new_tokens)):
        answers[index] = answer
    correct = [is_correct(e, a) for e, a in zip(examples, answers)]
    return {"accuracy": float(np.mean(correct)), "correct": correct, "exact": int(sum(exact)),
            "examples": [{"question": e["question"], "reference": e["answer"], "answer": a}
                         for e, a in list(zip(examples, answers))[:4]]}


def fine_tune(model, encoded, pad_id: int, settings: dict, learning_rate: float, seed: int):
    """Train `model` in place on the shared loop (constant lr, clip 1.0, no decay); returns (TrainResult, optimizer)."""
    config = SFTConfig(learning_rate=learning_rate, max_steps=settings["max_steps"],
                       per_device_train_batch_size=settings["batch_size"], max_length=4096,
                       lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=seed)
    optimizer = make_optimizer(model, config)

    def loss_fn(model, batch):
        inputs, targets, mask = collate_sft(batch, config.max_length, pad_id, False, True)  # padded to the longest
        return sft_loss(model, inputs, targets, mask), int(np.sum(targets != IGNORE_INDEX))

    model.train()
    result = train(model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size), config,
                   optimizer=optimizer, stage="peft-real", run_config=config.to_dict())
    model.eval()
    return result, optimizer


def seeds_for(method: str, settings: dict) -> int:
    return settings["seeds"] if method in settings["key_methods"] else min(settings["other_seeds"], settings["seeds"])


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    # the settings that decide one run's result; the learning rate is named in each run's key instead (a changed
    # rate re-runs only its own family), and which methods and seeds run only adds or drops sub-runs
    fingerprint = settings_fingerprint({key: value for key, value in s.items() if key not in SCHEDULE_SETTINGS})
    test = context_examples("test", s["n_test"], seed=0)
    loaded: dict = {}

    def model_and_tokenizer():
        """The base model and tokenizer, loaded on first use (a re-run that keeps every sub-run loads nothing)."""
        if not loaded:
            started = time.perf_counter()
            loaded["base"], loaded["tokenizer"] = load_base(s["model"], s["tiny_model"])
            loaded["base"].requires_grad_(False)
            lab.log(f"loaded {s['model']} ({loaded['base'].config.n_layer} layers) in "
                    f"{time.perf_counter() - started:.1f} s")
        return loaded["base"], loaded["tokenizer"]

    def untuned_run() -> dict:
        base, tokenizer = model_and_tokenizer()
        return dict(evaluate(base, tokenizer, test, s["max_new_tokens"]), n_layer=base.config.n_layer,
                    total_params=int(sum(p.size for p in base.parameters())))

    untuned = lab.sub_run(f"untuned {fingerprint}", untuned_run)
    if "total_params" not in untuned:  # kept from a version that did not record the sizes
        base = model_and_tokenizer()[0]
        untuned = dict(untuned, n_layer=base.config.n_layer, total_params=int(sum(p.size for p in base.parameters())))
    total_params = untuned["total_params"]
    lab.log(f"untuned accuracy {untuned['accuracy']:.3f}")

    def one_run(method: str, seed: int) -> dict:
        base, tokenizer = model_and_tokenizer()
        pad_id = padding_id(tokenizer)
        model = copy.deepcopy(base)
        model.requires_grad_(True)
        config = peft_config(method, s)
        if config is not None:
            model = get_peft_model(model, config, rng=np.random.default_rng(seed))
        trainable = int(sum(p.size for p in model.parameters() if p.requires_grad))
        encoded = [encode(tokenizer, e) for e in context_examples("train", s["n_train"], seed)]
        learning_rate = s["lr"][family(method)]
        release_free_memory()
        rss_before = current_rss_bytes()  # the frozen base and this run's copy of the weights are in already
        with PeakRSS() as memory:
            train_started = time.perf_counter()
            result, optimizer = fine_tune(model, encoded, pad_id, s, learning_rate, seed)
            train_seconds = time.perf_counter() - train_started
            state_bytes = optimizer_state_bytes(optimizer)
            del optimizer
        eval_started = time.perf_counter()
        evaluation = evaluate(model, tokenizer, test, s["max_new_tokens"])
        losses = result.losses()
        return {"method": method, "seed": seed, "trainable_params": trainable, "learning_rate": learning_rate,
                "optimizer_bytes": state_bytes, "peak_rss_bytes": memory.peak,
                "rss_above_start_bytes": memory.peak - rss_before, "train_seconds": train_seconds,
                "seconds_per_step": train_seconds / max(result.step, 1), "steps": result.step,
                "eval_seconds": time.perf_counter() - eval_started,
                "train_loss": float(np.mean(losses[-4:])) if losses else float("nan"),
                "first_loss": float(losses[0]) if losses else float("nan"),
                "accuracy": evaluation["accuracy"], "correct": evaluation["correct"], "exact": evaluation["exact"],
                "examples": evaluation["examples"], "load_average": os.getloadavg()[0]}

    runs: dict[str, list[dict]] = {method: [] for method in s["methods"]}
    for seed in range(s["seeds"]):  # seed-major: an interrupted run still has every method once
        for method in s["methods"]:
            if seed >= seeds_for(method, s):
                continue
            key = f"{method} seed={seed} lr={s['lr'][family(method)]:g} {fingerprint}"
            row = lab.sub_run(key, lambda method=method, seed=seed: one_run(method, seed))
            runs[method].append(row)
            lab.log(f"{method} seed {seed}: accuracy {row['accuracy']:.3f}, loss {row['first_loss']:.2f} -> "
                    f"{row['train_loss']:.2f}, {row['trainable_params']:,} trainable, "
                    f"{row['seconds_per_step']:.1f} s/step, peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB")
    report(lab, untuned["n_layer"], total_params, untuned, runs, len(test))


# ------------------------------------------------------------------ the report
def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB" if value >= 2**20 else f"{value / 2**10:,.1f} KiB"


def summarise(runs: dict, total_params: int) -> dict:
    """Per method: mean ± s.e. over seeds of accuracy, loss, time and memory."""
    table = {}
    for method, rows in runs.items():
        if not rows:
            continue
        accuracy, accuracy_se = mean_and_stderr([r["accuracy"] for r in rows])
        table[method] = {
            "seeds": len(rows), "accuracy": accuracy, "accuracy_se": accuracy_se,
            "accuracy_per_seed": [r["accuracy"] for r in rows],
            "trainable_params": rows[0]["trainable_params"], "fraction": rows[0]["trainable_params"] / total_params,
            "optimizer_bytes": rows[0]["optimizer_bytes"], "learning_rate": rows[0]["learning_rate"],
            "train_loss": float(np.mean([r["train_loss"] for r in rows])),
            "first_loss": float(np.mean([r["first_loss"] for r in rows])),
            "seconds_per_step": mean_and_stderr([r["seconds_per_step"] for r in rows]),
            "train_seconds": mean_and_stderr([r["train_seconds"] for r in rows]),
            "peak_rss_bytes": float(np.max([r["peak_rss_bytes"] for r in rows])),
            "rss_above_start_bytes": mean_and_stderr([r["rss_above_start_bytes"] for r in rows]),
            "eval_seconds": float(np.mean([r["eval_seconds"] for r in rows])),
            "load_average": float(np.mean([r["load_average"] for r in rows])),
        }
    return table


def plot_results(table: dict, untuned: float, path) -> None:
    """Left: held-out accuracy (± s.e. over seeds) against trainable parameters (log x). Right: seconds per step
    and memory added by the run (bars, ± s.e.)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.6))
    for index, (method, row) in enumerate(table.items()):
        marker = "s" if method == "full" else ("o" if method.startswith("lora") else "^")
        left.errorbar(row["trainable_params"], row["accuracy"], yerr=row["accuracy_se"], fmt=marker, capsize=3,
                      color=f"C{index % 10}", label=f"{method} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})")
    left.axhline(untuned, color="grey", linestyle=":", label="untuned SmolLM2")
    if "full" in table:
        left.axhline(ACCURACY_SHARE * table["full"]["accuracy"], color="C0", linestyle="--", alpha=0.5,
                     label="90% of full fine-tuning")
        left.axvline(PARAM_SHARE * table["full"]["trainable_params"], color="C0", linestyle="-.", alpha=0.5,
                     label="5% of full's parameters")
    left.set_xscale("log")
    left.set_xlabel("trainable parameters (log scale)")
    left.set_ylabel("held-out accuracy (tinyworld grader)")
    left.set_title("Accuracy against trainable parameters")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    names = list(table)
    positions = np.arange(len(names))
    step_means = [table[m]["seconds_per_step"][0] for m in names]
    step_errors = [table[m]["seconds_per_step"][1] for m in names]
    right.bar(positions - 0.2, step_means, 0.4, yerr=step_errors, capsize=2, color="C1", label="seconds per step")
    right.set_ylabel("seconds per training step", color="C1")
    memory = right.twinx()
    memory.bar(positions + 0.2, [table[m]["rss_above_start_bytes"][0] / 2**20 for m in names], 0.4,
               yerr=[table[m]["rss_above_start_bytes"][1] / 2**20 for m in names], capsize=2, color="C2",
               label="peak RSS above the run's start (MiB)")
    memory.plot(positions + 0.2, [table[m]["optimizer_bytes"] / 2**20 for m in names], "k_", markersize=14,
                label="optimizer state (MiB)")
    memory.set_ylabel("MiB")
    right.set_xticks(positions)
    right.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    right.set_title("Cost per method")
    lines, labels = right.get_legend_handles_labels()
    more_lines, more_labels = memory.get_legend_handles_labels()
    right.legend(lines + more_lines, labels + more_labels, fontsize=7, loc="upper right")
    figure.tight_layout()
    save_figure(figure, path)


def report(lab: LabRun, n_layer: int, total_params: int, untuned: dict, runs: dict, n_test: int) -> None:
    s = lab.settings
    table = summarise(runs, total_params)
    plot_results(table, untuned["accuracy"], lab.path("peft_real.png"))
    rows = []
    for method, row in table.items():
        rows.append([method, describe(method, s), f"{row['learning_rate']:g}", f"{row['trainable_params']:,}",
                     f"{100 * row['fraction']:.3g}%", mib(row["optimizer_bytes"]),
                     f"{row['accuracy']:.3f} ± {row['accuracy_se']:.3f}", row["seeds"],
                     f"{row['first_loss']:.2f} -> {row['train_loss']:.2f}",
                     f"{row['seconds_per_step'][0]:.1f}", f"{row['train_seconds'][0]:.0f}", f"{row['load_average']:.1f}",
                     mib(row["rss_above_start_bytes"][0]), mib(row["peak_rss_bytes"])])
    verdict, verdict_text = None, "LoRA r=16 vs full fine-tuning: not both measured."
    closed_forms = {}
    if "full" in table:
        for method in ("lora_r16", "lora_r16_all"):
            if method not in table:
                continue
            v = claim_verdict(table["full"]["accuracy_per_seed"], table[method]["accuracy_per_seed"],
                              table["full"]["trainable_params"], table[method]["trainable_params"])
            closed_forms[method] = v
        if "lora_r16" in closed_forms:
            verdict = closed_forms["lora_r16"]
    sentences_out = []
    for method, v in closed_forms.items():
        share = (f"{100 * v['accuracy_ratio']:.0f}% of its accuracy" if np.isfinite(v["accuracy_ratio"])
                 else "no accuracy ratio (full fine-tuning scored 0)")
        answer = "reached" if v["met"] else "did not reach"
        noise = ("" if v["settled"] else " Not settled: moving both means two standard errors against (or in "
                 "favour of) LoRA changes the answer, so more seeds or test questions could change it.")
        sentences_out.append(
            f"**{describe(method, s)} {answer} the claim** (>= {100 * ACCURACY_SHARE:.0f}% of full fine-tuning's "
            f"accuracy with < {100 * PARAM_SHARE:.0f}% of its trainable parameters): {v['lora_accuracy']:.3f} ± "
            f"{v['lora_se']:.3f} against {v['full_accuracy']:.3f} ± {v['full_se']:.3f} ({share}) with "
            f"{100 * v['param_ratio']:.2f}% of the parameters, over {table[method]['seeds']} seed(s).{noise}")
    if sentences_out:
        verdict_text = "\n\n".join(sentences_out)
    best = max(table, key=lambda m: table[m]["accuracy"]) if table else None
    fewer = [m for m in table if table[m]["seeds"] < s["seeds"]]
    seeds_text = (f"{', '.join(m for m in table if m not in fewer)} ran {s['seeds']} seed(s); "
                  + (f"{', '.join(fewer)} {s['other_seeds']} (the budget: see the module docstring)." if fewer
                     else "every method ran every seed."))
    model = (f"SmolLM2-135M-Instruct ({n_layer} layers, {total_params:,} parameters, float32 from the Q4_1 GGUF)"
             if not s["tiny_model"] else
             f"A random model of SmolLM2's layout and vocabulary ({n_layer} layers, {total_params:,} parameters: the "
             f"tiny preset checks the machinery, its numbers mean nothing)")
    setup = (f"{model}. Each run: {s['n_train']} training examples drawn with its seed, batch "
             f"{s['batch_size']}, {s['max_steps']} steps of AdamW (constant lr, clip 1.0, no decay), loss on the "
             f"assistant turn; then {n_test} held-out questions (people and towns never seen in training) answered "
             f"greedily, up to {s['max_new_tokens']} tokens, graded by tinyworld.grade. {seeds_text} Accuracy is the "
             f"mean over seeds ± its standard error over seeds (0 for one seed; one question is "
             f"{1 / max(n_test, 1):.3f}). Memory: optimizer state measured from AdamW's arrays; RSS sampled every "
             f"20 ms, 'added' = the run's peak minus the process's RSS when it started (the model copy, gradients, "
             f"optimizer state, activations); the process also holds the frozen base for the next runs. Seconds per "
             f"step depend on the machine's load (the 'load' column: the 1-minute load average at the run's end, "
             f"2 cores); compare them only between runs at similar load. Mean load average during the runs: "
             f"{np.mean([r['load_average'] for r in table.values()]) if table else float('nan'):.1f}.")
    near, far = [], []
    if "full" in table and table["full"]["accuracy"] > 0:
        for method, row in table.items():
            if method != "full":
                share = row["accuracy"] / table["full"]["accuracy"]
                (near if share >= ACCURACY_SHARE else far).append(f"{method} {100 * share:.0f}%")
    shares = ((f"Share of full fine-tuning's mean accuracy, at or above {100 * ACCURACY_SHARE:.0f}%: "
               f"{', '.join(near) or 'none'}; below: {', '.join(far) or 'none'} (methods with one seed: one "
               f"draw of the training data, read differences of a few questions as noise). ") if near or far else "")
    shows = (f"The untuned model answers {untuned['accuracy']:.3f} of the held-out questions in tinyworld's format. "
             + (f"Highest accuracy: {best} ({table[best]['accuracy']:.3f}). " if best else "") + shares
             + verdict_text.replace("**", "") + " Where the numbers contradict the chapter, read them as measured at "
             "this budget (tens of steps) and on this task.")
    example_lines = []
    for method, rows_ in runs.items():
        if rows_:
            e = rows_[0]["examples"][0]
            example_lines.append(f"- {method}: {e['question']!r} -> {e['answer']!r} (reference {e['reference']!r})")
    sections = [
        ("Question", f"Does LoRA r=16 reach >= 90% of full fine-tuning's held-out accuracy with < 5% of its trainable "
                     f"parameters on a real pretrained model, and what do the other PEFT methods cost and reach? "
                     f"(The chapter: \"{CLAIM}\".)"),
        ("Setup", setup),
        ("Results", markdown_table(["method", "setting", "lr", "trainable params", "% of model", "optimizer state",
                                    "held-out accuracy ± s.e.", "seeds", "train loss first -> last", "s/step",
                                    "train s", "load", "RSS added", "peak RSS"], rows)
         + f"\n\nUntuned SmolLM2: {untuned['accuracy']:.3f}.\n\n![accuracy and cost](peft_real.png)"),
        ("Verdict", verdict_text),
        ("Answers (seed 0, first held-out question)", "\n".join(example_lines)),
        ("What it shows", shows),
    ]
    lab.write_report("PEFT on a real base: SmolLM2-135M, full fine-tuning vs LoRA, adapters, prompt, prefix, IA3",
                     sections, {"untuned": untuned, "methods": table, "runs": runs, "verdicts": closed_forms,
                                "total_params": total_params, "n_test": n_test})
