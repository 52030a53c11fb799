"""Lab: test-time compute. "Sampling more and choosing the best answer buys quality without training."

The question. Instead of changing the weights, a model can spend compute at answer time: draw N
answers and keep one. Which one? Three choosers:
  * the learned reward model (best-of-N, as InstructGPT and Stiennon et al. use it): keep the answer
    the reward model scores highest. The reward model is only a proxy of what people want, so the
    more answers it chooses among, the more its choice exploits the proxy's errors: Gao et al. (2023)
    found the true reward of best-of-N first rises, then falls, while the proxy score keeps rising;
  * the ground-truth grader (the oracle): keep the truly best answer; an upper bound nothing real
    reaches, it shows what the N answers contain;
  * majority vote (self-consistency, Wang et al. 2023): keep the most common answer; needs no
    reward model at all, only answers that can be compared;
and, as a fourth, the model's own likelihood (keep the most probable answer).

How far does choosing move from the model? The chosen answer comes from a new distribution, the
best-of-N policy; its KL divergence from the model is at most log N - (N - 1) / N (Stiennon et al.
2020; exact when the N answers are distinct): 0 at N = 1, 0.19 at N = 2, 2.50 at N = 32
(minifm.sampling.best_of_n.best_of_n_kl_bound). `best_of_n_probabilities` gives the exact
distribution of a discrete policy's best-of-N, and the tests check the bound against its KL.

The setup. Every prompt is answered 32 times ONCE, at temperature 1 (the model's own distribution).
For each N = 1..32 the choosers are evaluated on all N-subsets of those 32 answers at once:
for a chooser that keeps the highest score s, sort a prompt's M answers by s; the answer of rank i
(0-based, ascending) is the one kept exactly when the subset holds it and N - 1 of the i answers
below it, so

    E[value of the kept answer] = sum_i C(i, N - 1) / C(M, N) * value_i          (`expected_best_of_n`)

exact, with no resampling noise. Majority vote is not a maximum of a score, so it is estimated from
random N-subsets (`majority_vote_curve`; ties go to the answer seen first in the random order).
Models: minifm's own SFT model on held-out tinyworld instructions with its learned reward model
(both from minifm/lab/own_model.py: the lifecycle's default stages), and SmolLM2-135M-Instruct on the
lab's 42 questions (no reward model exists for it: oracle, majority vote and likelihood only).

The measurement: the ground-truth reward and accuracy of the kept answer against N (and against the
KL bound), the reward model's own score of its choice (the proxy), standard errors over prompts, and
the paired difference between the reward model's best N and N = 32.

Simplifications: the N answers are subsets of one draw of 32, so the curves at different N are
correlated (that is what makes their differences precise); one seed; answers cut at 24 tokens
(12 for SmolLM2).
"""
from __future__ import annotations

import numpy as np
from scipy.special import comb

from minifm.data.tinyworld.tasks import strip_polite_prefix
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr
from minifm.lab.own_model import TINY_OVERRIDES, OwnModels
from minifm.lab.questions import QUESTIONS
from minifm.lab.subjects import draw, majority_vote, smollm2_subject, tinyworld_prompts, tinyworld_subject
from minifm.sampling.best_of_n import best_of_n_kl_bound
from minifm.train.plots import plot_xy, pyplot, save_figure
from minifm.train.reward import score_texts

NAME = "test-time-compute"
CLAIM = "sampling more and choosing the best answer buys quality without training"
SUMMARY = "best-of-N for N = 1..32 chosen by the reward model, the oracle, majority vote and likelihood; the KL bound"
DEFAULT_MINUTES = 12

PRESETS = {
    "tiny": dict(lifecycle="tiny", lifecycle_overrides=TINY_OVERRIDES,
                 n_prompts=6, max_samples=8, temperature=1.0, chunk_prompts=3, vote_subsets=8,
                 smollm2_questions=2, smollm2_samples=2, smollm2_max_new_tokens=3),
    "default": dict(lifecycle="default", lifecycle_overrides={},
                    n_prompts=200, max_samples=32, temperature=1.0, chunk_prompts=50, vote_subsets=64,
                    smollm2_questions=len(QUESTIONS), smollm2_samples=16, smollm2_max_new_tokens=12),
}
SHOWN_N = (1, 2, 4, 8, 16, 32)


