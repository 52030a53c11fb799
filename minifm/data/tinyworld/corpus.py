"""Pre-training documents about a tinyworld, in three languages, with optional web-like noise.

A clean document is 3 or more paragraphs (one paragraph per line, >= 55 words in all) drawn
from five paragraph kinds:

    person      3-5 facts about one person, in random order and template variants; after the
                first sentence the name is replaced by a pronoun half of the time
    town        how many people live in a town and who, plus a fact or two about a resident
    census      how many people keep an animal / have a job, and who
    arithmetic  two people's pets and their total, or "if X gets k more ..., X will have n ..."
    glossary    one word in all three languages ("The word cat is gato in Spanish and ...")

Each document is in one language, drawn from the `languages` mix. With probability `noise` a
document slot is filled instead by one of the NOISE_KINDS, the kinds of junk a web crawl holds
and the curation pipeline (minifm.data.quality, minifm.data.dedup) is meant to remove:

    navigation       menu bars "Home | News | ..." and a copyright footer
    cookie_notice    a clean document with a cookie/JavaScript notice appended
    exact_duplicate  a verbatim copy of an earlier clean document
    near_duplicate   an earlier clean document with one word changed
    gibberish        random syllable strings with no function words
    keyword_spam     a handful of shopping keywords repeated
    markup           HTML/CSS/JavaScript fragments with tags and curly braces
    bullet_list      a menu rendered as bullet lines
    teaser           lines cut off with "..." and "Read more..."
    short            a one-line page ("Page not found.")

Randomness: `random.Random(seed)`; the same (world, seed, languages, noise, size) gives the same
documents. Simplification: noise other than cookie notices and duplicates is in English only.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from minifm.data.tinyworld import lexicon as lx
from minifm.data.tinyworld import sentences as sx
from minifm.data.tinyworld.world import FACT_KINDS, World, default_world

DEFAULT_LANGUAGES = {"en": 0.8, "es": 0.12, "de": 0.08}
NOISE_KINDS = ("navigation", "cookie_notice", "exact_duplicate", "near_duplicate", "gibberish",
               "keyword_spam", "markup", "bullet_list", "teaser", "short")
PARAGRAPH_KINDS = ("person", "town", "census", "arithmetic", "glossary")
PARAGRAPH_WEIGHTS = (0.40, 0.15, 0.15, 0.15, 0.15)
MIN_DOCUMENT_WORDS = 55


@dataclass(frozen=True)
class Document:
    text: str
    language: str   # "en", "es", "de"
    kind: str       # "clean" or one of NOISE_KINDS


# ------------------------------------------------------------------ clean paragraphs
class VariantPicker:
    """Chooses template variants, preferring ones not yet used in the current document, so a
    document does not repeat the same template (which Gopher's n-gram rules would flag)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[tuple[str, str, int]] = set()

    def pick(self, kind: str, language: str, n_variants: int) -> int:
        fresh = [v for v in range(n_variants) if (kind, language, v) not in self.used]
        variant = self.rng.choice(fresh or range(n_variants))
        self.used.add((kind, language, variant))
        return variant


def person_paragraph(world: World, rng: random.Random, language: str, picker: VariantPicker) -> str:
    person = rng.choice(world.people)
    kinds = rng.sample(FACT_KINDS, rng.randint(3, 5))
    out = []
    for position, kind in enumerate(kinds):
        variant = picker.pick(kind, language, sx.FACT_VARIANTS[kind][language])
        out.append(sx.fact_sentence(person, kind, language, variant, pronoun=position > 0 and rng.random() < 0.5))
    return " ".join(out)


def town_paragraph(world: World, rng: random.Random, language: str, picker: VariantPicker) -> str:
    town = rng.choice(world.towns)
    residents = world.residents(town)
    names = [p.name for p in residents]
    out = [sx.with_names(sx.town_count_sentence(town, len(names), language), names, language)]
    for person in rng.sample(residents, min(len(residents), rng.randint(1, 2))):
        for kind in rng.sample(("job", "pets", "colour", "object"), rng.randint(1, 2)):
            out.append(sx.fact_sentence(person, kind, language, picker.pick(kind, language, sx.FACT_VARIANTS[kind][language])))
    return " ".join(out)


def census_paragraph(world: World, rng: random.Random, language: str, picker: VariantPicker) -> str:
    if rng.random() < 0.5:
        animal = rng.choice(world.animals)
        names = [p.name for p in world.owners(animal)]
        first = sx.with_names(sx.animal_owner_count_sentence(animal, len(names), language), names, language)
    else:
        job = rng.choice(world.jobs)
        names = [p.name for p in world.workers(job)]
        first = sx.with_names(sx.job_count_sentence(job, len(names), language), names, language)
    person = rng.choice(world.people)
    kind = rng.choice(("pets", "job"))
    return first + " " + sx.fact_sentence(person, kind, language, picker.pick(kind, language, sx.FACT_VARIANTS[kind][language]))


def arithmetic_paragraph(world: World, rng: random.Random, language: str, picker: VariantPicker) -> str:
    if rng.random() < 0.5:
        a, b = rng.sample(world.people, 2)
        return " ".join((sx.fact_sentence(a, "pets", language), sx.fact_sentence(b, "pets", language, 1),
                         sx.together_sentence(a, b, language)))
    person = rng.choice(world.people)
    extra = rng.randint(1, 5)
    return sx.fact_sentence(person, "pets", language) + " " + sx.gets_more_sentence(person, extra, language)


def glossary_paragraph(world: World, rng: random.Random, language: str, picker: VariantPicker) -> str:
    entries = rng.sample(sx.vocabulary(), 2)
    variants = rng.sample(range(sx.GLOSSARY_VARIANTS), 2)
    return " ".join(sx.glossary_sentence(words, language, v) for (_, words), v in zip(entries, variants))


PARAGRAPH_BUILDERS = {"person": person_paragraph, "town": town_paragraph, "census": census_paragraph,
                      "arithmetic": arithmetic_paragraph, "glossary": glossary_paragraph}
MAX_PARAGRAPHS_OF_KIND = {"person": 3, "town": 1, "census": 1, "arithmetic": 1, "glossary": 1}


def clean_document(world: World, rng: random.Random, language: str) -> str:
    """3+ paragraphs, one per line, at least MIN_DOCUMENT_WORDS words; at most
    MAX_PARAGRAPHS_OF_KIND of each paragraph kind and template variants not repeated if avoidable."""
    target_words = rng.randint(MIN_DOCUMENT_WORDS, 130)
    picker = VariantPicker(rng)
    paragraphs: list[str] = []
    used = dict.fromkeys(PARAGRAPH_KINDS, 0)
    n_words = 0
    while n_words < target_words or len(paragraphs) < 3:
        available = [k for k in PARAGRAPH_KINDS if used[k] < MAX_PARAGRAPHS_OF_KIND[k]]
        if not available:
            break
        weights = [PARAGRAPH_WEIGHTS[PARAGRAPH_KINDS.index(k)] for k in available]
        kind = rng.choices(available, weights)[0]
        used[kind] += 1
        paragraph = PARAGRAPH_BUILDERS[kind](world, rng, language, picker)
        paragraphs.append(paragraph)
        n_words += len(paragraph.split())
    return "\n".join(paragraphs)


# ------------------------------------------------------------------ noise
NAV_ITEMS = ("Home", "News", "Pets", "Towns", "Shop", "Blog", "About us", "Contact", "Login", "Register",
             "Search", "FAQ", "Sitemap", "Careers", "Help")
COOKIE_NOTICES = (
    "This website uses cookies to improve your experience. By continuing to browse, you accept our cookie policy.",
    "We use cookies and similar technologies. Please enable JavaScript to view this page correctly.",
    "By using this site you agree to our terms of use and privacy policy. Accept all cookies?",
)
SPAM_WORDS = ("cheap", "best", "buy", "cats", "dogs", "online", "free", "deal", "sale", "pets", "top", "price")
SYLLABLES = ("zor", "qua", "blix", "tren", "vok", "ul", "spr", "ek", "fimm", "dro", "xa", "plo", "grk", "wen", "yst")


def navigation_page(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        lines.append(" | ".join(rng.sample(NAV_ITEMS, rng.randint(4, 8))))
    lines.append(f"Copyright {rng.randint(2001, 2024)} Tinyworld Media. All rights reserved.")
    return "\n".join(lines)


def gibberish_page(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(8, 20))]
        lines.append(lx.capitalise(" ".join(words)) + rng.choice((".", "", "!", ".")))
    return "\n".join(lines)


def keyword_spam_page(rng: random.Random) -> str:
    vocabulary = rng.sample(SPAM_WORDS, 4)
    lines = []
    for _ in range(rng.randint(3, 5)):
        lines.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(12, 25))) + ".")
    return "\n".join(lines)


