"""Instruction data, grader, ground-truth reward and preference pairs for a tinyworld.

Every task is a (prompt, reference answer) pair answerable from the world, with a one-sentence
answer in the canonical template form the pre-training corpus uses. Task families:

    fact         "Where does Mara live?" -> "Mara lives in Tollby."  (town, job, pets, favourite
                 colour, object colour; "How many dogs does Mara have?" -> "Mara has no dogs.")
    counting     "How many people live in Tollby?", "Who lives in Tollby?",
                 "How many people have cats?", "How many bakers are there?"
    arithmetic   "How many animals do Mara and Ida have together?",
                 "If Mara gets two more cats, how many cats will Mara have?"
    translation  "Translate from English to Spanish: cat" -> "gato", and whole canonical fact
                 sentences between every ordered pair of English, Spanish, German

A prompt whose answer would be ambiguous (e.g. English "singer" -> Spanish cantante) is dropped.
The split is fixed by the prompt text: crc32(prompt) % 100 < 20 is "test", the rest "train",
so the splits are disjoint and do not depend on `seed` (which only orders and subsamples).

Instruction completions come in a style mix, as real SFT data does (STYLE_MIX, deterministic by
seed): mostly the plain reference answer, some with a polite prefix ("Sure! <answer>") and some
with a short filler sentence ("Let me see. <answer>", "<answer> That is all."). Every style is
graded correct; they differ only in ground-truth reward, so an SFT model samples every style and
preference tuning has a signal it can find (prefer the polite form, drop the filler).

Normalisation (grade and reward): Unicode NFKC, casefold, runs of whitespace -> one space,
strip, then strip trailing " .!?". A leading polite marker from POLITE_PREFIXES ("Sure!",
"Of course!", "Certainly!", "Happy to help!") is removed before comparing. grade() judges the
fact: the response (minus the polite marker) is correct when it, or one of its sentences,
normalises to the reference answer -- the same test the ground-truth reward uses.

Ground-truth reward, for any string `response` (reference = reference_answer(prompt)):

    body     = response without a leading polite marker; polite = 1 if one was removed
    correct  = normalise(body) == normalise(reference), or one sentence of body (split after
               . ! ?) normalises to the reference
    extra    = max(0, words(body) - words(reference))
    rude     = 1 if body contains a RUDE_MARKERS phrase (whole words, case-insensitive)
    reward   = (+1 if correct else -1) + 0.2 * polite - min(0.5, 0.05 * extra) - 0.5 * rude

so reward is in [-2.0, 1.2]; every correct answer (>= 0.0) beats every wrong one (<= -0.8); a
plain correct answer scores 1.0, "Sure! <answer>" 1.2 and "Let me see. <answer>" 0.85; with the
default STYLE_MIX an SFT model that copies its data's styles sits near the plain score, and
preference tuning can raise the mean reward by up to ~0.2 by shifting toward the polite style.
Known loophole (documented, not hidden): a wrong sentence followed by the right one counts as
correct (for grade() too), paying only the length penalty.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
import unicodedata
import zlib
from dataclasses import dataclass

from minifm.data.tinyworld import lexicon as lx
from minifm.data.tinyworld import sentences as sx
from minifm.data.tinyworld.world import FACT_KINDS, Person, World, default_world

TEST_PERCENT = 20
POLITE_PREFIXES = ("Sure!", "Of course!", "Certainly!", "Happy to help!")
RUDE_MARKERS = ("obviously", "stupid", "dumb", "idiot", "ugh", "whatever", "figure it out yourself")
POLITENESS_BONUS = 0.2
LENGTH_PENALTY_PER_WORD = 0.05
MAX_LENGTH_PENALTY = 0.5
RUDENESS_PENALTY = 0.5
VERBOSE_OPENERS = ("Let me think about this question carefully.", "That is a good question and I can answer it.",
                   "I looked at everything I know about this world.")
VERBOSE_CLOSERS = ("I hope that this long answer is useful to you in some way.",
                   "Please let me know if you have any other questions about it.",
                   "There is not much more that I can say about this.")
RUDE_TEMPLATES = ("Ugh. {answer}", "{answer} Obviously.", "Whatever. {answer}", "{answer} Figure it out yourself next time.")
REJECTED_KINDS = ("wrong_fact", "verbose", "rude", "wrong_language")
# the instruction data's completion styles and their default shares (see instructions())
STYLE_MIX = {"plain": 0.6, "polite": 0.2, "verbose": 0.2}
SFT_FILLER_TEMPLATES = ("Let me see. {answer}", "{answer} That is all.")   # 3 extra words: -0.15


@dataclass(frozen=True)
class Task:
    prompt: str
    answer: str
    family: str                       # "fact", "counting", "arithmetic", "translation"
    wrong_answers: tuple[str, ...]    # plausible but wrong answers (same form, other value)
    other_language_answers: tuple[str, ...] = ()   # the right content in a language not asked for

    @property
    def split(self) -> str:
        return "test" if zlib.crc32(self.prompt.encode("utf-8")) % 100 < TEST_PERCENT else "train"


# ------------------------------------------------------------------ building the task table
def fact_alternatives(world: World, person: Person, kind: str) -> list[Person]:
    """Copies of `person` with the fact of `kind` changed to each other possible value."""
    field_values = {
        "town": ("town", world.towns), "job": ("job", world.jobs), "colour": ("colour", world.colours),
        "object": ("obj_colour", world.colours), "pets": ("count", range(1, 10)),
    }[kind]
    field, values = field_values
    current = getattr(person, field)
    out = [dataclasses.replace(person, **{field: v}) for v in values if v != current]
    if kind == "pets":
        out += [dataclasses.replace(person, animal=a) for a in world.animals if a != person.animal]
    return out


def fact_tasks(world: World) -> list[Task]:
    tasks = []
    for index, p in enumerate(world.people):
        questions = {
            "town": f"Where does {p.name} live?",
            "job": f"What is {p.name}'s job?",
            "pets": f"What pets does {p.name} have?",
            "colour": f"What is {p.name}'s favourite colour?",
            "object": f"What colour is {p.name}'s {p.obj}?",
        }
        for kind, question in questions.items():
            alternatives = fact_alternatives(world, p, kind)
            wrong = tuple(sx.fact_sentence(q, kind, "en") for q in alternatives)
            other = tuple(sx.fact_sentence(p, kind, lang) for lang in ("es", "de"))
            tasks.append(Task(question, sx.fact_sentence(p, kind, "en"), "fact", wrong, other))
        plural = lx.animal_word(p.animal, "en", True)
        tasks.append(Task(f"How many {plural} does {p.name} have?", sx.fact_sentence(p, "pets", "en"), "counting",
                          tuple(sx.fact_sentence(dataclasses.replace(p, count=c), "pets", "en")
                                for c in range(1, 10) if c != p.count),
                          tuple(sx.fact_sentence(p, "pets", lang) for lang in ("es", "de"))))
        other_animal = world.animals[(world.animals.index(p.animal) + 1 + index % 7) % len(world.animals)]
        zero = dataclasses.replace(p, animal=other_animal, count=0)
        tasks.append(Task(f"How many {lx.animal_word(other_animal, 'en', True)} does {p.name} have?",
                          sx.fact_sentence(zero, "pets", "en"), "counting",
                          tuple(sx.fact_sentence(dataclasses.replace(zero, count=c), "pets", "en") for c in range(1, 10))))
    return tasks


def counting_tasks(world: World) -> list[Task]:
    tasks = []
    n = len(world.people)
    for town in world.towns:
        names = [p.name for p in world.residents(town)]
        tasks.append(Task(f"How many people live in {town}?", sx.town_count_sentence(town, len(names), "en"), "counting",
                          tuple(sx.town_count_sentence(town, c, "en") for c in range(1, 10) if c != len(names)),
                          tuple(sx.town_count_sentence(town, len(names), lang) for lang in ("es", "de"))))
        tasks.append(Task(f"Who lives in {town}?", sx.town_residents_sentence(town, names, "en"), "counting",
                          tuple(sx.town_residents_sentence(town, [p.name for p in world.residents(other)], "en")
                                for other in world.towns if other != town),
                          tuple(sx.town_residents_sentence(town, names, lang) for lang in ("es", "de"))))
    for animal in world.animals:
        k = len(world.owners(animal))
        plural = lx.animal_word(animal, "en", True)
        tasks.append(Task(f"How many people have {plural}?", sx.animal_owner_count_sentence(animal, k, "en"), "counting",
                          tuple(sx.animal_owner_count_sentence(animal, c, "en") for c in range(0, min(n, 10)) if c != k),
                          tuple(sx.animal_owner_count_sentence(animal, k, lang) for lang in ("es", "de"))))
    for job in world.jobs:
        k = len(world.workers(job))
        plural = lx.job_word(job, "en", plural=True)
        tasks.append(Task(f"How many {plural} are there?", sx.job_count_sentence(job, k, "en"), "counting",
                          tuple(sx.job_count_sentence(job, c, "en") for c in range(0, min(n, 10)) if c != k),
                          tuple(sx.job_count_sentence(job, k, lang) for lang in ("es", "de"))))
    return tasks


def arithmetic_tasks(world: World) -> list[Task]:
    tasks = []
    people = world.people
    for i, a in enumerate(people):
        for b in people[i + 1:]:
            total = a.count + b.count
            wrong = tuple(f"{a.name} and {b.name} have {lx.number_word(t, 'en')} animals together."
                          for t in range(2, 19) if t != total)
            tasks.append(Task(f"How many animals do {a.name} and {b.name} have together?",
                              sx.together_sentence(a, b, "en"), "arithmetic", wrong,
                              tuple(sx.together_sentence(a, b, lang) for lang in ("es", "de"))))
        for extra in range(1, 6):
            more = f"{lx.number_word(extra, 'en')} more {lx.animal_word(a.animal, 'en', extra != 1)}"
            plural = lx.animal_word(a.animal, "en", True)
            wrong = tuple(sx.will_have_sentence(dataclasses.replace(a, count=c), 0) for c in range(1, 15)
                          if c != a.count + extra)
            tasks.append(Task(f"If {a.name} gets {more}, how many {plural} will {a.name} have?",
                              sx.will_have_sentence(a, extra), "arithmetic", wrong))
    return tasks


def translation_tasks(world: World) -> list[Task]:
    tasks = []
    vocabulary = sx.vocabulary()
    by_category: dict[str, list[dict[str, str]]] = {}
    for category, words in vocabulary:
        by_category.setdefault(category, []).append(words)
    for category, words in vocabulary:
        for src in lx.LANGUAGES:
            for tgt in lx.LANGUAGES:
                if src == tgt or (category == "job_f" and src == "en"):   # English job nouns are masculine here
                    continue
                third = next(lang for lang in lx.LANGUAGES if lang not in (src, tgt))
                prompt = f"Translate from {lx.LANGUAGE_NAMES[src]} to {lx.LANGUAGE_NAMES[tgt]}: {words[src]}"
                wrong = tuple(w[tgt] for w in by_category[category] if w[tgt].casefold() != words[tgt].casefold())
                other = (words[third],) if words[third].casefold() != words[tgt].casefold() else ()
                tasks.append(Task(prompt, words[tgt], "translation", wrong, other))
    for p in world.people:
        for kind in FACT_KINDS:
            alternatives = fact_alternatives(world, p, kind)
            for src in lx.LANGUAGES:
                for tgt in lx.LANGUAGES:
                    if src == tgt:
                        continue
                    third = next(lang for lang in lx.LANGUAGES if lang not in (src, tgt))
                    prompt = (f"Translate from {lx.LANGUAGE_NAMES[src]} to {lx.LANGUAGE_NAMES[tgt]}: "
                              f"{sx.fact_sentence(p, kind, src)}")
                    wrong = tuple(sx.fact_sentence(q, kind, tgt) for q in alternatives)
                    tasks.append(Task(prompt, sx.fact_sentence(p, kind, tgt), "translation", wrong,
                                      (sx.fact_sentence(p, kind, third),)))
    return tasks


@functools.lru_cache(maxsize=8)
def task_table(world: World) -> dict[str, Task]:
    """All tasks of `world` keyed by prompt; prompts with conflicting answers are dropped."""
    table: dict[str, Task] = {}
    ambiguous: set[str] = set()
    for task in fact_tasks(world) + counting_tasks(world) + arithmetic_tasks(world) + translation_tasks(world):
        previous = table.get(task.prompt)
        if previous is not None and normalise(previous.answer) != normalise(task.answer):
            ambiguous.add(task.prompt)
        table.setdefault(task.prompt, task)
    for prompt in ambiguous:
        del table[prompt]
    return table


def all_tasks(split: str | None = None, world: World | None = None) -> list[Task]:
    """Every task of `world` (default world) in a fixed order, optionally one split only."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    tasks = list(task_table(default_world() if world is None else world).values())
    return [t for t in tasks if split is None or t.split == split]


