"""The tinyworld itself: a seeded, fixed set of people, towns and the facts that link them.

A world is small on purpose (24 people, 10 towns, 8 animals, 8 colours, 8 objects, 8 jobs,
pet counts 1..9) so a 4-layer GPT trained for minutes on a CPU can memorise it. Each person has
exactly one fact of each kind:

    town      where the person lives (every town has at least one resident)
    job       one of 8 jobs
    animal    the kind of pet, and `count` (1..9) how many of it
    colour    favourite colour
    obj       one object, and `obj_colour` its colour

`World(seed)` draws these with `random.Random(seed)` (Python's Mersenne Twister, whose integer
seeding is stable across Python versions), so the same seed gives the same world everywhere.
The default world is seed 0 (`default_world()`), which every other tinyworld function uses
unless told otherwise.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from minifm.data.tinyworld import lexicon

FACT_KINDS = ("town", "job", "pets", "colour", "object")


@dataclass(frozen=True)
class Person:
    name: str
    gender: str        # "f" or "m": only used for Spanish/German job nouns and pronouns
    town: str
    job: str
    animal: str
    count: int         # 1..9 animals of kind `animal`
    colour: str        # favourite colour
    obj: str
    obj_colour: str


class World:
    """A fixed tinyworld drawn from `seed`; see the module docstring for what it contains."""

    def __init__(self, seed: int = 0, n_people: int = 24, n_towns: int = 10):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"World: seed must be an int, got {type(seed).__name__}")
        half = n_people // 2
        if not (2 <= n_people <= 2 * len(lexicon.FEMALE_NAMES) and n_people % 2 == 0):
            raise ValueError(f"World: n_people must be even and in [2, {2 * len(lexicon.FEMALE_NAMES)}], got {n_people}")
        if not 1 <= n_towns <= min(n_people, len(lexicon.TOWN_NAMES)):
            raise ValueError(f"World: n_towns must be in [1, {min(n_people, len(lexicon.TOWN_NAMES))}], got {n_towns}")
        rng = random.Random(seed)
        self.seed = seed
        names = [(name, "f") for name in rng.sample(lexicon.FEMALE_NAMES, half)]
        names += [(name, "m") for name in rng.sample(lexicon.MALE_NAMES, half)]
        rng.shuffle(names)
        self.towns: list[str] = rng.sample(lexicon.TOWN_NAMES, n_towns)
        # every town gets one resident first, the rest are placed at random
        town_of = list(self.towns) + [rng.choice(self.towns) for _ in range(n_people - n_towns)]
        rng.shuffle(town_of)
        animals, colours, objects, jobs = (list(lexicon.ANIMALS), list(lexicon.COLOURS),
                                           list(lexicon.OBJECTS), list(lexicon.JOBS))
        self.people: list[Person] = [
            Person(name=name, gender=gender, town=town_of[i], job=rng.choice(jobs),
                   animal=rng.choice(animals), count=rng.randint(1, 9), colour=rng.choice(colours),
                   obj=rng.choice(objects), obj_colour=rng.choice(colours))
            for i, (name, gender) in enumerate(names)
        ]
        self.animals, self.colours, self.objects, self.jobs = animals, colours, objects, jobs
        self.by_name = {person.name: person for person in self.people}

    def residents(self, town: str) -> list[Person]:
        return [p for p in self.people if p.town == town]

    def owners(self, animal: str) -> list[Person]:
        return [p for p in self.people if p.animal == animal]

    def workers(self, job: str) -> list[Person]:
        return [p for p in self.people if p.job == job]

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, people={len(self.people)}, towns={len(self.towns)})"


@functools.lru_cache(maxsize=8)
def cached_world(seed: int) -> World:
    return World(seed)


def default_world() -> World:
    """The world every tinyworld function uses by default: `World(seed=0)` (cached)."""
    return cached_world(0)
