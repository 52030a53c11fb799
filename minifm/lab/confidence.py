"""Lab: confidence. "A pre-trained model's probabilities are calibrated; preference tuning can break that."

The question. When a model gives an answer, the probability it assigns to that answer is a
confidence. It is *calibrated* when answers given with confidence 0.8 are right 80% of the time.
OpenAI's GPT-4 report (2023, figure 8) showed the pre-trained model well calibrated on multiple-choice
questions and the model after preference tuning much less so. Is that so for minifm's models, before
and after SFT and DPO, and can a threshold on the log-probability flag the wrong answers?

The setup. Two ways to read a confidence off a model:
  1. multiple choice: each held-out tinyworld question (facts, counts, sums; translation left out)
     comes with its right answer and up to 9 wrong answers of the same form ("Mara lives in Tollby."
     against "Mara lives in Velmo.", ...). Each model scores every option by its sequence
     log-probability, in its own format: the pre-trained model reads the option as the start of a
     document (after <|endoftext|>), the SFT and DPO models as the reply to the question in the chat
     format. The model's answer is the best-scored option, its confidence the softmax of the scores
     over the options. The same items for every model: before SFT, after SFT, after DPO.
  2. free generation: the greedy reply to every held-out instruction, graded by tinyworld, with two
     confidences: exp(sum of the reply's token log-probabilities), the probability of the reply as a
     whole, its end token included; and the probability of its ANSWER: the same quantity summed over
     the distinct replies, among the greedy one and samples at temperature 1, that give the same answer
     in other words (`answer_probability`; "Sure! Mara lives in Tollby." and "Mara lives in Tollby."
     are one answer). SFT and DPO; the pre-trained model does not answer in the chat format at all.
     SmolLM2-135M-Instruct (when installed) answers the lab's 42 questions the same way.

The measurement:
    reliability diagram   answers grouped into 10 equal-width confidence bins; per bin the mean
                          confidence against the accuracy (a calibrated model sits on the diagonal)
    ECE                   expected calibration error = sum over bins (n_b / n) |accuracy_b - confidence_b|
                          (Naeini et al. 2015; Guo et al. 2017)
    AUROC                 how well the confidence separates right from wrong answers: the probability
                          that a random right answer has a higher confidence than a random wrong one (0.5:
                          no better than chance); flagging answers below a log-probability threshold as
                          probably wrong catches the wrong ones exactly that well over all thresholds.
                          Computed as the Mann-Whitney U statistic / (n_right n_wrong) (scipy.stats)
Standard errors by the bootstrap over questions; the SFT -> DPO changes are paired bootstraps (the same
questions resampled for both models).

Simplifications: small models and one seed; 10 fixed bins (ECE depends on the binning); tinyworld's
wrong options are the ones its preference data uses, not the model's own mistakes.
"""
from __future__ import annotations

import random

import numpy as np
from scipy import stats

from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.data.conversations import PAD_TOKEN, prompt_ids, response_ids, special_id
from minifm.lab.common import LabRun, markdown_table
from minifm.lab.own_model import TINY_OVERRIDES, OwnModels
from minifm.lab.questions import QUESTIONS
from minifm.lab.subjects import draw, smollm2_subject, tinyworld_prompts, tinyworld_subject
from minifm.lifecycle.evaluation import context_length
from minifm.train.dpo import sequence_logps
from minifm.train.plots import pyplot, save_figure

NAME = "confidence"
CLAIM = "a pre-trained model's probabilities are calibrated; preference tuning can break that"
SUMMARY = "log-probability as confidence before/after SFT and DPO: reliability diagrams, ECE, AUROC of flagging wrong answers"
DEFAULT_MINUTES = 8

PRESETS = {
    "tiny": dict(lifecycle="tiny", lifecycle_overrides=TINY_OVERRIDES,
                 n_items=12, max_wrong_options=3, n_prompts=10, samples=4, bins=10, bootstrap_resamples=50,
                 smollm2_questions=2, smollm2_samples=2, smollm2_max_new_tokens=3),
    "default": dict(lifecycle="default", lifecycle_overrides={},
                    n_items=None, max_wrong_options=9, n_prompts=None, samples=16, bins=10, bootstrap_resamples=1000,
                    smollm2_questions=len(QUESTIONS), smollm2_samples=8, smollm2_max_new_tokens=12),
}
FAMILIES = ("fact", "counting", "arithmetic")  # translation's options make no sense without the question


