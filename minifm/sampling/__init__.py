"""Sampling: logits processors (transformers' warpers and order), seeded draws, greedy choice.

Kept as a plain re-export list so generation and beam search can be added beside it.
"""
from minifm.sampling.processors import greedy, process_logits, sample, sample_from_uniforms

# generation (KV cache, stops, log-probs, best-of-N) and beam search
from minifm.sampling.beam import beam_search  # noqa: E402
from minifm.sampling.generate import GenerateOutput, generate  # noqa: E402

__all__ = ["GenerateOutput", "beam_search", "generate", "greedy", "process_logits", "sample",
           "sample_from_uniforms"]