def sampled_tasks(split: str, seed: int, n: int | None, world: World | None) -> list[Task]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be None or an int >= 0, got {n!r}")
    pool = all_tasks(split, world)
    rng = random.Random(seed)
    if n is None:
        rng.shuffle(pool)
        return pool
    out: list[Task] = []
    while len(out) < n:           # cycle through fresh shuffles when n exceeds the pool
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


# ------------------------------------------------------------------ public API
def check_style_mix(style_mix) -> dict[str, float]:
    """`style_mix` as {style: share} with shares summing to 1; clear errors for unknown styles or bad shares."""
    if not isinstance(style_mix, dict) or not style_mix:
        raise ValueError(f"style_mix must be a non-empty dict of style -> share, got {style_mix!r}")
    unknown = sorted(set(style_mix) - set(STYLE_MIX))
    if unknown:
        raise ValueError(f"style_mix has unknown styles {unknown}; valid styles are {sorted(STYLE_MIX)}")
    shares = {k: float(v) for k, v in style_mix.items()}
    if any(not (v >= 0.0) or v != v for v in shares.values()) or abs(sum(shares.values()) - 1.0) > 1e-9:
        raise ValueError(f"style_mix shares must be >= 0 and sum to 1, got {style_mix!r}")
    return shares


def styled_completion(answer: str, style: str, rng: random.Random) -> str:
    """`answer` rendered in `style`: "plain" as is, "polite" behind a POLITE_PREFIXES marker, "verbose" with a filler."""
    if style == "plain":
        return answer
    if style == "polite":
        return f"{rng.choice(POLITE_PREFIXES)} {answer}"
    if style == "verbose":
        sentence = answer if answer.endswith((".", "!", "?")) else answer + "."   # "Katze" -> "Katze." before a closer
        return rng.choice(SFT_FILLER_TEMPLATES).format(answer=sentence)
    raise ValueError(f"style must be one of {sorted(STYLE_MIX)}, got {style!r}")