# ------------------------------------------------------------------ the maths
def reliability_bins(confidence, correct, bins: int = 10) -> list[dict]:
    """Equal-width bins [0, 1/bins), ..., [1 - 1/bins, 1]: each bin's count, mean confidence and accuracy."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be equal 1-D shapes")
    if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
        raise ValueError(f"confidences must be in [0, 1], got [{confidence.min()}, {confidence.max()}]")
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # confidence 1.0 joins the last bin
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        table.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                      "confidence": float(confidence[members].mean()) if count else float("nan"),
                      "accuracy": float(correct[members].mean()) if count else float("nan")})
    return table


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """ECE = sum over non-empty bins of (n_b / n) |accuracy_b - mean confidence_b|."""
    table = reliability_bins(confidence, correct, bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return float("nan")
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]))


def auroc(scores, positive) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half: the area under
    the ROC curve, from the Mann-Whitney U statistic. NaN when either class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    ones, zeros = scores[positive], scores[~positive]
    if ones.size == 0 or zeros.size == 0:
        return float("nan")
    u = stats.mannwhitneyu(ones, zeros, alternative="two-sided").statistic  # pairs (one > zero) + ties / 2
    return float(u / (ones.size * zeros.size))


def calibration_summary(confidence, correct, bins: int, resamples: int, seed: int = 0) -> dict:
    """Accuracy, mean confidence, ECE and AUROC with bootstrap standard errors; the reliability table."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)

    def ece(c, k):
        return expected_calibration_error(c, k, bins)

    return {"n": int(confidence.size), "accuracy": float(correct.mean()), "confidence": float(confidence.mean()),
            "ece": ece(confidence, correct), "ece_se": bootstrap_se(ece, (confidence, correct), resamples, seed),
            "auroc": auroc(confidence, correct),
            "auroc_se": bootstrap_se(auroc, (confidence, correct), resamples, seed),
            "bins": reliability_bins(confidence, correct, bins)}


def bootstrap_se(statistic, arrays: tuple, resamples: int, seed: int = 0) -> float:
    """The bootstrap standard error of statistic(*arrays): the questions (rows, the same ones in every array)
    resampled with replacement `resamples` times. A resample where the statistic is undefined (AUROC of a
    resample without a wrong answer) is dropped, which scipy.stats.bootstrap cannot do."""
    rng = np.random.default_rng(seed)
    size = len(arrays[0])
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, size, size)
        value = statistic(*(array[rows] for array in arrays))
        if np.isfinite(value):
            values.append(value)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def paired_difference(first: tuple, second: tuple, statistic, resamples: int, seed: int = 0) -> tuple[float, float]:
    """statistic(second) - statistic(first) on the same questions, and its paired bootstrap standard error.
    first, second: (confidence, correct) arrays of equal length."""
    arrays = (np.asarray(first[0], np.float64), np.asarray(first[1], bool),
              np.asarray(second[0], np.float64), np.asarray(second[1], bool))

    def difference(c1, k1, c2, k2):
        return statistic(c2, k2) - statistic(c1, k1)

    return float(difference(*arrays)), bootstrap_se(difference, arrays, resamples, seed)


# ------------------------------------------------------------------ multiple choice on tinyworld
def multiple_choice_items(n: int | None, max_wrong: int, seed: int = 0) -> list[dict]:
    """Held-out tinyworld tasks of FAMILIES: {"prompt", "options" (the right one first), "answer": 0}."""
    rng = random.Random(seed)
    items = []
    for task in tinyworld.all_tasks("test"):
        if task.family not in FAMILIES or not task.wrong_answers:
            continue
        wrong = list(dict.fromkeys(task.wrong_answers))  # distinct, in order
        rng.shuffle(wrong)
        items.append({"prompt": task.prompt, "options": [task.answer] + wrong[:max_wrong], "answer": 0})
    rng.shuffle(items)
    return items[:n]


def option_rows(tokenizer, item: dict, chat: bool) -> tuple[list[int], list[list[int]]]:
    """(context ids, one id list per option): the chat prompt and each option as its reply (chat=True), or
    <|endoftext|> and each option as the opening of a document (the pre-trained model's own format)."""
    if chat:
        return prompt_ids(tokenizer, item["prompt"]), [response_ids(tokenizer, option) for option in item["options"]]
    return [tokenizer.special_tokens["<|endoftext|>"]], [tokenizer.encode(option) for option in item["options"]]


