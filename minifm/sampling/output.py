"""What generation returns: `GenerateOutput`, and `assemble_output` that builds it from the new tokens.

Both searches produce the same result shape: greedy / sampling (minifm/sampling/generate.py) and
beam search (minifm/sampling/beam.py) each collect new tokens per row and hand them to
`assemble_output`, which appends them to the prompts and marks the kept ones in the attention mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GenerateOutput:
    """What generate() returns when a dict is requested (transformers' GenerateOutput, simplified).

    sequences        (N, T0 + T_new) int64: the (left-padded) prompt followed by the new tokens;
    attention_mask   (N, T0 + T_new) int64: 1 for prompt tokens and kept new tokens, 0 for padding;
    num_generated    (N,) new tokens per row, counting the eos / stop token that ended it;
    prompt_length    T0, the padded prompt length (new tokens start at this column);
    logprobs         (N, T_new) float64 log p_model(token) of each new token (0 after the end); None
                     unless return_logprobs (always present for beam search and best-of-N);
    scores           list over steps of processed logits (N, V), or None;
    sequences_scores (N,) beam score (sum of log-probs / length**length_penalty) or best-of-N reward;
    extras           anything else a caller may want: "all_rewards" (B, n) for best-of-N,
                     "encoder_input_ids" for an encoder-decoder model.
    """

    sequences: np.ndarray
    attention_mask: np.ndarray
    num_generated: np.ndarray
    prompt_length: int
    logprobs: np.ndarray | None = None
    scores: list | None = None
    sequences_scores: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def new_tokens(self, row: int) -> list[int]:
        """The new token ids of one row, without padding (the eos / stop tokens included)."""
        start = self.prompt_length
        return [int(t) for t in self.sequences[row, start:start + int(self.num_generated[row])]]


def assemble_output(ids: np.ndarray, mask: np.ndarray, new_tokens: np.ndarray, num_generated: np.ndarray,
                    logprobs: np.ndarray | None, scores: list | None,
                    sequences_scores: np.ndarray | None = None) -> GenerateOutput:
    """Prompts ids/mask (N, T0) + new tokens (N, T_new) of which the first num_generated[i] count."""
    width = new_tokens.shape[1]
    kept = (np.arange(width)[None, :] < num_generated[:, None]).astype(np.int64)  # (N, T_new)
    return GenerateOutput(sequences=np.concatenate([ids, new_tokens], axis=1),  # (N, T0 + T_new)
                          attention_mask=np.concatenate([mask, kept], axis=1),  # (N, T0 + T_new)
                          num_generated=num_generated, prompt_length=ids.shape[1], logprobs=logprobs,
                          scores=scores, sequences_scores=sequences_scores)


__all__ = ["GenerateOutput", "assemble_output"]
