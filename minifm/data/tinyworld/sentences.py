"""Sentence templates of tinyworld: one function per kind of statement, in English/Spanish/German.

Every function takes `language` in ("en", "es", "de") and returns one sentence ending in a full
stop. Fact templates come in variants; variant 0 is the canonical sentence that instruction
answers and translation tasks use. `subject` may be a pronoun (the caller decides); templates
that do not start with the subject always use the name.

The functions share one form on purpose (`if language == "en": ...; if language == "es": ...;
German last`): each statement is read in its three languages in one place, and languages differ
in word order and agreement too much for one template with slots.
"""
from __future__ import annotations

from minifm.data.tinyworld import lexicon as lx
from minifm.data.tinyworld.world import Person

# number of variants per fact kind and language (variant 0 = canonical)
FACT_VARIANTS = {
    "town": {"en": 3, "es": 3, "de": 3},
    "job": {"en": 2, "es": 2, "de": 2},
    "pets": {"en": 3, "es": 2, "de": 2},
    "colour": {"en": 3, "es": 3, "de": 2},
    "object": {"en": 3, "es": 2, "de": 2},
}
# variants whose first word is the subject (so a pronoun can stand in for the name)
SUBJECT_FIRST = {
    "town": {"en": (0, 1), "es": (0, 1), "de": (0, 1)},
    "job": {"en": (0, 1), "es": (0, 1), "de": (0, 1)},
    "pets": {"en": (0, 1, 2), "es": (0, 1), "de": (0, 1)},
    "colour": {"en": (1,), "es": (2,), "de": (1,)},
    "object": {"en": (1, 2), "es": (1,), "de": (1,)},
}


def fact_sentence(person: Person, kind: str, language: str, variant: int = 0, pronoun: bool = False) -> str:
    """One sentence stating `person`'s fact of `kind`; a pronoun replaces the name if allowed."""
    name = person.name
    subject = name
    if pronoun and variant in SUBJECT_FIRST[kind][language]:
        subject = lx.capitalise(lx.PRONOUNS[language][person.gender])
    if kind == "town":
        town = person.town
        return {
            "en": (f"{subject} lives in {town}.", f"{subject} has a home in {town}.", f"The home of {name} is in {town}."),
            "es": (f"{subject} vive en {town}.", f"{subject} tiene su casa en {town}.", f"La casa de {name} está en {town}."),
            "de": (f"{subject} wohnt in {town}.", f"{subject} lebt in {town}.", f"Das Zuhause von {name} ist in {town}."),
        }[language][variant]
    if kind == "job":
        job = lx.job_word(person.job, language, person.gender)
        return {
            "en": (f"{subject} is a {job}.", f"{subject} works as a {job}."),
            "es": (f"{subject} es {job}.", f"{subject} trabaja como {job}."),
            "de": (f"{subject} ist {job}.", f"{subject} arbeitet als {job}."),
        }[language][variant]
    if kind == "pets":
        pets = lx.counted_animals(person.animal, person.count, language)
        return {
            "en": (f"{subject} has {pets}.", f"{subject} keeps {pets}.", f"{subject} owns {pets}."),
            "es": (f"{subject} tiene {pets}.", f"{subject} tiene {pets} en casa."),
            "de": (f"{subject} hat {pets}.", f"{subject} hält {pets}."),
        }[language][variant]
    if kind == "colour":
        colour = lx.colour_noun(person.colour, language)
        return {
            "en": (f"{name}'s favourite colour is {colour}.", f"{subject} likes {colour} best.",
                   f"The favourite colour of {name} is {colour}."),
            "es": (f"El color favorito de {name} es el {colour}.", f"A {name} le gusta más el {colour}.",
                   f"{subject} prefiere el {colour}."),
            "de": (f"Die Lieblingsfarbe von {name} ist {colour}.", f"{subject} mag {colour} am liebsten."),
        }[language][variant]
    if kind == "object":
        if language == "en":
            thing = f"{person.obj}"
            coloured = lx.coloured_object_indefinite(person.obj, person.obj_colour, "en")
            return (f"{name}'s {thing} is {lx.colour_word(person.obj_colour, 'en')}.",
                    f"{subject} has {coloured}.", f"{subject} owns {coloured}.")[variant]
        gender = lx.OBJECTS[person.obj][1][1] if language == "es" else "m"
        definite = lx.capitalise(lx.object_with_article(person.obj, language, definite=True))
        colour = lx.colour_word(person.obj_colour, language, gender)
        coloured = lx.coloured_object_indefinite(person.obj, person.obj_colour, language)
        if language == "es":
            return (f"{definite} de {name} es {colour}.", f"{subject} tiene {coloured}.")[variant]
        return (f"{definite} von {name} ist {colour}.", f"{subject} hat {coloured}.")[variant]
    raise ValueError(f"fact_sentence: unknown fact kind {kind!r}")


