"""Lab: sampling. "Lower temperature gives more accurate, higher temperature more diverse outputs."

The question. A model gives a distribution over the next token; the decoding rule decides how much
of it to use. Greedy decoding takes the most likely token every time; temperature T divides the
logits by T (T < 1 sharpens the distribution, T > 1 flattens it); top-k keeps the k most likely
tokens and top-p (nucleus) the smallest set holding probability p, cutting the unreliable tail
before sampling. The chapter's claim is a trade-off: the more a rule samples, the more varied and
the less reliable the answers. How steep is it, is truncation better than temperature at the same
diversity, and where does greedy decoding's known weakness, repetition, show up?

The setup. Two chat models answer questions whose right answers are known:
  * minifm's own SFT model (minifm/lab/own_model.py: the lifecycle's default pre-training + SFT),
    on hundreds of held-out tinyworld instructions, graded by tinyworld's grader and ground-truth reward;
  * SmolLM2-135M-Instruct (when installed) on the lab's 42 arithmetic and factual questions
    (minifm/lab/questions.py), at most a dozen tokens per reply (it decodes ~25 tokens/s here).
Every prompt is answered several times under each rule: temperature from 0 (greedy) to 1.5 (top_k=0,
pure temperature), top-k and top-p at temperature 1. Repetition: the pre-trained model (before SFT)
continues the opening words of unseen tinyworld documents greedily for many tokens, with
repetition_penalty 1.0 (off) and above; the SFT model answers its questions greedily with the same
penalties; SmolLM2 writes a few short free-form texts with and without a penalty.

The measurement, per rule (standard errors over prompts, the unit of independence):
    accuracy            share of replies the grader accepts (the per-prompt mean, then the mean over prompts)
    majority accuracy   the majority-vote reply of each prompt's samples graded (self-consistency)
    agreement           P(two samples of one prompt give the same answer), sum c (c - 1) / (S (S - 1))
    distinct-1/2        unique n-grams / all n-grams over one prompt's samples (evaluation.distinct_n),
                        averaged over prompts: how different the samples of the same prompt are
    log-likelihood      mean log p_model per generated token, under the unprocessed model distribution
and the quality/diversity frontier: accuracy against distinct-2, one point per rule. For repetition:
the share of 4-grams that repeat an earlier 4-gram of the same text, per output position and overall.

Simplifications: one model size; a greedy reply is deterministic, so it stands for all S samples of
its prompt (agreement 1, its distinct-n counted over S copies); the SmolLM2 question set is small
(42 prompts: its standard errors are wide) and its replies are cut at 12 tokens, so a model that
explains before it answers is graded wrong.
"""
from __future__ import annotations

import numpy as np

from minifm.data import tinyworld
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr
from minifm.lab.own_model import TINY_OVERRIDES, OwnModels
from minifm.lab.questions import QUESTIONS
from minifm.lab.subjects import (
    Draws, Subject, draw, majority_vote, pairwise_agreement, smollm2_subject, tinyworld_prompts, tinyworld_subject,
)
from minifm.lifecycle.evaluation import distinct_n
from minifm.sampling.generate import generate
from minifm.train.plots import plot_scatter, plot_xy

NAME = "sampling"
CLAIM = "lower temperature gives more accurate, higher temperature more diverse outputs"
SUMMARY = "temperature / top-k / top-p sweeps on the own SFT model and SmolLM2: accuracy, agreement, distinct-n; repetition"
DEFAULT_MINUTES = 12

PRESETS = {
    "tiny": dict(lifecycle="tiny", lifecycle_overrides=TINY_OVERRIDES,
                 n_prompts=8, samples=3, seeds=1, temperatures=[0.0, 0.7, 1.5], top_ks=[5], top_ps=[0.8],
                 repetition_penalties=[1.0, 1.3], continuation_prompts=4, continuation_tokens=24,
                 smollm2_questions=2, smollm2_samples=2, smollm2_max_new_tokens=3, smollm2_temperatures=[0.0, 1.0],
                 smollm2_top_ks=[], smollm2_top_ps=[], smollm2_repetition_penalties=[1.3], smollm2_story_prompts=1,
                 smollm2_story_tokens=3),
    "default": dict(lifecycle="default", lifecycle_overrides={},
                    n_prompts=300, samples=4, seeds=1, temperatures=[0.0, 0.3, 0.6, 1.0, 1.5],
                    top_ks=[3, 10, 40], top_ps=[0.5, 0.8, 0.95],
                    repetition_penalties=[1.0, 1.1, 1.2, 1.5], continuation_prompts=100, continuation_tokens=80,
                    smollm2_questions=len(QUESTIONS), smollm2_samples=3, smollm2_max_new_tokens=12,
                    smollm2_temperatures=[0.0, 0.5, 1.0, 1.5], smollm2_top_ks=[10], smollm2_top_ps=[0.9],
                    smollm2_repetition_penalties=[1.0, 1.3], smollm2_story_prompts=3, smollm2_story_tokens=48),
}
STORY_PROMPTS = ("Write a short story about a cat.", "Describe the sea on a stormy day.",
                 "Tell me about your favourite season.")