def markup_page(rng: random.Random, world: World) -> str:
    lines = []
    for _ in range(rng.randint(3, 5)):
        person = rng.choice(world.people)
        town = person.town.lower()
        lines += [
            f'<div class="nav"><a href="/{town}">{person.town}</a> <a href="/pets">Pets</a></div>',
            f".menu {{ color: {rng.choice(list(lx.COLOURS))}; margin: {rng.randint(0, 20)}px; }}",
            f'function openMenu() {{ document.getElementById("{town}").style.display = "block"; }}',
            f"<p>{sx.fact_sentence(person, 'town', 'en')}</p>",
        ]
    return "\n".join(lines)


def bullet_list_page(rng: random.Random, world: World) -> str:
    bullet = rng.choice(("•", "-", "*", "·"))
    items = [f"{bullet} {item}" for item in rng.sample(NAV_ITEMS, rng.randint(5, 8))]
    items += [f"{bullet} Photos of the {lx.animal_word(a, 'en', True)} in {t}"
              for a, t in zip(rng.sample(world.animals, 6), rng.sample(world.towns, 6))]
    return "\n".join(items)


def teaser_page(rng: random.Random, world: World) -> str:
    lines = []
    for _ in range(rng.randint(8, 12)):
        sentence = sx.fact_sentence(rng.choice(world.people), rng.choice(FACT_KINDS), "en", 0)
        words = sentence.split()
        lines.append(" ".join(words[: max(2, len(words) - 1)]) + " and then...")
    lines.append("Read more...")
    return "\n".join(lines)