def fits(tokenizer, item: dict, block_size: int) -> bool:
    """Whether every option of `item`, in both formats, fits the model's context."""
    for chat in (True, False):
        context, replies = option_rows(tokenizer, item, chat)
        if len(context) + max(len(reply) for reply in replies) > block_size:
            return False
    return True


def option_scores(model, tokenizer, items: list[dict], chat: bool, batch_rows: int = 128) -> list[np.ndarray]:
    """Per item, the sequence log-probability of each option in the format `option_rows` gives."""
    pad = special_id(tokenizer, PAD_TOKEN)
    rows, prompt_lengths, owners = [], [], []
    for index, item in enumerate(items):
        context, replies = option_rows(tokenizer, item, chat)
        for reply in replies:
            rows.append(context + reply)
            prompt_lengths.append(len(context))
            owners.append(index)
    scores = []
    with no_grad():
        for start in range(0, len(rows), batch_rows):
            scores.append(np.asarray(sequence_logps(model, rows[start:start + batch_rows],
                                                    prompt_lengths[start:start + batch_rows], pad).data,
                                     dtype=np.float64))
    flat = np.concatenate(scores)
    owners = np.array(owners)
    return [flat[owners == index] for index in range(len(items))]


def choose(scores: list[np.ndarray], items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per item: softmax over the options' scores at the best option; right if it is the answer."""
    confidence, correct = [], []
    for item_scores, item in zip(scores, items):
        probabilities = np.exp(item_scores - item_scores.max())
        probabilities /= probabilities.sum()
        best = int(np.argmax(item_scores))
        confidence.append(float(probabilities[best]))
        correct.append(best == item["answer"])
    return np.array(confidence), np.array(correct, dtype=bool)


# ------------------------------------------------------------------ confidence of a free reply
def answer_probability(prompt: str, reply_tokens: list, logprobs: list[float], answer_key) -> float:
    """P(the first reply's answer), as far as the replies show it: exp(log-probability) summed over the distinct
    replies (by token ids) whose answer key is the first reply's; the first reply is the greedy one, the others
    samples at temperature 1 whose sequence log-probabilities are the model's own. A lower bound, capped at 1."""
    target = answer_key(prompt, reply_tokens[0][1])
    counted = {}
    for (tokens, text), logprob in zip(reply_tokens, logprobs):
        if answer_key(prompt, text) == target:
            counted[tuple(tokens)] = logprob
    return min(1.0, float(sum(np.exp(logprob) for logprob in counted.values())))


def reply_confidences(subject, prompts: list[str], samples: int, seed: int = 0) -> dict:
    """The greedy reply of each prompt graded, with two confidences: its own sequence probability, and the
    probability of its answer summed over its phrasings among `samples` samples (answer_probability)."""
    greedy = draw(subject, prompts, 1, seed=seed, do_sample=False)
    result = {"confidence": np.exp(greedy.logprob[:, 0]).tolist(), "correct": greedy.correct[:, 0].tolist(),
              "examples": [{"prompt": p, "reply": r[0], "confidence": float(np.exp(l[0]))}
                           for p, r, l in zip(prompts[:4], greedy.replies[:4], greedy.logprob[:4])]}
    if samples > 0:
        sampled = draw(subject, prompts, samples, seed=seed + 1, temperature=1.0, top_k=0)
        summed = []
        for p, prompt in enumerate(prompts):
            replies = [(greedy.tokens[p][0], greedy.replies[p][0])] + list(zip(sampled.tokens[p], sampled.replies[p]))
            logprobs = [greedy.logprob[p, 0]] + sampled.logprob[p].tolist()
            summed.append(answer_probability(prompt, replies, logprobs, subject.answer_key))
        result["answer_confidence"] = summed
    return result


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    models = OwnModels(lab, s["lifecycle"], s["lifecycle_overrides"])
    pretrained, tokenizer = models.pretrained()
    named = {"pre-trained": (pretrained, False), "SFT": (models.sft(), True), "DPO": (models.dpo(), True)}
    items = [item for item in multiple_choice_items(s["n_items"], s["max_wrong_options"])
             if fits(tokenizer, item, context_length(pretrained))]
    choice = {}
    for name, (model, chat) in named.items():
        def measure(model=model, chat=chat):
            confidence, correct = choose(option_scores(model, tokenizer, items, chat), items)
            return {"confidence": confidence.tolist(), "correct": correct.tolist()}

        choice[name] = lab.sub_run(f"multiple choice {name} items={len(items)}", measure)

    generation = {}
    for name in ("SFT", "DPO"):
        subject = tinyworld_subject(name, named[name][0], tokenizer)
        prompts = tinyworld_prompts(subject, s["n_prompts"])
        generation[name] = lab.sub_run(f"replies {name} prompts={len(prompts)} samples={s['samples']}",
                                       lambda subject=subject, prompts=prompts: reply_confidences(
                                           subject, prompts, s["samples"]))
    if s["smollm2_questions"] > 0:
        smol = smollm2_subject(lab, s["smollm2_max_new_tokens"])
        if smol is not None:
            questions = [q.text for q in QUESTIONS[:s["smollm2_questions"]]]
            generation["SmolLM2-135M-Instruct"] = lab.sub_run(
                f"replies smollm2 questions={len(questions)} samples={s['smollm2_samples']}",
                lambda: reply_confidences(smol, questions, s["smollm2_samples"]))
    report(lab, models, items, choice, generation)


# ------------------------------------------------------------------ the report
def summaries(results: dict, bins: int, resamples: int) -> dict:
    return {name: calibration_summary(r["confidence"], r["correct"], bins, resamples) for name, r in results.items()}


def summary_rows(table: dict) -> list[list]:
    return [[name, s["n"], f"{s['accuracy']:.3f}", f"{s['confidence']:.3f}", f"{s['ece']:.3f} ± {s['ece_se']:.3f}",
             f"{s['auroc']:.3f} ± {s['auroc_se']:.3f}"] for name, s in table.items()]


def plot_reliability(table: dict, path, title: str) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.2, 5.0))
    axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    markers = ["o", "s", "D", "^"]
    for index, (name, summary) in enumerate(table.items()):
        filled = [row for row in summary["bins"] if row["count"]]
        axis.plot([row["confidence"] for row in filled], [row["accuracy"] for row in filled],
                  markers[index % len(markers)] + "-", label=f"{name} (ECE {summary['ece']:.3f})")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("mean confidence in the bin")
    axis.set_ylabel("accuracy in the bin")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    save_figure(figure, path)