# ------------------------------------------------------------------ counting statements
def town_count_sentence(town: str, count: int, language: str) -> str:
    """ "Three people live in Tollby." (the answer to "How many people live in Tollby?")."""
    word = lx.number_word(count, language)
    if language == "en":
        return f"One person lives in {town}." if count == 1 else lx.capitalise(f"{word} people live in {town}.")
    if language == "es":
        return f"En {town} vive una persona." if count == 1 else f"En {town} viven {word} personas."
    return f"In {town} wohnt eine Person." if count == 1 else f"In {town} wohnen {word} Personen."


def town_residents_sentence(town: str, names: list[str], language: str) -> str:
    """ "Mara, Ida and Tomas live in Tollby." / "Mara lives in Tollby." """
    listed = lx.join_names(names, language)
    single = len(names) == 1
    if language == "en":
        return f"{listed} {'lives' if single else 'live'} in {town}."
    if language == "es":
        return f"{listed} {'vive' if single else 'viven'} en {town}."
    return f"{listed} {'wohnt' if single else 'wohnen'} in {town}."


def animal_owner_count_sentence(animal: str, count: int, language: str) -> str:
    """ "Three people have cats." / "One person has cats." / "Nobody has cats." """
    plural = lx.animal_word(animal, language, True)
    word = lx.number_word(count, language)
    if language == "en":
        if count == 0:
            return f"Nobody has {plural}."
        return f"One person has {plural}." if count == 1 else lx.capitalise(f"{word} people have {plural}.")
    if language == "es":
        if count == 0:
            return f"Nadie tiene {plural}."
        return f"Una persona tiene {plural}." if count == 1 else lx.capitalise(f"{word} personas tienen {plural}.")
    if count == 0:
        return f"Niemand hat {plural}."
    return f"Eine Person hat {plural}." if count == 1 else lx.capitalise(f"{word} Personen haben {plural}.")


def job_count_sentence(job: str, count: int, language: str) -> str:
    """ "There are two bakers." / "There is one baker." / "There are no bakers." """
    plural = lx.job_word(job, language, plural=True)
    word = lx.number_word(count, language)
    if language == "en":
        if count == 0:
            return f"There are no {plural}."
        return f"There is one {lx.job_word(job, 'en')}." if count == 1 else f"There are {word} {plural}."
    if language == "es":
        if count == 0:
            return f"No hay {plural}."
        return f"Hay una persona que trabaja como {lx.job_word(job, 'es')}." if count == 1 else f"Hay {word} {plural}."
    if count == 0:
        return f"Es gibt keine {plural}."
    return f"Es gibt eine Person, die als {lx.job_word(job, 'de')} arbeitet." if count == 1 else f"Es gibt {word} {plural}."


def with_names(sentence: str, names: list[str], language: str) -> str:
    """Append ": A, B and C" before the full stop (corpus form of a counting sentence)."""
    if not names:
        return sentence
    return sentence[:-1] + ": " + lx.join_names(names, language) + "."