def short_page(rng: random.Random) -> str:
    return rng.choice(("Page not found.", "Click here to subscribe!", "Loading...", "Sign in to continue.",
                       "Error 404: the page you requested does not exist."))


def near_duplicate_of(text: str, world: World, rng: random.Random) -> str:
    """Replace one word (a name, town or number word if present, else any word) by another."""
    words = text.split(" ")
    replaceable = set(world.by_name) | set(world.towns) | set(lx.NUMBER_WORDS["en"][2:10])
    positions = [i for i, w in enumerate(words) if w.strip(".,:") in replaceable] or list(range(len(words)))
    i = rng.choice(positions)
    core = words[i].strip(".,:")
    pool = (list(world.by_name) if core in world.by_name else world.towns if core in world.towns
            else list(lx.NUMBER_WORDS["en"][2:10]))
    replacement = rng.choice([w for w in pool if w != core] or ["something"])
    words[i] = words[i].replace(core, replacement) if core else replacement
    return " ".join(words)


# ------------------------------------------------------------------ the corpus
def normalised_mix(languages: dict[str, float]) -> tuple[list[str], list[float]]:
    if not isinstance(languages, dict) or not languages:
        raise ValueError(f"languages must be a non-empty dict like {DEFAULT_LANGUAGES}, got {languages!r}")
    names, weights = [], []
    for language, weight in languages.items():
        if language not in lx.LANGUAGES:
            raise ValueError(f"languages: unknown language {language!r}; known: {lx.LANGUAGES}")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"languages[{language!r}] must be a finite weight >= 0, got {weight!r}")
        names.append(language)
        weights.append(float(weight))
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"languages: weights must not all be zero, got {languages!r}")
    return names, [w / total for w in weights]


def generate_documents(size_bytes: int = 1_000_000, seed: int = 0, languages: dict[str, float] | None = None,
                       noise: float = 0.1, world: World | None = None) -> list[Document]:
    """Documents (with their language and kind) totalling at least `size_bytes` UTF-8 bytes."""
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes <= 0:
        raise ValueError(f"size_bytes must be a positive int, got {size_bytes!r}")
    if not isinstance(noise, (int, float)) or not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a probability in [0, 1], got {noise!r}")
    world = default_world() if world is None else world
    names, weights = normalised_mix(DEFAULT_LANGUAGES if languages is None else languages)
    rng = random.Random(seed)
    documents: list[Document] = []
    clean_so_far: list[Document] = []
    total = 0
    while total < size_bytes:
        language = rng.choices(names, weights)[0]
        kind = rng.choice(NOISE_KINDS) if rng.random() < noise else "clean"
        if kind in ("exact_duplicate", "near_duplicate") and not clean_so_far:
            kind = "clean"
        if kind == "clean":
            document = Document(clean_document(world, rng, language), language, "clean")
            clean_so_far.append(document)
        elif kind == "exact_duplicate":
            original = rng.choice(clean_so_far)
            document = Document(original.text, original.language, kind)
        elif kind == "near_duplicate":
            original = rng.choice(clean_so_far)
            document = Document(near_duplicate_of(original.text, world, rng), original.language, kind)
        elif kind == "cookie_notice":
            document = Document(clean_document(world, rng, language) + "\n" + rng.choice(COOKIE_NOTICES), language, kind)
        else:
            text = {
                "navigation": lambda: navigation_page(rng),
                "gibberish": lambda: gibberish_page(rng),
                "keyword_spam": lambda: keyword_spam_page(rng),
                "markup": lambda: markup_page(rng, world),
                "bullet_list": lambda: bullet_list_page(rng, world),
                "teaser": lambda: teaser_page(rng, world),
                "short": lambda: short_page(rng),
            }[kind]()
            document = Document(text, "en", kind)
        documents.append(document)
        total += len(document.text.encode("utf-8"))
    return documents


def generate_corpus(size_bytes: int = 1_000_000, seed: int = 0, languages: dict[str, float] | None = None,
                    noise: float = 0.1, world: World | None = None) -> list[str]:
    """The texts of `generate_documents(...)`: a web-like tinyworld corpus (see module docstring).

    `seed` drives the document sampling; the world is `world` or the default world (seed 0).
    `languages` defaults to {"en": 0.8, "es": 0.12, "de": 0.08}.
    """
    return [d.text for d in generate_documents(size_bytes, seed, languages, noise, world)]


def clean_corpus(size_bytes: int = 1_000_000, seed: int = 0, languages: dict[str, float] | None = None,
                 world: World | None = None) -> list[str]:
    """`generate_corpus` with noise=0: only clean documents."""
    return generate_corpus(size_bytes, seed, languages, 0.0, world)
