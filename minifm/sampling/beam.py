"""Beam search with a length penalty, after transformers' BeamSearchScorer.

Each prompt keeps `num_beams` running hypotheses. At every step each beam proposes every token:
candidate score = (beam's summed log-probability) + log p(token | beam). The best 2 * num_beams
candidates of a prompt are visited in order; a candidate that ends the sequence (eos id, stop
sequence or stop string) becomes a *finished hypothesis* if it ranks among the first num_beams,
the others continue as the new beams until num_beams are chosen. A finished hypothesis is ranked by

    score = sum of its token log-probabilities / (number of generated tokens) ** length_penalty

(length_penalty > 0 favours longer outputs, < 0 shorter ones; the eos token counts in the length).
Only the best num_beams finished hypotheses are kept. When max_new_tokens is reached the running
beams are finished too. The result is sorted by score, best first.

Stopping (`early_stopping`): True stops a prompt as soon as num_beams hypotheses are finished;
False (the default) stops it only when no running beam can still beat the worst kept hypothesis,
using the exact bound (transformers' early_stopping="never" bound; its default heuristic can stop
slightly earlier). With enough beams the search is therefore exact, which the tests check against
brute-force enumeration on a tiny vocabulary.

Simplifications: no beam sampling, no diverse beams; the processors applied to the log-softmax
scores are the repetition penalty and then the user's `logits_processor` list (as transformers
does; a constraint that removes tokens gives them -inf, and -inf candidates are never taken); the
first step starts from one live beam per prompt (the others at -inf) so the beams are not copies
of each other.
"""
from __future__ import annotations

import numpy as np

from minifm.kernels.softmax import log_softmax
from minifm.sampling.output import GenerateOutput, assemble_output
from minifm.sampling.processors import process_logits