REPEAT_N = 4  # repetition is measured on 4-grams


def rules(temperatures, top_ks, top_ps) -> list[tuple[str, dict]]:
    """(label, generate() options) of every decoding rule of the sweep; temperature 0 is greedy."""
    out = []
    for temperature in temperatures:
        if temperature == 0:
            out.append(("greedy (T=0)", {"do_sample": False}))
        else:
            out.append((f"T={temperature:g}", {"do_sample": True, "temperature": temperature, "top_k": 0}))
    out += [(f"top-k {k} (T=1)", {"do_sample": True, "temperature": 1.0, "top_k": k}) for k in top_ks]
    out += [(f"top-p {p:g} (T=1)", {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": p}) for p in top_ps]
    return out


# ------------------------------------------------------------------ the measurements
def summarise(draws: Draws) -> dict:
    """Accuracy, majority accuracy, agreement, distinct-n and log-likelihood of one rule's draws."""
    prompts, samples = draws.shape
    accuracy, accuracy_se = mean_and_stderr(draws.correct.mean(axis=1))
    reward, reward_se = mean_and_stderr(draws.reward.mean(axis=1))
    majority = [draws.correct[p, majority_vote(draws.keys[p])] for p in range(prompts)]
    majority_accuracy, majority_se = mean_and_stderr(majority)
    agreement, agreement_se = mean_and_stderr([pairwise_agreement(draws.keys[p]) for p in range(prompts)])
    distinct = {n: float(np.mean([distinct_n(draws.tokens[p], n) for p in range(prompts)])) for n in (1, 2)}
    return {"accuracy": accuracy, "accuracy_se": accuracy_se, "reward": reward, "reward_se": reward_se,
            "majority_accuracy": majority_accuracy, "majority_accuracy_se": majority_se,
            "agreement": agreement, "agreement_se": agreement_se,
            "distinct_1": distinct[1], "distinct_2": distinct[2],
            "loglik_per_token": float(draws.logprob.sum() / max(draws.length.sum(), 1)),
            "mean_length": float(draws.length.mean()), "prompts": prompts, "samples": samples,
            "per_prompt_accuracy": draws.correct.mean(axis=1).tolist(),  # for paired comparisons between rules
            "per_prompt_majority": [bool(value) for value in majority],
            "examples": [{"prompt": draws.prompts[p], "replies": draws.replies[p][:3]} for p in range(2)]}


def repeated_positions(tokens: list[int], n: int = REPEAT_N) -> list[bool]:
    """For each position t >= n - 1: whether the n-gram ending at t already occurred earlier in `tokens`."""
    seen, repeats = set(), []
    for end in range(n - 1, len(tokens)):
        gram = tuple(tokens[end - n + 1:end + 1])
        repeats.append(gram in seen)
        seen.add(gram)
    return repeats


def repetition_profile(rows: list[list[int]], prompt_lengths: list[int], n: int = REPEAT_N) -> dict:
    """Over several texts (prompt + continuation): the share of the continuation's n-grams that repeat an
    earlier n-gram of the same text, overall and by the continuation position where the n-gram ends,
    and the median position of the first repeat (None when fewer than half of the texts repeat)."""
    by_position: dict[int, list[bool]] = {}
    first_repeats, all_flags = [], []
    for tokens, prompt_length in zip(rows, prompt_lengths):
        flags = repeated_positions(tokens, n)  # flags[i] is about the n-gram ending at token n - 1 + i
        first = None
        for index, repeated in enumerate(flags):
            position = index + n - 1 - prompt_length  # 0 = the first generated token
            if position < 0:
                continue
            by_position.setdefault(position, []).append(repeated)
            all_flags.append(repeated)
            if repeated and first is None:
                first = position
        first_repeats.append(first)
    repeating = sorted(position for position in first_repeats if position is not None)
    onset = float(np.median(repeating)) if len(repeating) * 2 >= len(rows) else None
    return {"repeated_share": float(np.mean(all_flags)) if all_flags else 0.0,
            "texts_with_a_repeat": len(repeating) / max(len(rows), 1), "median_first_repeat": onset,
            "by_position": [[position, float(np.mean(flags))] for position, flags in sorted(by_position.items())]}


def document_openings(n: int, seed: int = 0) -> list[str]:
    """The first three words of `n` clean tinyworld documents no model was trained on (corpus seed 10,000+)."""
    openings, size = [], 20_000
    while len(openings) < n and size < 5_000_000:
        openings = [" ".join(text.split()[:3]) for text in tinyworld.clean_corpus(size_bytes=size, seed=10_000 + seed)
                    if len(text.split()) >= 4]
        size *= 2
    return openings[:n]


def continue_greedily(model, tokenizer, prompt_ids: list[list[int]], new_tokens: int, penalty: float,
                      eos_token_id=None) -> dict:
    """Greedy continuations with a repetition penalty: the repetition profile, log-likelihood, examples."""
    out = generate(model, prompt_ids, new_tokens, do_sample=False, repetition_penalty=penalty,
                   eos_token_id=eos_token_id, return_logprobs=True)
    rows, lengths = [], []
    for row, ids in enumerate(prompt_ids):
        continuation = [t for t in out.new_tokens(row) if t != eos_token_id]
        rows.append(list(ids) + continuation)
        lengths.append(len(ids))
    profile = repetition_profile(rows, lengths)
    profile["loglik_per_token"] = float(out.logprobs.sum() / max(out.num_generated.sum(), 1))
    profile["examples"] = [tokenizer.decode(out.new_tokens(row)) for row in range(min(3, len(prompt_ids)))]
    return profile


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    models = OwnModels(lab, s["lifecycle"], s["lifecycle_overrides"])
    pretrained, tokenizer = models.pretrained()
    own = tinyworld_subject("minifm SFT", models.sft(), tokenizer)
    prompts = tinyworld_prompts(own, s["n_prompts"])
    own_results = sweep(lab, "own", own, prompts, rules(s["temperatures"], s["top_ks"], s["top_ps"]), s["samples"])

    penalties_chat = {}
    for penalty in s["repetition_penalties"]:
        key = f"own chat greedy repetition_penalty={penalty:g} prompts={len(prompts)}"
        penalties_chat[penalty] = lab.sub_run(key, lambda penalty=penalty: summarise(
            draw(own, prompts, 1, seed=0, do_sample=False, repetition_penalty=penalty)))

    openings = document_openings(s["continuation_prompts"])
    eos = tokenizer.special_tokens["<|endoftext|>"]
    opening_ids = [[eos] + tokenizer.encode(text) for text in openings]  # documents start after an end of text
    new_tokens = min(s["continuation_tokens"], pretrained.config.block_size - max(len(ids) for ids in opening_ids))
    continuation = {}
    for penalty in s["repetition_penalties"]:
        key = f"pretrained continuation repetition_penalty={penalty:g} prompts={len(openings)} tokens={new_tokens}"
        continuation[penalty] = lab.sub_run(key, lambda penalty=penalty: continue_greedily(
            pretrained, tokenizer, opening_ids, new_tokens, penalty, eos_token_id=eos))

    smol_results, smol_stories = {}, {}
    if s["smollm2_questions"] > 0:
        smol = smollm2_subject(lab, s["smollm2_max_new_tokens"])
        if smol is not None:
            questions = [q.text for q in QUESTIONS[:s["smollm2_questions"]]]
            smol_rules = rules(s["smollm2_temperatures"], s["smollm2_top_ks"], s["smollm2_top_ps"])
            smol_results = sweep(lab, "smollm2", smol, questions, smol_rules, s["smollm2_samples"])
            for penalty in s["smollm2_repetition_penalties"]:
                key = (f"smollm2 stories={s['smollm2_story_prompts']} repetition_penalty={penalty:g} "
                       f"tokens={s['smollm2_story_tokens']}")

                def write_stories(penalty=penalty):
                    stories = [[int(i) for i in smol.tokenizer.apply_chat_template(
                        [{"role": "user", "content": text}], add_generation_prompt=True)]
                        for text in STORY_PROMPTS[:s["smollm2_story_prompts"]]]
                    return continue_greedily(smol.model, smol.tokenizer, stories, s["smollm2_story_tokens"], penalty,
                                             eos_token_id=smol.eos_token_id)

                smol_stories[penalty] = lab.sub_run(key, write_stories)
    report(lab, models, own_results, penalties_chat, continuation, smol_results, smol_stories)


def sweep(lab: LabRun, tag: str, subject: Subject, prompts: list[str], decoding_rules, samples: int) -> dict:
    """Every rule on every prompt, `samples` answers each (x seeds, pooled), one kept sub-run per rule."""
    results = {}
    for label, options in decoding_rules:
        key = f"{tag} {label} prompts={len(prompts)} samples={samples} seeds={lab.settings['seeds']}"

        def measure(options=options):
            parts = [draw(subject, prompts, samples, seed=seed, **options) for seed in range(lab.settings["seeds"])]
            return summarise(pool(parts))

        results[label] = dict(lab.sub_run(key, measure), options=options)
    return results


def pool(parts: list[Draws]) -> Draws:
    """Draws of the same prompts from several seeds as one set with S x seeds samples per prompt."""
    if len(parts) == 1:
        return parts[0]

    def join(name: str) -> list[list]:  # per prompt: the lists of every part, one after the other
        joined = []
        for p in range(len(parts[0].prompts)):
            row = []
            for part in parts:
                row.extend(getattr(part, name)[p])
            joined.append(row)
        return joined

    def stack(name: str) -> np.ndarray:  # (P, S) arrays side by side: (P, S x parts)
        return np.concatenate([getattr(part, name) for part in parts], axis=1)

    return Draws(parts[0].prompts, join("replies"), join("tokens"), stack("logprob"), stack("length"),
                 stack("correct"), stack("reward"), join("keys"))


# ------------------------------------------------------------------ the report
def temperature_curve(results: dict) -> list[tuple[float, float]]:
    """(distinct-2, accuracy) of the temperature rules (greedy included), sorted by distinct-2."""
    points = [(r["distinct_2"], r["accuracy"]) for label, r in results.items()
              if label.startswith(("greedy", "T="))]
    return sorted(points)


def above_temperature_curve(results: dict, label: str) -> float | None:
    """Accuracy of rule `label` minus the temperature rules' accuracy at the same distinct-2 (linear
    interpolation); None outside the temperature curve's range of diversity."""
    curve = temperature_curve(results)
    x, y = results[label]["distinct_2"], results[label]["accuracy"]
    xs = [point[0] for point in curve]
    if len(curve) < 2 or not xs[0] <= x <= xs[-1]:
        return None
    return y - float(np.interp(x, xs, [point[1] for point in curve]))


def temperature_curve_se(results: dict, label: str) -> float:
    """A standard error for above_temperature_curve: the rule's and the interpolated curve's, combined as if
    independent (they share the prompts, so this overstates it a little)."""
    points = sorted((r["distinct_2"], r["accuracy_se"]) for name, r in results.items()
                    if name.startswith(("greedy", "T=")))
    curve_se = float(np.interp(results[label]["distinct_2"], [x for x, _ in points], [se for _, se in points]))
    return float(np.hypot(results[label]["accuracy_se"], curve_se))


def paired_gain(results: dict, rule: str, key: str, baseline: str) -> tuple[float, float] | None:
    """Mean and standard error over prompts of (rule's per-prompt `key`) - (baseline's per-prompt accuracy)."""
    if key not in results[rule] or "per_prompt_accuracy" not in results[baseline]:
        return None
    return mean_and_stderr(np.asarray(results[rule][key], dtype=np.float64)
                           - np.asarray(results[baseline]["per_prompt_accuracy"], dtype=np.float64))


def rule_rows(results: dict) -> list[list]:
    rows = []
    for label, r in results.items():
        rows.append([label, f"{r['accuracy']:.3f} ± {r['accuracy_se']:.3f}",
                     f"{r['majority_accuracy']:.3f} ± {r['majority_accuracy_se']:.3f}",
                     f"{r['agreement']:.3f}", r["distinct_1"], r["distinct_2"], r["loglik_per_token"],
                     r["mean_length"]])
    return rows


RULE_HEADER = ["rule", "accuracy ± s.e.", "majority-vote accuracy ± s.e.", "agreement", "distinct-1", "distinct-2",
               "log-lik / token", "tokens"]


def plot_frontier(results: dict, path, title: str) -> None:
    points = {label: (r["distinct_2"], r["accuracy"]) for label, r in results.items()}
    ordered = [label for label in results if label.startswith(("greedy", "T="))]
    plot_scatter(points, path, title, "distinct-2 among one prompt's samples (diversity)", "accuracy (quality)",
                 ordered=ordered)


def verdict(results: dict, name: str) -> str:
    """The sentences a sweep supports, each checked against its numbers."""
    temperature_rules = [label for label in results if label.startswith(("greedy", "T="))]
    first, last = results[temperature_rules[0]], results[temperature_rules[-1]]
    falls = last["accuracy"] < first["accuracy"] - 2 * max(first["accuracy_se"], last["accuracy_se"])
    rises = last["distinct_2"] > first["distinct_2"]
    parts = [f"{name}: from {temperature_rules[0]} to {temperature_rules[-1]} accuracy goes "
             f"{first['accuracy']:.3f} -> {last['accuracy']:.3f} and distinct-2 {first['distinct_2']:.3f} -> "
             f"{last['distinct_2']:.3f}, agreement {first['agreement']:.3f} -> {last['agreement']:.3f}."]
    if falls and rises:
        parts.append("The trade-off the chapter describes holds here.")
    elif rises:
        parts.append("Diversity rises but the accuracy change is within two standard errors: here the "
                     "trade-off is not measurable, contrary to the chapter's claim.")
    else:
        parts.append("This does not show the chapter's trade-off.")
    best_majority = max(results, key=lambda label: results[label]["majority_accuracy"])
    if "greedy (T=0)" in results:
        samples = results[best_majority]["samples"]
        gain = paired_gain(results, best_majority, "per_prompt_majority", "greedy (T=0)")
        if gain is None:
            gain = (results[best_majority]["majority_accuracy"] - results["greedy (T=0)"]["accuracy"], float("nan"))
        beats = gain[0] > 2 * gain[1]
        parts.append(f"Majority vote over {samples} samples is best at {best_majority} "
                     f"({results[best_majority]['majority_accuracy']:.3f}, {gain[0]:+.3f} ± {gain[1]:.3f} against "
                     f"greedy, paired over prompts): "
                     + ("self-consistency beats greedy decoding here." if beats else
                        "not distinguishable from greedy decoding with this many samples and prompts."))
    comparisons = []
    for label in results:
        if label.startswith(("top-k", "top-p")):
            difference = above_temperature_curve(results, label)
            if difference is not None:
                comparisons.append(f"{label} {difference:+.3f} ± {temperature_curve_se(results, label):.3f}")
    if comparisons:
        parts.append("Accuracy of truncated sampling minus temperature sampling's at the same distinct-2: "
                     + ", ".join(comparisons) + ".")
    return " ".join(parts)


def repetition_rows(profiles: dict) -> list[list]:
    rows = []
    for penalty, p in profiles.items():
        onset = "none" if p["median_first_repeat"] is None else f"{p['median_first_repeat']:.0f}"
        rows.append([f"{float(penalty):g}", p["repeated_share"], p["texts_with_a_repeat"], onset,
                     p["loglik_per_token"], p["examples"][0].replace("\n", " ").replace("|", "/")[:140]])
    return rows


def report(lab: LabRun, models: OwnModels, own: dict, penalties_chat: dict, continuation: dict, smol: dict,
           smol_stories: dict) -> None:
    s = lab.settings
    plot_frontier(own, lab.path("frontier_own.png"), "minifm SFT model: quality against diversity")
    series = {"accuracy (own)": ([], []), "majority-vote accuracy (own)": ([], []), "agreement (own)": ([], [])}
    for label, r in own.items():
        if label.startswith(("greedy", "T=")):
            temperature = r["options"].get("temperature", 0.0) if r["options"]["do_sample"] else 0.0
            for name, value in (("accuracy (own)", r["accuracy"]), ("majority-vote accuracy (own)",
                                                                    r["majority_accuracy"]),
                                ("agreement (own)", r["agreement"])):
                series[name][0].append(temperature)
                series[name][1].append(value)
    for label, r in smol.items():
        if label.startswith(("greedy", "T=")):
            temperature = r["options"].get("temperature", 0.0) if r["options"]["do_sample"] else 0.0
            series.setdefault("accuracy (SmolLM2)", ([], []))
            series["accuracy (SmolLM2)"][0].append(temperature)
            series["accuracy (SmolLM2)"][1].append(r["accuracy"])
    plot_xy(series, lab.path("temperature.png"), "Accuracy, majority vote and agreement against temperature",
            "temperature (0 = greedy)", "share")
    position_series = {}
    for penalty, profile in continuation.items():
        positions = [position for position, _ in profile["by_position"]]
        shares = [share for _, share in profile["by_position"]]
        position_series[f"repetition_penalty {float(penalty):g}"] = (positions, shares)
    plot_xy(position_series, lab.path("repetition.png"), "Greedy continuations: repeated 4-grams by position",
            "generated token position", "share of texts whose 4-gram here repeats", marker="-")

    penalty_rows = [[f"{float(penalty):g}", f"{r['accuracy']:.3f} ± {r['accuracy_se']:.3f}",
                     f"{r['reward']:+.3f}", r["mean_length"]] for penalty, r in penalties_chat.items()]
    first_penalty, last_penalty = list(penalties_chat.values())[0], list(penalties_chat.values())[-1]
    off, strongest = list(continuation.values())[0], list(continuation.values())[-1]
    onset = off["median_first_repeat"]
    repetition_text = (
        f"Greedy continuation by the pre-trained model repeats: {off['repeated_share']:.3f} of its 4-grams repeat an "
        f"earlier one of the same text ({100 * off['texts_with_a_repeat']:.0f}% of texts"
        + (f", the first repeat at token {onset:.0f} in the median text" if onset is not None else "")
        + f"). repetition_penalty {float(list(continuation)[-1]):g} brings that to {strongest['repeated_share']:.3f} "
        f"at a log-likelihood of {strongest['loglik_per_token']:.3f} instead of {off['loglik_per_token']:.3f} nats "
        f"per token. On the SFT model's short answers the same penalties move greedy accuracy "
        f"{first_penalty['accuracy']:.3f} -> {last_penalty['accuracy']:.3f}: the penalty also counts the prompt's "
        f"tokens, and an answer has to repeat the question's name (\"Where does Mara live?\" -> \"Mara lives in ...\").")

    sections = [
        ("Question", f"How steep is the trade-off between quality and diversity across decoding rules, is truncation "
                     f"(top-k, top-p) better than temperature at the same diversity, and where does greedy's "
                     f"repetition show up? (The chapter: \"{CLAIM}\".)"),
        ("Setup", f"{models.describe()}. Own model: {own[next(iter(own))]['prompts']} held-out tinyworld instructions, "
                  f"{s['samples']} samples each x {s['seeds']} seed(s), at most 24 new tokens. SmolLM2: "
                  + (f"{s['smollm2_questions']} questions (minifm/lab/questions.py), {s['smollm2_samples']} samples "
                     f"each, at most {s['smollm2_max_new_tokens']} new tokens." if smol else "not run (not installed "
                     "or switched off by the preset).")
                  + " Standard errors are over prompts."),
        ("minifm SFT model", markdown_table(RULE_HEADER, rule_rows(own))
         + "\n\n![quality/diversity frontier, own model](frontier_own.png)\n\n![temperature](temperature.png)"),
    ]
    if smol:
        plot_frontier(smol, lab.path("frontier_smollm2.png"), "SmolLM2-135M-Instruct: quality against diversity")
        sections.append(("SmolLM2-135M-Instruct", markdown_table(RULE_HEADER, rule_rows(smol))
                         + "\n\n![quality/diversity frontier, SmolLM2](frontier_smollm2.png)"))
    sections.append(("Repetition and the repetition penalty",
                     "Pre-trained model, greedy continuations of unseen document openings:\n\n"
                     + markdown_table(["repetition_penalty", "repeated 4-gram share", "texts with a repeat",
                                       "median first repeat (token)", "log-lik / token", "example"],
                                      repetition_rows(continuation))
                     + "\n\n![repetition by position](repetition.png)\n\nSFT model, greedy answers:\n\n"
                     + markdown_table(["repetition_penalty", "accuracy ± s.e.", "ground-truth reward", "tokens"],
                                      penalty_rows)
                     + ("\n\nSmolLM2, greedy free-form texts:\n\n" + markdown_table(
                         ["repetition_penalty", "repeated 4-gram share", "texts with a repeat",
                          "median first repeat (token)", "log-lik / token", "example"], repetition_rows(smol_stories))
                        if smol_stories else "")))
    shows = verdict(own, "Own model")
    if smol:
        shows += " " + verdict(smol, "SmolLM2")
    sections.append(("What it shows", shows + " " + repetition_text))
    lab.write_report("Sampling: the quality/diversity trade-off of decoding rules", sections,
                     {"own": own, "own_repetition_penalty_chat": penalties_chat, "own_continuation": continuation,
                      "smollm2": smol, "smollm2_stories": smol_stories, "models": models.figures})
