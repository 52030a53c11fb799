"""Sampling: from a model's logits to generated text.

    processors.py  logits processors (transformers' warpers and order), seeded draws, greedy choice
    generate.py    generate(): KV-cached greedy / sampling / best-of-N, stop conditions, log-probs
    beam.py        beam search with a length penalty (generate(num_beams > 1) calls it)
    output.py      GenerateOutput, the result both searches assemble
    best_of_n.py   best_of_n(): N samples per prompt, the reward model keeps the best
    logits_processor.py  generate(..., logits_processor=[...]): transformers' convention and placement
    regex_automaton.py   a regular expression -> a minimal DFA over UTF-8 bytes
    json_schema.py       a JSON Schema subset -> the regular expression of its JSON text
    constraints.py       RegexConstraint / JsonSchemaConstraint: token masks from the DFA and the vocabulary
"""
from minifm.sampling.beam import beam_search
from minifm.sampling.generate import generate
from minifm.sampling.output import GenerateOutput
from minifm.sampling.processors import greedy, process_logits, sample, sample_from_uniforms

__all__ = ["GenerateOutput", "beam_search", "generate", "greedy", "process_logits", "sample",
           "sample_from_uniforms"]