def report(lab: LabRun, models: OwnModels, items: list[dict], choice: dict, generation: dict) -> None:
    s = lab.settings
    summed = {name: {"confidence": r["answer_confidence"], "correct": r["correct"]}
              for name, r in generation.items() if "answer_confidence" in r}
    tables = {"multiple choice": summaries(choice, s["bins"], s["bootstrap_resamples"]),
              "greedy replies": summaries(generation, s["bins"], s["bootstrap_resamples"]),
              "answer probability": summaries(summed, s["bins"], s["bootstrap_resamples"])}
    plot_reliability(tables["multiple choice"], lab.path("reliability_choice.png"), "Multiple choice: reliability")
    plot_reliability(tables["greedy replies"], lab.path("reliability_generation.png"),
                     "Greedy replies, sequence probability: reliability")
    plot_reliability(tables["answer probability"], lab.path("reliability_answer.png"),
                     "Greedy replies, answer probability: reliability")

    def ece(c, k):
        return expected_calibration_error(c, k, s["bins"])

    def change(results: dict, first: str, second: str) -> dict:
        pair = ((results[first]["confidence"], results[first]["correct"]),
                (results[second]["confidence"], results[second]["correct"]))
        return {"ece": paired_difference(*pair, ece, s["bootstrap_resamples"]),
                "auroc": paired_difference(*pair, auroc, s["bootstrap_resamples"])}

    changes = {"multiple choice, pre-trained -> SFT": change(choice, "pre-trained", "SFT"),
               "multiple choice, SFT -> DPO": change(choice, "SFT", "DPO"),
               "greedy replies (sequence probability), SFT -> DPO": change(generation, "SFT", "DPO")}
    if "SFT" in summed and "DPO" in summed:
        changes["greedy replies (answer probability), SFT -> DPO"] = change(summed, "SFT", "DPO")
    change_rows = [[name, f"{c['ece'][0]:+.3f} ± {c['ece'][1]:.3f}", f"{c['auroc'][0]:+.3f} ± {c['auroc'][1]:.3f}"]
                   for name, c in changes.items()]
    shows = what_it_shows(tables, changes, len(items))
    header = ["model", "questions", "accuracy", "mean confidence", "ECE ± s.e.", "AUROC ± s.e."]
    sections = [
        ("Question", f"Are the models' probabilities calibrated, before and after SFT and DPO, and does a threshold on "
                     f"the log-probability flag wrong answers? (The chapter: \"{CLAIM}\".)"),
        ("Setup", f"{models.describe()}; DPO from the SFT model (the lifecycle's dpo stage). Multiple choice: "
                  f"{len(items)} held-out tinyworld questions ({', '.join(FAMILIES)}), the right answer and up to "
                  f"{s['max_wrong_options']} wrong ones each. Greedy replies: the held-out instructions (SFT, DPO; "
                  f"{s['samples']} samples each for the answer probability)"
                  + (f" and the lab's {s['smollm2_questions']} questions (SmolLM2, {s['smollm2_samples']} samples)"
                     if "SmolLM2-135M-Instruct" in generation else "")
                  + f". {s['bins']} confidence bins; standard errors from {s['bootstrap_resamples']} bootstrap "
                    f"resamples of the questions."),
        ("Multiple choice (the option's sequence log-probability, softmax over the options)",
         markdown_table(header, summary_rows(tables["multiple choice"]))
         + "\n\n![reliability, multiple choice](reliability_choice.png)"),
        ("Greedy replies: confidence = the reply's sequence probability, exp(sum of its log-probabilities)",
         markdown_table(header, summary_rows(tables["greedy replies"]))
         + "\n\n![reliability, greedy replies](reliability_generation.png)"),
        ("Greedy replies: confidence = the answer's probability summed over its sampled phrasings",
         markdown_table(header, summary_rows(tables["answer probability"]))
         + "\n\n![reliability, answer probability](reliability_answer.png)"),
        ("Changes (paired bootstrap over the same questions)", markdown_table(["change", "ECE", "AUROC"], change_rows)),
        ("What it shows", shows),
    ]
    lab.write_report("Confidence: calibration of sequence log-probabilities before and after SFT and DPO", sections,
                     {"tables": tables, "changes": changes,
                      "examples": {name: r.get("examples", []) for name, r in generation.items()},
                      "models": models.figures})