# ------------------------------------------------------------------ the maths
def expected_best_of_n(scores: np.ndarray, values: np.ndarray, n: int) -> float:
    """E[value of the answer with the highest score] over all n-subsets of M answers (exact; see the docstring).
    scores, values: (M,). Ties in score are broken by the sort's order (identical answers tie with equal values)."""
    scores, values = np.asarray(scores, dtype=np.float64), np.asarray(values, dtype=np.float64)
    total = scores.size
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}], got {n}")
    order = np.argsort(scores, kind="stable")  # ascending
    ranks = np.arange(total)  # rank i is kept with probability C(i, n-1) / C(M, n)
    weights = comb(ranks, n - 1, exact=False) / comb(total, n, exact=False)  # (M,)
    return float((weights * values[order]).sum())


def majority_vote_picks(keys: list[list[str]], max_n: int, subsets: int, rng: np.random.Generator) -> np.ndarray:
    """(P, max_n, subsets) indices: for each prompt and N, the answer majority vote keeps in each of `subsets`
    random N-subsets of the prompt's answers (N = M: all of them, in random orders for the tie-breaking)."""
    prompts, total = len(keys), len(keys[0])
    picks = np.zeros((prompts, max_n, subsets), dtype=np.int64)
    for p in range(prompts):
        for n in range(1, max_n + 1):
            for draw_index in range(subsets):
                subset = rng.permutation(total)[:n]
                picks[p, n - 1, draw_index] = subset[majority_vote([keys[p][i] for i in subset])]
    return picks


