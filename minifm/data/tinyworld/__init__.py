"""tinyworld: minifm's built-in, offline, deterministic default corpus and task suite.

A seeded generator of a small fictional world (24 people, 10 towns, animals, colours, objects,
jobs, pet counts) rendered as pre-training documents in English, Spanish and German with
optional web-like noise, plus instruction data, a grader, a public ground-truth reward and
preference pairs derived from it. See docs/data.md for the full description.

    from minifm.data import tinyworld
    docs = tinyworld.generate_corpus(1_000_000)             # list[str], ~10% noise
    tasks = tinyworld.instructions("train")                  # [{"prompt", "completion"}, ...]
    tinyworld.grade("Where does Mara live?", "Mara lives in Tollby.")
    tinyworld.ground_truth_reward(prompt, response)         # float in [-2.0, 1.2]
"""
from minifm.data.tinyworld.corpus import (
    DEFAULT_LANGUAGES, NOISE_KINDS, Document, clean_corpus, generate_corpus, generate_documents,
)
from minifm.data.tinyworld.tasks import (
    POLITE_PREFIXES, RUDE_MARKERS, Task, all_tasks, grade, ground_truth_reward, instructions, normalise,
    preferences, reference_answer,
)
from minifm.data.tinyworld.world import FACT_KINDS, Person, World, default_world

__all__ = [
    "DEFAULT_LANGUAGES", "FACT_KINDS", "NOISE_KINDS", "POLITE_PREFIXES", "RUDE_MARKERS", "Document", "Person",
    "Task", "World", "all_tasks", "clean_corpus", "default_world", "generate_corpus", "generate_documents", "grade",
    "ground_truth_reward", "instructions", "normalise", "preferences", "reference_answer",
]