def significant(change: tuple[float, float]) -> bool:
    """Whether a (difference, standard error) is more than two standard errors from zero."""
    return bool(np.isfinite(change[1]) and abs(change[0]) > 2 * change[1] + 1e-12)


def what_it_shows(tables: dict, changes: dict, n_items: int) -> str:
    """The readings the numbers support, each checked against its standard error."""
    choice = tables["multiple choice"]
    parts = [f"Multiple choice over the same {n_items} held-out questions: ECE "
             + ", ".join(f"{choice[name]['ece']:.3f} ({name})" for name in choice)
             + "; accuracy " + ", ".join(f"{choice[name]['accuracy']:.3f}" for name in choice)
             + " against mean confidence " + ", ".join(f"{choice[name]['confidence']:.3f}" for name in choice) + "."]
    for name, change in changes.items():
        readings = []
        for metric in ("ece", "auroc"):
            value, stderr = change[metric]
            label = "ECE" if metric == "ece" else "AUROC"
            if not np.isfinite(value):
                readings.append(f"{label} undefined (no right or no wrong answers)")
            elif significant(change[metric]):
                readings.append(f"{label} {'rises' if value > 0 else 'falls'} by {abs(value):.3f} ± {stderr:.3f}")
            else:
                readings.append(f"{label} {value:+.3f} ± {stderr:.3f} (within two standard errors)")
        parts.append(f"{name}: " + ", ".join(readings) + ".")
    replies, answers = tables["greedy replies"], tables["answer probability"]
    for name in replies:
        if name in answers:
            parts.append(f"{name}'s greedy replies: accuracy {replies[name]['accuracy']:.3f}, sequence probability "
                         f"{replies[name]['confidence']:.3f} on average (ECE {replies[name]['ece']:.3f}), answer "
                         f"probability {answers[name]['confidence']:.3f} (ECE {answers[name]['ece']:.3f}).")
    lowered = all(answers[name]["ece"] < replies[name]["ece"] for name in answers)
    parts.append("A reply's own probability counts one phrasing of its answer (the SFT data teaches plain, polite "
                 "and padded phrasings), so it can only understate the answer's probability; summing over the "
                 "phrasings the model samples " + ("lowers the ECE of every model here." if lowered and answers else
                                                   "does not lower the ECE of every model here.")
                 + " Where these numbers contradict the chapter's claim, the claim does not hold for these models: "
                   "read them as measured.")
    return " ".join(parts)