def majority_vote_curve(picks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(P, max_n): the mean value of the kept answers over the random subsets. values: (P, M)."""
    kept = np.take_along_axis(values[:, None, :], picks, axis=2)  # (P, max_n, subsets)
    return kept.mean(axis=2)


def best_of_n_probabilities(probabilities: np.ndarray, n: int) -> np.ndarray:
    """The exact best-of-n distribution of a discrete policy whose outcomes are listed from the lowest
    reward to the highest (all rewards distinct): P(best of n = x_i) = F(i)^n - F(i-1)^n, F the CDF."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    cdf = np.cumsum(probabilities)
    below = np.concatenate([[0.0], cdf[:-1]])
    return cdf ** n - below ** n


def selection_curves(scores: dict[str, np.ndarray], truth: np.ndarray, correct: np.ndarray, max_n: int) -> dict:
    """For each chooser {name: (P, M) scores}: per-prompt (P, max_n) expected truth and correctness of its choice."""
    curves = {}
    prompts = truth.shape[0]
    for name, chooser_scores in scores.items():
        reward = np.zeros((prompts, max_n))
        accuracy = np.zeros((prompts, max_n))
        for p in range(prompts):
            for n in range(1, max_n + 1):
                reward[p, n - 1] = expected_best_of_n(chooser_scores[p], truth[p], n)
                accuracy[p, n - 1] = expected_best_of_n(chooser_scores[p], correct[p].astype(np.float64), n)
        curves[name] = {"reward": reward, "accuracy": accuracy}
    return curves


def curve_changes(curve: np.ndarray) -> dict:
    """For a (P, max_n) per-prompt curve: the N where its mean peaks, and (mean, paired s.e. over prompts) of
    last - first and last - peak."""
    peak = int(np.argmax(curve.mean(axis=0)))
    return {"peak_n": peak + 1, "last_minus_first": mean_and_stderr(curve[:, -1] - curve[:, 0]),
            "last_minus_peak": mean_and_stderr(curve[:, -1] - curve[:, peak]),
            "peak_minus_first": mean_and_stderr(curve[:, peak] - curve[:, 0])}


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    models = OwnModels(lab, s["lifecycle"], s["lifecycle_overrides"])
    tokenizer = models.tokenizer()
    own = tinyworld_subject("minifm SFT", models.sft(), tokenizer)
    reward_model = models.reward_model()
    prompts = tinyworld_prompts(own, s["n_prompts"])
    parts = []
    for start in range(0, len(prompts), s["chunk_prompts"]):
        chunk = prompts[start:start + s["chunk_prompts"]]
        key = f"own prompts {start}-{start + len(chunk) - 1} samples={s['max_samples']} T={s['temperature']:g}"

        def sample_and_score(chunk=chunk, start=start):
            draws = draw(own, chunk, s["max_samples"], seed=1_000 + start, temperature=s["temperature"], top_k=0)
            flat_prompts = [prompt for prompt in chunk for _ in range(s["max_samples"])]
            flat_replies = [reply for row in draws.replies for reply in row]
            learned = score_texts(reward_model, tokenizer, flat_prompts, flat_replies)
            polite = [[strip_polite_prefix(reply)[1] for reply in row] for row in draws.replies]
            return {"reward": draws.reward.tolist(), "correct": draws.correct.tolist(), "keys": draws.keys,
                    "logprob": draws.logprob.tolist(), "polite": polite,
                    "learned": learned.reshape(len(chunk), s["max_samples"]).tolist(),
                    "examples": [{"prompt": chunk[0], "replies": draws.replies[0][:6]}]}

        parts.append(lab.sub_run(key, sample_and_score))
    own_result = analyse(lab, "own", parts, with_reward_model=True)

    smol_result = None
    if s["smollm2_questions"] > 0:
        smol = smollm2_subject(lab, s["smollm2_max_new_tokens"])
        if smol is not None:
            questions = [q.text for q in QUESTIONS[:s["smollm2_questions"]]]
            key = f"smollm2 questions={len(questions)} samples={s['smollm2_samples']} T={s['temperature']:g}"

            def sample_smollm2():
                draws = draw(smol, questions, s["smollm2_samples"], seed=2_000, temperature=s["temperature"], top_k=0)
                return {"reward": draws.reward.tolist(), "correct": draws.correct.tolist(), "keys": draws.keys,
                        "logprob": draws.logprob.tolist(),
                        "examples": [{"prompt": questions[0], "replies": draws.replies[0][:6]}]}

            smol_result = analyse(lab, "smollm2", [lab.sub_run(key, sample_smollm2)], with_reward_model=False)
    report(lab, models, own_result, smol_result)


def analyse(lab: LabRun, tag: str, parts: list[dict], with_reward_model: bool) -> dict:
    """The selection curves of every chooser from the kept samples (means and standard errors over prompts)."""
    truth = np.concatenate([np.array(part["reward"]) for part in parts])  # (P, M)
    correct = np.concatenate([np.array(part["correct"], dtype=bool) for part in parts])  # (P, M)
    keys = [row for part in parts for row in part["keys"]]
    logprob = np.concatenate([np.array(part["logprob"]) for part in parts])  # (P, M)
    max_n = truth.shape[1]
    scores = {"oracle (ground truth)": truth, "likelihood": logprob}
    if with_reward_model:
        learned = np.concatenate([np.array(part["learned"]) for part in parts])  # (P, M)
        scores = {"reward model": learned, **scores}
    curves = selection_curves(scores, truth, correct, max_n)
    picks = majority_vote_picks(keys, max_n, lab.settings["vote_subsets"], np.random.default_rng(0))
    curves["majority vote"] = {"reward": majority_vote_curve(picks, truth),
                               "accuracy": majority_vote_curve(picks, correct.astype(np.float64))}
    summary = {"prompts": truth.shape[0], "samples": max_n, "choosers": {},
               "kl_bound": [best_of_n_kl_bound(n) for n in range(1, max_n + 1)],
               "examples": [part["examples"][0] for part in parts[:2]]}
    for name, curve in curves.items():
        entry = {}
        for metric in ("reward", "accuracy"):
            means, errors = zip(*(mean_and_stderr(curve[metric][:, n]) for n in range(max_n)))
            entry[metric], entry[f"{metric}_se"] = list(means), list(errors)
        summary["choosers"][name] = entry
    if with_reward_model:
        learned = scores["reward model"]
        proxy = np.array([[expected_best_of_n(learned[p], learned[p], n) for n in range(1, max_n + 1)]
                          for p in range(truth.shape[0])])  # (P, max_n): the reward model's score of its own choice
        summary["proxy"] = proxy.mean(axis=0).tolist()
        polite = np.concatenate([np.array(part["polite"], dtype=np.float64) for part in parts])  # (P, M): 0/1
        summary["polite_share"] = {name: [float(np.mean([expected_best_of_n(scores[name][p], polite[p], n)
                                                          for p in range(truth.shape[0])]))
                                          for n in range(1, max_n + 1)]
                                   for name in ("reward model", "oracle (ground truth)")}
    summary["changes"] = {name: {metric: curve_changes(curve[metric]) for metric in ("reward", "accuracy")}
                          for name, curve in curves.items()}
    lab.log(f"{tag}: {truth.shape[0]} prompts x {max_n} samples analysed")
    return summary


# ------------------------------------------------------------------ the report
def curve_rows(result: dict, metric: str) -> list[list]:
    rows = []
    for n in [n for n in SHOWN_N if n <= result["samples"]]:
        row = [n, f"{best_of_n_kl_bound(n):.3f}"]
        for name, entry in result["choosers"].items():
            row.append(f"{entry[metric][n - 1]:+.3f} ± {entry[f'{metric}_se'][n - 1]:.3f}" if metric == "reward"
                       else f"{entry[metric][n - 1]:.3f} ± {entry[f'{metric}_se'][n - 1]:.3f}")
        if "proxy" in result and metric == "reward":
            row.append(f"{result['proxy'][n - 1]:+.3f}")
        rows.append(row)
    return rows


def plot_over_optimisation(result: dict, path) -> None:
    """Ground-truth reward of the reward model's and the oracle's choice, and the proxy score, against the KL bound."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.6, 4.0))
    kl = result["kl_bound"]
    for name, style in (("reward model", "o-"), ("oracle (ground truth)", "s-"), ("majority vote", "^-")):
        if name in result["choosers"]:
            axis.plot(kl, result["choosers"][name]["reward"], style, markersize=3,
                      label=f"ground-truth reward, {name}'s choice")
    axis.set_xlabel("KL(best-of-N || model) bound, log N - (N-1)/N (nats)")
    axis.set_ylabel("ground-truth reward of the kept answer")
    proxy_axis = axis.twinx()
    proxy_axis.plot(kl, result["proxy"], "--", color="grey", label="reward model's own score of its choice (proxy)")
    proxy_axis.set_ylabel("learned reward (proxy, arbitrary scale)")
    lines = axis.get_legend_handles_labels()
    proxy_lines = proxy_axis.get_legend_handles_labels()
    axis.legend(lines[0] + proxy_lines[0], lines[1] + proxy_lines[1], loc="upper center",
                bbox_to_anchor=(0.5, -0.18), ncol=1, fontsize=8, frameon=False)
    axis.set_title("Best-of-N: proxy against true reward as the KL grows")
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def change_text(change: tuple[float, float], digits: str = "+.3f") -> str:
    return f"{change[0]:{digits}} ± {change[1]:.3f}"


def reward_model_reading(result: dict) -> str:
    """What the reward model's choice does as N grows, for the true reward and for accuracy, checked against
    paired standard errors; and its own score of its choice (the proxy)."""
    last = result["samples"]
    sentences = []
    for metric, name in (("reward", "ground-truth reward"), ("accuracy", "accuracy")):
        change = result["changes"]["reward model"][metric]
        peak, drop, gain = change["peak_n"], change["last_minus_peak"], change["last_minus_first"]
        if peak < last and -drop[0] > 2 * drop[1]:
            sentences.append(f"its {name} is best at N = {peak} and then gets worse ({change_text(drop)} from there "
                             f"to N = {last}; {change_text(gain)} from N = 1)")
        elif peak < last:
            sentences.append(f"its {name} stops improving at N = {peak} (N = {last} is {change_text(drop)} from "
                             f"there, within noise; {change_text(gain)} from N = 1)")
        else:
            sentences.append(f"its {name} keeps improving up to N = {last} ({change_text(gain)} from N = 1)")
    proxy = result["proxy"]
    oracle = result["changes"]["oracle (ground truth)"]
    polite = result["polite_share"]["reward model"]
    accuracy_gain = result["changes"]["reward model"]["accuracy"]["last_minus_first"]
    style = (": the reward model tells the style (tinyworld pays +0.2 for a polite opening) far better than the facts"
             if polite[-1] - polite[0] > 0.1 and accuracy_gain[0] < 2 * accuracy_gain[1] else "")
    return (f"Chosen by the reward model, " + "; ".join(sentences) + f", while the reward model's own score of its "
            f"choice rises {proxy[0]:+.3f} -> {proxy[-1]:+.3f} and the share of polite answers among its choices "
            f"goes {polite[0]:.2f} -> {polite[-1]:.2f}{style}. The oracle's choice (what the answers contain): ground-truth "
            f"reward {change_text(oracle['reward']['last_minus_first'])} and accuracy "
            f"{change_text(oracle['accuracy']['last_minus_first'])} from N = 1 to {last}.")


def others_reading(result: dict, *names: str) -> str:
    """Accuracy at N = 1 and N = max of the named choosers (and the oracle), with the paired change."""
    last = result["samples"]
    parts = []
    for name in names + ("oracle (ground truth)",):
        if name in result["choosers"]:
            accuracy = result["choosers"][name]["accuracy"]
            change = result["changes"][name]["accuracy"]["last_minus_first"]
            parts.append(f"{name} {accuracy[0]:.3f} -> {accuracy[-1]:.3f} ({change_text(change)})")
    return f"accuracy from N = 1 to {last}: " + ", ".join(parts) + "."


def report(lab: LabRun, models: OwnModels, own: dict, smol: dict | None) -> None:
    n_values = list(range(1, own["samples"] + 1))
    plot_xy({name: (n_values, entry["reward"]) for name, entry in own["choosers"].items()},
            lab.path("reward_vs_n_own.png"), "minifm SFT model: ground-truth reward of the kept answer",
            "N (answers drawn per prompt, log scale)", "mean ground-truth reward", logx=True)
    plot_over_optimisation(own, lab.path("over_optimisation_own.png"))
    choosers = list(own["choosers"])
    shows = reward_model_reading(own) + " The other choosers' " + others_reading(own, "majority vote", "likelihood")
    sections = [
        ("Question", f"Does drawing N answers and keeping one buy quality, and does it matter who chooses? "
                     f"(The chapter: \"{CLAIM}\".)"),
        ("Setup", f"{models.describe()}; its reward model: the lifecycle's reward stage "
                  f"(preference accuracy {models.figures.get('reward', {}).get('preference_accuracy', float('nan')):.3f}, "
                  f"Pearson r with the ground truth {models.figures.get('reward', {}).get('pearson_r', float('nan')):.3f}). "
                  f"{own['prompts']} held-out tinyworld instructions x {own['samples']} answers at temperature "
                  f"{lab.settings['temperature']:g}, drawn once; choosers evaluated exactly over all N-subsets "
                  f"(majority vote: {lab.settings['vote_subsets']} random subsets per prompt and N). Standard "
                  f"errors over prompts."),
        ("minifm SFT model: ground-truth reward of the kept answer",
         markdown_table(["N", "KL bound"] + choosers + ["proxy (reward model's score)"], curve_rows(own, "reward"))
         + "\n\n![reward vs N](reward_vs_n_own.png)\n\n![over-optimisation](over_optimisation_own.png)"),
        ("minifm SFT model: accuracy of the kept answer",
         markdown_table(["N", "KL bound"] + choosers, curve_rows(own, "accuracy"))),
    ]
    if smol is not None:
        smol_choosers = list(smol["choosers"])
        plot_xy({name: (list(range(1, smol["samples"] + 1)), entry["accuracy"])
                 for name, entry in smol["choosers"].items()},
                lab.path("accuracy_vs_n_smollm2.png"), "SmolLM2-135M-Instruct: accuracy of the kept answer",
                "N (answers drawn per question, log scale)", "accuracy", logx=True)
        sections.append(("SmolLM2-135M-Instruct: accuracy of the kept answer",
                         markdown_table(["N", "KL bound"] + smol_choosers, curve_rows(smol, "accuracy"))
                         + "\n\n![SmolLM2 accuracy vs N](accuracy_vs_n_smollm2.png)"))
        shows += f" SmolLM2 ({smol['prompts']} questions x {smol['samples']} answers), " + others_reading(
            smol, "majority vote", "likelihood")
    sections.append(("What it shows", shows))
    lab.write_report("Test-time compute: best-of-N, majority vote and the reward model's over-optimisation", sections,
                     {"own": own, "smollm2": smol, "models": models.figures})
