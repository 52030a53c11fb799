"""How the lifecycle grades models on tinyworld: answers to held-out prompts, scored by the world's grader.

tinyworld knows the right answer to each of its instructions, so every policy can be graded
without a human:
  accuracy               the share of answers that tinyworld.grade accepts (the fact is right)
  ground-truth reward    tinyworld.ground_truth_reward(prompt, answer): the stand-in for human
                         judgement that the preference pairs were drawn from (correctness plus a
                         small bonus for the polite style; its scale is in minifm/data/tinyworld/tasks.py)
  learned reward         the reward model's score of the same answer (an arbitrary scale: only
                         differences between policies mean something)
  polite share           the share of answers opening with one of tinyworld.POLITE_PREFIXES
  KL to SFT              how far a policy moved from the SFT model, per response
                         (a k1 estimate on its own samples; for best-of-N the analytic bound
                         log N - (N-1)/N)
  distinct-n             unique n-grams / all n-grams over a set of samples (diversity)

report.py writes these definitions into report.md where each is first used.

`evaluate_instructions` answers greedily; `evaluate_policies` samples several answers per prompt
from each policy and reports means with standard errors over prompts (answers to one prompt are
not independent, so the prompt is the unit).
"""
from __future__ import annotations

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.data.conversations import END_TOKEN, PAD_TOKEN, decode_response, prompt_ids, special_id
from minifm.sampling.best_of_n import best_of_n_kl_bound
from minifm.sampling.generate import generate
from minifm.train import rl_math
from minifm.train.ppo import response_logprobs


def distinct_n(token_lists: list[list[int]], n: int) -> float:
    """Unique n-grams / total n-grams over all the given sequences (Li et al. 2016's distinct-n)."""
    total, unique = 0, set()
    for tokens in token_lists:
        for i in range(len(tokens) - n + 1):
            unique.add(tuple(tokens[i:i + n]))
            total += 1
    return len(unique) / total if total else 0.0


def fitting(items: list[dict], tokenizer, block_size: int, new_tokens: int) -> list[dict]:
    """The items whose chat prompt plus `new_tokens` fits in the model's context (block_size)."""
    return [item for item in items if len(prompt_ids(tokenizer, item["prompt"])) + new_tokens <= block_size]


def context_length(policy) -> int:
    """Positions left for real tokens: block_size minus the virtual tokens of a prompt- or
    prefix-tuned model (a PeftModel reports num_virtual_tokens; a plain model has none)."""
    return policy.config.block_size - int(getattr(policy, "num_virtual_tokens", 0) or 0)