class BeamHypotheses:
    """The best `num_beams` finished hypotheses of one prompt, with the length-penalised score."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool, max_new_tokens: int):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_new_tokens = max_new_tokens
        self.kept: list[tuple[float, list[int], list[float]]] = []  # (score, tokens, token log-probs)

    def score(self, sum_logprobs: float, length: int) -> float:
        return sum_logprobs / (max(length, 1) ** self.length_penalty)

    def worst_score(self) -> float:
        return min(entry[0] for entry in self.kept) if self.kept else -np.inf

    def add(self, tokens: list[int], token_logprobs: list[float], sum_logprobs: float) -> None:
        score = self.score(sum_logprobs, len(tokens))
        if len(self.kept) < self.num_beams or score > self.worst_score():
            self.kept.append((score, tokens, token_logprobs))
            if len(self.kept) > self.num_beams:
                worst = min(range(len(self.kept)), key=lambda i: self.kept[i][0])
                self.kept.pop(worst)

    def is_done(self, best_running_sum: float, current_length: int) -> bool:
        """Can no running beam (best summed log-prob `best_running_sum` at `current_length`) still enter?"""
        if len(self.kept) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        if not np.isfinite(best_running_sum):
            return True
        # summed log-probs only decrease; the best reachable score uses the length that helps most
        if self.length_penalty > 0 and best_running_sum < 0:
            best_length = self.max_new_tokens
        else:
            best_length = current_length
        return self.worst_score() >= self.score(best_running_sum, best_length)


def beam_search(stepper, ids: np.ndarray, mask: np.ndarray, *, num_beams: int, max_new_tokens: int,
                length_penalty: float = 1.0, early_stopping: bool = False, num_return_sequences: int = 1,
                stopper=None, pad_token_id: int = 0, repetition_penalty: float = 1.0,
                output_scores: bool = False, logits_processor=()) -> GenerateOutput:
    """Beam search over a stepper (see minifm.sampling.generate). Returns a GenerateOutput whose rows
    are the num_return_sequences best hypotheses of each prompt, best first, with sequences_scores."""
    batch, prompt_length = ids.shape
    beams_ids = np.repeat(ids, num_beams, axis=0)  # (B*K, T0)
    beams_mask = np.repeat(mask, num_beams, axis=0)  # (B*K, T0)
    beam_sums = np.full((batch, num_beams), -np.inf)  # (B, K) summed log-probs of the running beams
    beam_sums[:, 0] = 0.0
    beam_tokens = [[] for _ in range(batch * num_beams)]  # new tokens of each running beam
    beam_logprobs = [[] for _ in range(batch * num_beams)]
    hypotheses = [BeamHypotheses(num_beams, length_penalty, early_stopping, max_new_tokens) for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    scores = [] if output_scores else None
    logits = stepper.start(beams_ids, beams_mask) if max_new_tokens else None  # (B*K, V)
    for step in range(max_new_tokens):
        if not np.all(np.isfinite(logits)):
            raise FloatingPointError(f"the model produced non-finite logits at beam-search step {step}")
        token_logprobs = log_softmax(logits.astype(np.float64))  # (B*K, V)
        processed = token_logprobs
        if repetition_penalty != 1.0:
            processed = process_logits(token_logprobs, input_ids=stepper.ids, repetition_penalty=repetition_penalty)
        if logits_processor:  # a LogitsProcessorList: the user's processors, in order
            processed = logits_processor(stepper.ids, processed)
        if scores is not None:
            scores.append(np.asarray(processed, dtype=np.float32).copy())
        vocab = processed.shape[1]
        candidates = (processed.reshape(batch, num_beams, vocab) + beam_sums[:, :, None]).reshape(batch, -1)
        n_top = min(2 * num_beams, candidates.shape[1])
        top = np.argpartition(-candidates, n_top - 1, axis=1)[:, :n_top]  # (B, 2K) unordered
        next_source = np.zeros(batch * num_beams, dtype=np.int64)
        next_token = np.full(batch * num_beams, pad_token_id, dtype=np.int64)
        next_sums = np.full((batch, num_beams), -np.inf)
        for b in range(batch):
            base = b * num_beams
            if done[b]:
                next_source[base:base + num_beams] = base + np.arange(num_beams)
                continue
            order = top[b][np.lexsort((top[b], -candidates[b, top[b]]))]  # best first, ties by index
            chosen = 0
            for rank, flat in enumerate(order):
                beam, token = divmod(int(flat), vocab)
                total = float(candidates[b, flat])
                if not np.isfinite(total):
                    break
                source = base + beam
                tokens = beam_tokens[source] + [token]
                if stopper is not None and stopper.active and stopper(tokens):
                    if rank < num_beams:
                        hypotheses[b].add(tokens, beam_logprobs[source] + [float(token_logprobs[source, token])],
                                          total)
                    continue
                next_source[base + chosen] = source
                next_token[base + chosen] = token
                next_sums[b, chosen] = total
                chosen += 1
                if chosen == num_beams:
                    break
            for slot in range(chosen, num_beams):  # fewer live candidates than beams: keep dead slots
                next_source[base + slot] = base
            done[b] = hypotheses[b].is_done(next_sums[b].max(), step + 1)
        new_beam_tokens, new_beam_logprobs = [], []
        for row in range(batch * num_beams):
            source = next_source[row]
            token = int(next_token[row])
            new_beam_tokens.append(beam_tokens[source] + [token])
            new_beam_logprobs.append(beam_logprobs[source] + [float(token_logprobs[source, token])])
        beam_tokens, beam_logprobs, beam_sums = new_beam_tokens, new_beam_logprobs, next_sums
        if done.all() or step + 1 == max_new_tokens:
            break
        stepper.reorder(next_source)
        logits = stepper.step(next_token)
    for b in range(batch):  # running beams of unfinished prompts become hypotheses too
        if done[b]:
            continue
        for k in range(num_beams):
            if np.isfinite(beam_sums[b, k]):
                row = b * num_beams + k
                hypotheses[b].add(beam_tokens[row], beam_logprobs[row], float(beam_sums[b, k]))

    rows = batch * num_return_sequences
    best = [sorted(h.kept, key=lambda entry: -entry[0])[:num_return_sequences] for h in hypotheses]
    width = max((len(entry[1]) for group in best for entry in group), default=0)
    new_tokens = np.full((rows, width), pad_token_id, dtype=np.int64)  # (N, T_new)
    logprobs = np.zeros((rows, width))  # (N, T_new)
    num_generated = np.zeros(rows, dtype=np.int64)
    sequence_scores = np.full(rows, -np.inf)
    for b, group in enumerate(best):
        for j, (score, tokens, token_logprobs_list) in enumerate(group):
            row = b * num_return_sequences + j
            new_tokens[row, :len(tokens)] = tokens
            logprobs[row, :len(tokens)] = token_logprobs_list
            num_generated[row] = len(tokens)
            sequence_scores[row] = score
    if max_new_tokens:  # the stepper knows what outputs start with (the prompt, or T5's decoder start)
        ids = stepper.prompt_ids[::num_beams]
        mask = stepper.prompt_mask[::num_beams]
    prompt_ids = np.repeat(ids, num_return_sequences, axis=0)  # (N, T0)
    prompt_mask = np.repeat(mask, num_return_sequences, axis=0)  # (N, T0)
    return assemble_output(prompt_ids, prompt_mask, new_tokens, num_generated, logprobs, scores, sequence_scores)


__all__ = ["BeamHypotheses", "beam_search"]