# ------------------------------------------------------------------ arithmetic statements
def together_sentence(a: Person, b: Person, language: str) -> str:
    """ "Mara and Tomas have eleven animals together." """
    total = lx.number_word(a.count + b.count, language)
    if language == "en":
        return f"{a.name} and {b.name} have {total} animals together."
    if language == "es":
        return f"{a.name} y {b.name} tienen {total} animales juntos."
    return f"{a.name} und {b.name} haben zusammen {total} Tiere."


def gets_more_sentence(person: Person, extra: int, language: str) -> str:
    """ "If Mara gets two more cats, Mara will have five cats." (corpus form)."""
    total = lx.counted_animals(person.animal, person.count + extra, language)
    name = person.name
    if language == "en":
        more = f"{lx.number_word(extra, 'en')} more {lx.animal_word(person.animal, 'en', extra != 1)}"
        return f"If {name} gets {more}, {name} will have {total}."
    if language == "es":
        extra_word = lx.number_word(extra, "es") if extra > 1 else ("un" if lx.ANIMALS[person.animal][2][2] == "m" else "una")
        noun = lx.animal_word(person.animal, "es", extra > 1)
        return f"Si {name} recibe {extra_word} {noun} más, tendrá {total}."
    extra_phrase = lx.counted_animals(person.animal, extra, "de")
    return f"Wenn {name} {extra_phrase} mehr bekommt, hat {name} {total}."


def will_have_sentence(person: Person, extra: int, language: str = "en") -> str:
    """ "Mara will have five cats." (answer form, English only)."""
    if language != "en":
        raise ValueError("will_have_sentence: only English answers are used")
    return f"{person.name} will have {lx.counted_animals(person.animal, person.count + extra, 'en')}."


# ------------------------------------------------------------------ glossary statements
GLOSSARY_VARIANTS = 3


def glossary_sentence(words: dict[str, str], language: str, variant: int = 0) -> str:
    """A sentence giving one concept's word in all three languages, written in `language`."""
    en, es, de = words["en"], words["es"], words["de"]
    if language == "en":
        return (f"The word {en} is {es} in Spanish and {de} in German.",
                f"In Spanish, {en} is {es}; in German, it is {de}.",
                f"{lx.capitalise(en)} means {es} in Spanish and {de} in German.")[variant]
    if language == "es":
        return (f"La palabra {es} se dice {en} en inglés y {de} en alemán.",
                f"En inglés, {es} es {en}; en alemán, es {de}.",
                f"{lx.capitalise(es)} significa {en} en inglés y {de} en alemán.")[variant]
    return (f"Das Wort {de} heißt {en} auf Englisch und {es} auf Spanisch.",
            f"Auf Englisch heißt {de} {en}, auf Spanisch {es}.",
            f"{lx.capitalise(de)} bedeutet {en} auf Englisch und {es} auf Spanisch.")[variant]


def vocabulary() -> list[tuple[str, dict[str, str]]]:
    """Translatable words: (category, {"en":..., "es":..., "de":...}); jobs as "job" (masculine) and "job_f"."""
    entries: list[tuple[str, dict[str, str]]] = []
    for animal in lx.ANIMALS:
        entries.append(("animal", {lang: lx.animal_word(animal, lang, False) for lang in lx.LANGUAGES}))
    for colour in lx.COLOURS:
        entries.append(("colour", {lang: lx.colour_word(colour, lang) for lang in lx.LANGUAGES}))
    for obj in lx.OBJECTS:
        entries.append(("object", {lang: lx.object_word(obj, lang) for lang in lx.LANGUAGES}))
    for job in lx.JOBS:
        for gender, category in (("m", "job"), ("f", "job_f")):
            entries.append((category, {lang: lx.job_word(job, lang, gender) for lang in lx.LANGUAGES}))
    for n in range(1, 11):
        entries.append(("number", {lang: lx.number_word(n, lang) for lang in lx.LANGUAGES}))
    return entries