def generate_responses(model, tokenizer, prompts, max_new_tokens: int = 24, batch_size: int = 64,
                       do_sample: bool = False, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """Answer each prompt (text) in the chat format; greedy unless do_sample."""
    end_id, pad_id = special_id(tokenizer, END_TOKEN), special_id(tokenizer, PAD_TOKEN)
    rng = np.random.default_rng(seed)
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        out = generate(model, batch, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=0,
                       eos_token_id=end_id, pad_token_id=pad_id, seed=rng, return_dict_in_generate=True)
        answers.extend(decode_response(tokenizer, out.new_tokens(row)) for row in range(len(batch)))
    return answers


def evaluate_instructions(model, tokenizer, tasks, max_new_tokens: int = 24, batch_size: int = 64) -> dict:
    """Greedy answers to [{"prompt", ...}] graded by tinyworld: accuracy and mean ground-truth reward."""
    prompts = [task["prompt"] for task in tasks]
    with no_grad():
        answers = generate_responses(model, tokenizer, prompts, max_new_tokens, batch_size)
    correct = [bool(tinyworld.grade(p, a)) for p, a in zip(prompts, answers)]
    rewards = [float(tinyworld.ground_truth_reward(p, a)) for p, a in zip(prompts, answers)]
    return {"accuracy": float(np.mean(correct)), "mean_ground_truth_reward": float(np.mean(rewards)),
            "n": len(prompts), "examples": [{"prompt": p, "response": a} for p, a in list(zip(prompts, answers))[:5]]}


def sample_answers(policy, tokenizer, prompts, max_new_tokens: int, temperature: float, seed: int,
                   best_of: int | None = None, reward_model=None, chunk: int = 128):
    """Sampled answers per prompt, in chunks of `chunk` prompts (bounded KV-cache memory); with best_of,
    the reward model picks one of best_of samples. Returns a list of GenerateOutput, one per chunk."""
    rng = np.random.default_rng(seed)
    outputs = []
    for start in range(0, len(prompts), chunk):
        ids = [prompt_ids(tokenizer, p) for p in prompts[start:start + chunk]]
        outputs.append(generate(policy, ids, max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                                eos_token_id=special_id(tokenizer, END_TOKEN),
                                pad_token_id=special_id(tokenizer, PAD_TOKEN), seed=rng,
                                return_dict_in_generate=True, best_of=best_of, reward_model=reward_model))
    return outputs


def mean_and_standard_error(values_per_prompt: np.ndarray) -> tuple[float, float]:
    """Mean over prompts and its standard error (sample std over prompts / sqrt(number of prompts))."""
    values = np.asarray(values_per_prompt, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def sampled_kl(policy, reference, out, temperature: float) -> float:
    """Mean over rows of sum_t k1 = log pi(token) - log ref(token) (both at temperature): KL(pi || ref) estimate."""
    mask = out.attention_mask[:, out.prompt_length:].astype(np.float64)
    with no_grad():
        logprobs, _ = response_logprobs(policy, out.sequences, out.attention_mask, out.prompt_length, temperature)
        ref_logprobs, _ = response_logprobs(reference, out.sequences, out.attention_mask, out.prompt_length,
                                            temperature)
    kl = rl_math.kl_per_token(logprobs.data, ref_logprobs.data, "k1") * mask
    return float(kl.sum(axis=1).mean())


def evaluate_policies(policies: dict, sft_policy, reward_model, tokenizer, preset: dict, temperature: float,
                      log=print) -> dict:
    """Held-out comparison: sampled / greedy ground-truth reward, accuracy, learned reward and KL to SFT.

    Every policy answers the same held-out prompts (`eval_samples` samples each, the same seed). The
    ground-truth reward is averaged per prompt first, so its standard error (over prompts) counts
    the prompt-to-prompt spread honestly; `difference_vs_sft` is the paired per-prompt difference to
    the first policy of `policies` (the SFT model) with its own standard error.
    """
    tasks = fitting(tinyworld.instructions("test", n=preset["n_eval"]), tokenizer, context_length(sft_policy),
                    preset["max_new_tokens"])
    n_prompts, copies = len(tasks), preset["eval_samples"]
    prompts = [t["prompt"] for t in tasks] * copies
    table, baseline = {}, None
    for name, policy in policies.items():
        best_of = preset["best_of_n"] if name == "best_of_n" else None
        with no_grad():
            outs = sample_answers(policy, tokenizer, prompts, preset["max_new_tokens"], temperature, seed=123,
                                  best_of=best_of, reward_model=reward_model if best_of else None)
            answers = [decode_response(tokenizer, out.new_tokens(row)) for out in outs
                       for row in range(out.sequences.shape[0])]
            learned = np.concatenate([reward_model.score(out.sequences, out.attention_mask) for out in outs])
        truth = np.array([tinyworld.ground_truth_reward(p, a) for p, a in zip(prompts, answers)])
        per_prompt = truth.reshape(copies, n_prompts).mean(axis=0)  # (n_prompts,)
        if best_of:
            kl = best_of_n_kl_bound(best_of)
            greedy = table["sft"]["greedy"] if "sft" in table else {"accuracy": float("nan"),
                                                                    "mean_ground_truth_reward": float("nan")}
        else:
            if policy is sft_policy:
                kl = 0.0
            else:
                weights = np.array([out.sequences.shape[0] for out in outs], dtype=np.float64)
                kl = float(np.average([sampled_kl(policy, sft_policy, out, temperature) for out in outs],
                                      weights=weights))
            greedy = evaluate_instructions(policy, tokenizer, tasks, preset["max_new_tokens"])
        mean, standard_error = mean_and_standard_error(per_prompt)
        if baseline is None:
            baseline = per_prompt
        difference, difference_se = mean_and_standard_error(per_prompt - baseline)
        polite = float(np.mean([tinyworld.tasks.strip_polite_prefix(a)[1] for a in answers]))
        table[name] = {"ground_truth_reward": mean, "ground_truth_reward_se": standard_error,
                       "difference_vs_sft": difference, "difference_vs_sft_se": difference_se,
                       "learned_reward": float(np.mean(learned)), "polite_fraction": polite,
                       "accuracy_sampled": float(np.mean([tinyworld.grade(p, a) for p, a in zip(prompts, answers)])),
                       "kl_to_sft": kl, "greedy": {k: greedy[k] for k in ("accuracy", "mean_ground_truth_reward")},
                       "n_prompts": n_prompts, "samples_per_prompt": copies,
                       "examples": [{"prompt": p, "response": a} for p, a in list(zip(prompts, answers))[:3]]}
        log(f"eval {name:10s}: ground truth {mean:+.3f} ± {standard_error:.3f} "
            f"(vs sft {difference:+.3f} ± {difference_se:.3f}) learned {table[name]['learned_reward']:+.3f} "
            f"polite {polite:.2f} kl {kl:.3f}")
    return table