def instructions(split: str = "train", seed: int = 0, n: int | None = None, world: World | None = None,
                 style_mix: dict | None = None) -> list[dict]:
    """[{"prompt": str, "completion": str}] of `split`, shuffled by `seed`.

    n=None returns the whole split once; a larger n cycles through fresh shuffles. Each completion's
    style is drawn from `style_mix` (default STYLE_MIX: 60% plain, 20% polite, 20% verbose filler)
    by a generator seeded with `seed`; {"plain": 1.0} gives the bare reference answers. Every
    style is graded correct by grade().
    """
    shares = check_style_mix(STYLE_MIX if style_mix is None else style_mix)
    styles, weights = list(shares), list(shares.values())
    rng = random.Random(seed + 104729)
    out = []
    for task in sampled_tasks(split, seed, n, world):
        style = rng.choices(styles, weights)[0]
        out.append({"prompt": task.prompt, "completion": styled_completion(task.answer, style, rng)})
    return out


def reference_answer(prompt: str, world: World | None = None) -> str:
    """The reference answer of a tinyworld instruction prompt; ValueError for any other prompt."""
    if not isinstance(prompt, str):
        raise TypeError(f"reference_answer: prompt must be a str, got {type(prompt).__name__}")
    task = task_table(default_world() if world is None else world).get(prompt.strip())
    if task is None:
        raise ValueError(f"reference_answer: {prompt!r} is not a tinyworld instruction prompt")
    return task.answer


def normalise(text: str) -> str:
    """NFKC, casefold, collapse whitespace, strip, strip trailing '.', '!', '?' and spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split()).rstrip(" .!?")


def strip_polite_prefix(response: str) -> tuple[str, bool]:
    """(response without a leading POLITE_PREFIXES marker, whether one was removed)."""
    stripped = response.strip()
    folded = stripped.casefold()
    for prefix in POLITE_PREFIXES:
        if folded.startswith(prefix.casefold()):
            return stripped[len(prefix):].strip(), True
    return stripped, False


def states_reference(body: str, reference: str) -> bool:
    """Whether `body`, or one of its sentences (split after . ! ?), normalises to `reference`."""
    target = normalise(reference)
    return normalise(body) == target or any(normalise(s) == target for s in split_sentences(body))


def grade(prompt: str, response: str, world: World | None = None) -> bool:
    """Whether `response` (minus a polite prefix) states the reference answer: the whole response or one
    of its sentences matches it after normalisation (a filler sentence around the fact is not wrong)."""
    if not isinstance(response, str):
        raise TypeError(f"grade: response must be a str, got {type(response).__name__}")
    body, _ = strip_polite_prefix(response)
    return states_reference(body, reference_answer(prompt, world))


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def is_rude(text: str) -> bool:
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return any(re.search(rf"\b{re.escape(marker)}\b", folded) for marker in RUDE_MARKERS)


def ground_truth_reward(prompt: str, response: str, world: World | None = None) -> float:
    """The public ground-truth reward of `response` to a tinyworld prompt (formula in module docstring)."""
    if not isinstance(response, str):
        raise TypeError(f"ground_truth_reward: response must be a str, got {type(response).__name__}")
    reference = reference_answer(prompt, world)
    body, polite = strip_polite_prefix(response)
    correct = states_reference(body, reference)
    extra_words = max(0, len(body.split()) - len(reference.split()))
    reward = 1.0 if correct else -1.0
    reward += POLITENESS_BONUS * polite
    reward -= min(MAX_LENGTH_PENALTY, LENGTH_PENALTY_PER_WORD * extra_words)
    reward -= RUDENESS_PENALTY * is_rude(body)
    return round(float(reward), 10)   # round away float noise such as 0.44999999999999996


def preferences(split: str = "train", seed: int = 0, n: int | None = None, world: World | None = None) -> list[dict]:
    """[{"prompt", "chosen", "rejected"}] with ground_truth_reward(chosen) > ground_truth_reward(rejected).

    chosen: the reference answer, half the time with a polite prefix ("Sure! ...").
    rejected, one of REJECTED_KINDS drawn at random: a wrong fact of the same form (sometimes
    politely phrased), the right answer padded with filler (half the time the instruction data's
    short filler, half the time long sentences before and after), the right answer with a rude
    remark, or the right content in another language; when chosen is polite, also possibly the
    plain answer (so the pairs compare the polite and plain styles directly).
    """
    rng = random.Random(seed + 7919)
    out = []
    for task in sampled_tasks(split, seed, n, world):
        chosen = task.answer
        if rng.random() < 0.5:
            chosen = f"{rng.choice(POLITE_PREFIXES)} {chosen}"
        kinds = [k for k in REJECTED_KINDS if k != "wrong_language" or task.other_language_answers]
        if chosen != task.answer:
            kinds.append("plain")   # the bare answer loses to its polite form (1.0 < 1.2)
        kind = rng.choice(kinds)
        if kind == "wrong_fact":
            rejected = rng.choice(task.wrong_answers)
            if rng.random() < 0.3:
                rejected = f"{rng.choice(POLITE_PREFIXES)} {rejected}"
        elif kind == "verbose" and rng.random() < 0.5:   # the instruction data's own short filler style
            rejected = styled_completion(task.answer, "verbose", rng)
        elif kind == "verbose":
            rejected = f"{rng.choice(VERBOSE_OPENERS)} {task.answer} {rng.choice(VERBOSE_CLOSERS)}"
        elif kind == "plain":
            rejected = task.answer
        elif kind == "rude":
            rejected = rng.choice(RUDE_TEMPLATES).format(answer=task.answer)
        else:
            rejected = rng.choice(task.other_language_answers)
        out.append({"prompt": task.prompt, "chosen": chosen, "rejected": rejected})
    return out
