"""Lab: alignment. "Preference tuning makes a model's outputs better."

The question. After SFT, a model is tuned on human preferences: a reward model learns them from
pairs of answers (chosen beats rejected), then reinforcement learning (PPO, or GRPO's group-relative
variant) maximises the reward model's score with a KL leash to the SFT model; InstructGPT's PPO-ptx
adds the SFT demonstrations' likelihood to keep the model's skills; DPO skips the reward model and
trains on the pairs directly. tinyworld knows the true reward (tinyworld.ground_truth_reward, the
stand-in for the people whose preferences the pairs record), so three things can be measured that
real systems can only estimate:
  1. how good is the reward model, against how many preference pairs it saw and what it started from
     (the pre-trained model or the SFT model, InstructGPT's choice)?
  2. do PPO, PPO-ptx, GRPO and DPO, started from the same SFT model at matched compute, raise the
     TRUE reward, and which most?
  3. over-optimisation: the policy climbs the reward model's score (the proxy); does the true reward
     follow as the policy moves away from the SFT model (Gao et al. 2023)?

The setup. minifm's own models as `minifm lifecycle` (default preset) builds them (minifm/lab/own_model.py),
trained with the lifecycle's own stage functions (reward_stage, ppo_stage, dpo_stage) and settings:
  1. reward models on 250 / 1,000 / 2,500 preference pairs from each backbone, the same optimisation
     steps each (fewer pairs are seen more often), judged on the same 200 held-out pairs: preference
     accuracy (binomial standard error) and Pearson r with the true reward over every held-out answer
     (95% interval by Fisher's z);
  2. from the same SFT model and the same reward model, with seeds 0, 1, 2:
        PPO       the lifecycle's PPO settings without the ptx term
        PPO-ptx   the lifecycle's default (ptx_coef 1.0)
        GRPO      advantage_estimator="grpo": num_generations answers per prompt, rewards normalised
                  within the group, no value model; per_device_train_batch_size / num_generations prompts,
                  so an iteration samples as many answers as PPO's
        DPO       the lifecycle's DPO (with its RPO term), max_steps set so it backpropagates as many
                  sequences as PPO: matched compute is counted as sequences through the policy's
                  backward pass (PPO: iterations x rollouts x epochs; DPO: steps x pairs x 2);
                  PPO-ptx adds its demonstrations, rollout sampling is extra for the RL methods
     each judged on every held-out instruction (answers sampled at PPO's temperature, the
     evaluation seed equal to the training seed): the true reward averaged per prompt, its
     difference to the SFT model evaluated with the same seed, and the mean and paired standard
     error of those differences over the seeds (the seed is the unit: it changes the training);
  3. one PPO run without the KL penalty and without ptx for longer, its rollouts' proxy and true
     reward per iteration against the rollouts' KL from the SFT model.

Simplifications: tiny models; 3 seeds (paired standard errors over 3 seeds are rough: a paired
t-test is shown with them); the reward model of part 2 is the 2,500-pair SFT-backbone one for
every method; no hyper-parameter was tuned per method.
"""
from __future__ import annotations

import math
import numpy as np
from scipy import stats

from minifm.autograd.grad_mode import no_grad
from minifm.checkpoint import has_checkpoint
from minifm.data import tinyworld
from minifm.data.conversations import decode_response
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, quiet
from minifm.lab.own_model import TINY_OVERRIDES, OwnModels
from minifm.lifecycle.evaluation import context_length, fitting, sample_answers, sampled_kl
from minifm.lifecycle.post_training import dpo_stage, ppo_folder, ppo_stage, reward_stage
from minifm.train.plots import plot_xy, pyplot, save_figure
from minifm.train.ppo import PPOConfig

NAME = "alignment"
CLAIM = "preference tuning makes a model's outputs better"
SUMMARY = "reward model vs pairs and backbone; PPO / PPO-ptx / GRPO / DPO at matched compute over seeds; over-optimisation"
DEFAULT_MINUTES = 12

PRESETS = {
    "tiny": dict(lifecycle="tiny", lifecycle_overrides=TINY_OVERRIDES,
                 pair_counts=[32, 64], backbones=["pre-trained", "SFT"], methods=["PPO", "PPO-ptx", "GRPO", "DPO"],
                 seeds=1, eval_prompts=8, eval_samples=1, overopt_steps=2, overopt_kl_coef=0.0),
    "default": dict(lifecycle="default", lifecycle_overrides={},
                    pair_counts=[250, 1000, 2500], backbones=["pre-trained", "SFT"],
                    methods=["PPO", "PPO-ptx", "GRPO", "DPO"], seeds=3, eval_prompts=None, eval_samples=2,
                    overopt_steps=40, overopt_kl_coef=0.0),
}
GRPO_GENERATIONS = 4


# ------------------------------------------------------------------ matched compute
def method_settings(method: str, post: dict, seed: int) -> dict:
    """The post_training settings of `method` at `seed`: the lifecycle's, changed as the docstring says."""
    ppo = dict(post["ppo"], seed=seed)
    if method == "PPO":
        ppo["ptx_coef"] = 0.0
    elif method == "GRPO":
        ppo.update(advantage_estimator="grpo", num_generations=GRPO_GENERATIONS, ptx_coef=0.0,
                   per_device_train_batch_size=max(1, ppo["per_device_train_batch_size"] // GRPO_GENERATIONS))
    elif method == "DPO":
        dpo = dict(post["dpo"], seed=seed)
        dpo["max_steps"] = matched_dpo_steps(PPOConfig(**post["ppo"]), dpo["per_device_train_batch_size"])
        return dict(post, dpo=dpo)
    elif method != "PPO-ptx":
        raise ValueError(f"unknown method {method!r}; methods: PPO, PPO-ptx, GRPO, DPO")
    return dict(post, ppo=ppo)


def backward_sequences(method: str, settings: dict) -> int:
    """Sequences through the policy's backward pass over the whole run (matched compute; see the docstring)."""
    if method == "DPO":
        dpo = settings["dpo"]
        return dpo["max_steps"] * dpo["per_device_train_batch_size"] * 2  # chosen and rejected
    config = PPOConfig(**settings["ppo"])
    rollouts = config.per_device_train_batch_size * (config.num_generations if config.advantage_estimator == "grpo"
                                                     else 1)
    sequences = config.max_steps * rollouts * config.num_ppo_epochs
    if config.ptx_coef > 0:  # one demonstration mini-batch per PPO mini-batch update
        sequences += config.max_steps * config.num_ppo_epochs * config.num_mini_batches * config.ptx_batch_size
    return sequences


def matched_dpo_steps(ppo: PPOConfig, dpo_batch: int) -> int:
    """DPO steps that backpropagate as many sequences as PPO without ptx: iterations x rollouts x epochs / (2 x batch)."""
    return max(1, round(ppo.max_steps * ppo.per_device_train_batch_size * ppo.num_ppo_epochs / (2 * dpo_batch)))


# ------------------------------------------------------------------ statistics
def paired_over_seeds(first: list[float], second: list[float]) -> dict:
    """second - first per seed: the mean, its standard error over seeds, and a paired t-test's p-value."""
    differences = np.asarray(second, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    mean, stderr = mean_and_stderr(differences)
    p_value = float(stats.ttest_rel(second, first).pvalue) if differences.size >= 2 and stderr > 0 else float("nan")
    return {"mean": mean, "se": stderr, "p_value": p_value, "per_seed": differences.tolist()}


def pearson_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The confidence interval of a Pearson correlation by Fisher's z = atanh(r), standard error 1 / sqrt(n - 3)."""
    if n <= 3 or not math.isfinite(r) or abs(r) >= 1:
        return float("nan"), float("nan")
    z = math.atanh(r)
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


# ------------------------------------------------------------------ evaluation
def evaluate(policy, sft, reward_model, tokenizer, prompts: list[str], samples: int, temperature: float,
             max_new_tokens: int, seed: int) -> dict:
    """Sampled answers to every prompt (`samples` each): the true reward per prompt, accuracy, the learned
    reward, the polite share and the sampled KL(policy || SFT) per answer (0 for the SFT model itself)."""
    repeated = prompts * samples
    with no_grad():
        outs = sample_answers(policy, tokenizer, repeated, max_new_tokens, temperature, seed=seed)
        learned = np.concatenate([reward_model.score(out.sequences, out.attention_mask) for out in outs])
        if policy is sft:
            kl = 0.0
        else:
            weights = [out.sequences.shape[0] for out in outs]
            kl = float(np.average([sampled_kl(policy, sft, out, temperature) for out in outs], weights=weights))
    answers = [decode_response(tokenizer, out.new_tokens(row)) for out in outs for row in range(out.sequences.shape[0])]
    truth = np.array([tinyworld.ground_truth_reward(p, a) for p, a in zip(repeated, answers)])
    per_prompt = truth.reshape(samples, len(prompts)).mean(axis=0)  # (prompts,)
    return {"per_prompt": per_prompt.tolist(), "reward": float(per_prompt.mean()),
            "accuracy": float(np.mean([tinyworld.grade(p, a) for p, a in zip(repeated, answers)])),
            "learned": float(learned.mean()), "kl": kl,
            "polite": float(np.mean([tinyworld.tasks.strip_polite_prefix(a)[1] for a in answers])),
            "examples": [{"prompt": p, "reply": a} for p, a in list(zip(repeated, answers))[:3]]}


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    models = OwnModels(lab, s["lifecycle"], s["lifecycle_overrides"])
    pretrained, tokenizer = models.pretrained()
    sft = models.sft()
    reward_model = models.reward_model()
    sft.requires_grad_(False)  # the frozen reference; every trainer works on a copy
    post = models.post_training_settings()
    runs = lab.path("runs")

    # 1. reward models: pairs x backbone
    reward_cells = {}
    for backbone in s["backbones"]:
        for pairs in s["pair_counts"]:
            key = f"reward backbone={backbone} pairs={pairs}"
            if backbone == "SFT" and pairs == post["n_train_pairs"]:
                reward_cells[key] = dict(models.figures["reward"], shared=True)  # the shared reward model itself
                continue

            def train_reward(backbone=backbone, pairs=pairs, key=key):
                directory = runs / key.replace(" ", "_").replace("=", "-")
                start = pretrained if backbone == "pre-trained" else sft
                _, metrics = reward_stage(start, tokenizer, directory, dict(post, n_train_pairs=pairs), log=quiet,
                                          resume=has_checkpoint(directory / "reward"))
                return {name: metrics[name] for name in ("preference_accuracy", "pearson_r", "spearman_r", "n_pairs",
                                                         "steps")}

            reward_cells[key] = lab.sub_run(key, train_reward)

    # 2. the four methods, matched compute, several seeds
    temperature = PPOConfig(**post["ppo"]).temperature
    tasks = fitting(tinyworld.instructions("test"), tokenizer, context_length(sft), post["max_new_tokens"])
    prompts = [task["prompt"] for task in tasks][:s["eval_prompts"]]

    def judge(policy, seed):
        return evaluate(policy, sft, reward_model, tokenizer, prompts, s["eval_samples"], temperature,
                        post["max_new_tokens"], seed)

    baseline = [lab.sub_run(f"evaluate SFT seed={seed} prompts={len(prompts)}", lambda seed=seed: judge(sft, seed))
                for seed in range(s["seeds"])]
    methods = {}
    for method in s["methods"]:
        for seed in range(s["seeds"]):
            key = f"{method} seed={seed}"

            def train_and_judge(method=method, seed=seed, key=key):
                directory = runs / key.replace(" ", "_").replace("=", "-")
                settings = method_settings(method, post, seed)
                history = []
                if method == "DPO":
                    policy, metrics = dpo_stage(sft, tokenizer, directory, settings, log=quiet,
                                                resume=has_checkpoint(directory / "dpo"))
                else:
                    config = PPOConfig(**settings["ppo"])
                    policy, history, metrics = ppo_stage(sft, reward_model, tokenizer, directory, settings, log=quiet,
                                                         resume=has_checkpoint(directory / ppo_folder(config)))
                return {"evaluation": judge(policy, seed), "train_seconds": metrics["seconds"],
                        "backward_sequences": backward_sequences(method, settings),
                        "history": [{name: row[name] for name in ("iteration", "reward_mean",
                                                                  "ground_truth_reward_mean", "kl")}
                                    for row in history]}

            methods.setdefault(method, []).append(lab.sub_run(key, train_and_judge))

    # 3. over-optimisation: PPO without its leash
    def overoptimise():
        directory = runs / "overoptimisation"
        settings = method_settings("PPO", post, 0)
        settings["ppo"].update(kl_coef=s["overopt_kl_coef"], max_steps=s["overopt_steps"])
        config = PPOConfig(**settings["ppo"])
        policy, history, _ = ppo_stage(sft, reward_model, tokenizer, directory, settings, log=quiet,
                                       resume=has_checkpoint(directory / ppo_folder(config)))
        return {"history": [{name: row[name] for name in ("iteration", "reward_mean", "ground_truth_reward_mean", "kl")}
                            for row in history], "evaluation": judge(policy, 0)}

    overoptimised = lab.sub_run(f"overoptimisation PPO kl_coef={s['overopt_kl_coef']:g} "
                                f"steps={s['overopt_steps']}", overoptimise)
    report(lab, models, reward_cells, baseline, methods, overoptimised, len(prompts), temperature)


# ------------------------------------------------------------------ the report
def reward_rows(cells: dict) -> list[list]:
    rows = []
    for key, cell in cells.items():
        backbone = key.split("backbone=")[1].split(" pairs=")[0]
        pairs = int(key.split("pairs=")[1])
        accuracy = cell["preference_accuracy"]
        accuracy_se = math.sqrt(accuracy * (1 - accuracy) / max(cell["n_pairs"], 1))
        low, high = pearson_interval(cell["pearson_r"], 2 * cell["n_pairs"])
        rows.append([backbone, f"{pairs:,}", f"{accuracy:.3f} ± {accuracy_se:.3f}",
                     f"{cell['pearson_r']:.3f} [{low:.3f}, {high:.3f}]", f"{cell['spearman_r']:.3f}"])
    return rows


def method_table(baseline: list[dict], methods: dict) -> tuple[list[list], dict]:
    sft_rewards = [run["reward"] for run in baseline]
    rows = [["SFT (start)", 0, "0", f"{np.mean(sft_rewards):+.3f} ± {mean_and_stderr(sft_rewards)[1]:.3f}", "—",
             f"{np.mean([run['accuracy'] for run in baseline]):.3f}",
             f"{np.mean([run['learned'] for run in baseline]):+.3f}",
             f"{np.mean([run['polite'] for run in baseline]):.2f}", "—"]]
    figures = {}
    for method, seeds in methods.items():
        evaluations = [run["evaluation"] for run in seeds]
        rewards = [e["reward"] for e in evaluations]
        versus = paired_over_seeds(sft_rewards[:len(rewards)], rewards)
        per_prompt_gain = np.mean([np.array(e["per_prompt"]) - np.array(b["per_prompt"])
                                   for e, b in zip(evaluations, baseline)], axis=0)  # (prompts,)
        figures[method] = {"reward": float(np.mean(rewards)), "reward_se_over_seeds": mean_and_stderr(rewards)[1],
                           "vs_sft": versus, "vs_sft_se_over_prompts": mean_and_stderr(per_prompt_gain)[1],
                           "accuracy": float(np.mean([e["accuracy"] for e in evaluations])),
                           "learned": float(np.mean([e["learned"] for e in evaluations])),
                           "kl": float(np.mean([e["kl"] for e in evaluations])),
                           "polite": float(np.mean([e["polite"] for e in evaluations])),
                           "backward_sequences": seeds[0]["backward_sequences"],
                           "train_seconds": float(np.mean([run["train_seconds"] for run in seeds])),
                           "rewards_per_seed": rewards}
        f = figures[method]
        rows.append([method, f"{f['backward_sequences']:,}", f"{f['kl']:.3f}",
                     f"{f['reward']:+.3f} ± {f['reward_se_over_seeds']:.3f}",
                     f"{versus['mean']:+.3f} ± {versus['se']:.3f}", f"{f['accuracy']:.3f}", f"{f['learned']:+.3f}",
                     f"{f['polite']:.2f}", f"{f['train_seconds']:.0f}"])
    return rows, figures


def plot_overoptimisation(overoptimised: dict, methods: dict, path) -> None:
    """Two panels: the unleashed PPO run's proxy and true reward per iteration; and the true reward of every
    run's rollouts against their KL from the SFT model (each point one iteration's rollouts)."""
    plt = pyplot()
    figure, (by_iteration, by_kl) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    history = overoptimised["history"]
    iterations = [row["iteration"] for row in history]
    by_iteration.plot(iterations, [row["ground_truth_reward_mean"] for row in history], "s-", markersize=3,
                      color="C1", label="true reward")
    by_iteration.set_xlabel("PPO iteration (no KL penalty, no ptx)")
    by_iteration.set_ylabel("true (ground-truth) reward of the rollouts")
    proxy = by_iteration.twinx()
    proxy.plot(iterations, [row["reward_mean"] for row in history], "--", color="grey", label="proxy (reward model)")
    proxy.set_ylabel("learned reward (proxy, arbitrary scale)")
    lines, labels = by_iteration.get_legend_handles_labels()
    proxy_lines, proxy_labels = proxy.get_legend_handles_labels()
    by_iteration.legend(lines + proxy_lines, labels + proxy_labels, loc="lower center", fontsize=8)
    by_iteration.set_title("Proxy up, true reward down")
    by_iteration.grid(alpha=0.3)
    by_kl.plot([row["kl"] for row in history], [row["ground_truth_reward_mean"] for row in history], "s",
               markersize=4, color="C1", label="PPO without KL penalty")
    for index, method in enumerate(name for name in methods if name in ("PPO", "PPO-ptx", "GRPO")):
        points = [(row["kl"], row["ground_truth_reward_mean"]) for run in methods[method] for row in run["history"]]
        if points:
            xs, ys = zip(*points)
            by_kl.plot(xs, ys, ".", alpha=0.5, color=f"C{index + 2}", label=f"{method} with its KL penalty, all seeds")
    by_kl.set_xlabel("KL(policy || SFT) of the rollouts, per answer (nats)")
    by_kl.set_ylabel("true reward of the rollouts")
    by_kl.set_title("True reward against KL, every iteration")
    by_kl.grid(alpha=0.3)
    by_kl.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def report(lab: LabRun, models: OwnModels, reward_cells: dict, baseline: list[dict], methods: dict,
           overoptimised: dict, n_prompts: int, temperature: float) -> None:
    s = lab.settings
    rows, figures = method_table(baseline, methods)
    names = list(methods)
    comparisons = {}
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            comparisons[f"{second} - {first}"] = paired_over_seeds(figures[first]["rewards_per_seed"],
                                                                   figures[second]["rewards_per_seed"])
    comparison_rows = [[name, f"{c['mean']:+.3f} ± {c['se']:.3f}", f"{c['p_value']:.3f}"]
                       for name, c in comparisons.items()]

    by_backbone = {}
    for key, cell in reward_cells.items():
        backbone = key.split("backbone=")[1].split(" pairs=")[0]
        pairs = int(key.split("pairs=")[1])
        by_backbone.setdefault(backbone, ([], [], []))
        by_backbone[backbone][0].append(pairs)
        by_backbone[backbone][1].append(cell["preference_accuracy"])
        by_backbone[backbone][2].append(cell["pearson_r"])
    plot_xy({f"preference accuracy, {b} backbone": (v[0], v[1]) for b, v in by_backbone.items()}
            | {f"Pearson r, {b} backbone": (v[0], v[2]) for b, v in by_backbone.items()},
            lab.path("reward_model.png"), "Reward model against preference pairs and backbone",
            "preference pairs (log scale)", "held-out accuracy / Pearson r", logx=True)
    plot_overoptimisation(overoptimised, methods, lab.path("overoptimisation.png"))

    history = overoptimised["history"]
    peak = max(history, key=lambda row: row["ground_truth_reward_mean"])
    last = history[-1]
    over_sft = overoptimised["evaluation"]["reward"] - baseline[0]["reward"]
    over_se = mean_and_stderr(np.array(overoptimised["evaluation"]["per_prompt"])
                              - np.array(baseline[0]["per_prompt"]))[1]
    over_text = (f"Without the KL penalty, PPO's rollouts reach KL {last['kl']:.2f} nats after {len(history)} "
                 f"iterations; their proxy reward goes {history[0]['reward_mean']:+.3f} -> {last['reward_mean']:+.3f} "
                 f"while the true reward goes {history[0]['ground_truth_reward_mean']:+.3f} -> "
                 f"{last['ground_truth_reward_mean']:+.3f} (its best, {peak['ground_truth_reward_mean']:+.3f}, at "
                 f"iteration {peak['iteration']}, KL {peak['kl']:.2f}). On the held-out prompts the final policy is "
                 f"{over_sft:+.3f} ± {over_se:.3f} (paired over prompts) against the SFT model.")
    better = [name for name in names if figures[name]["vs_sft"]["mean"] > 2 * figures[name]["vs_sft"]["se"] > 0]
    best = max(names, key=lambda name: figures[name]["reward"])
    separated = [f"{name} {c['mean']:+.3f} ± {c['se']:.3f}" for name, c in comparisons.items()
                 if abs(c["mean"]) > 2 * c["se"] > 0]
    shows = ("Methods whose true reward rises over the SFT model by more than two standard errors over seeds: "
             + (", ".join(better) if better else "none") + f". Highest mean true reward: {best} "
             f"({figures[best]['vs_sft']['mean']:+.3f} ± {figures[best]['vs_sft']['se']:.3f} over SFT). "
             "Pairwise differences beyond two standard errors over seeds: "
             + (", ".join(separated) if separated else "none") + " (3 seeds: read the p-values with care). "
             f"{over_text} Where a number contradicts the chapter's claim, the claim does not hold at this scale: "
             f"read it as measured.")
    reward_sentence = ""
    if "SFT" in by_backbone and "pre-trained" in by_backbone:
        sft_cells, pre_cells = by_backbone["SFT"], by_backbone["pre-trained"]
        reward_sentence = (f" With {sft_cells[0][-1]:,} pairs the SFT backbone reaches preference accuracy "
                           f"{sft_cells[1][-1]:.3f} (r = {sft_cells[2][-1]:.3f}) and the pre-trained one "
                           f"{pre_cells[1][-1]:.3f} (r = {pre_cells[2][-1]:.3f}); with {sft_cells[0][0]:,} pairs "
                           f"{sft_cells[1][0]:.3f} and {pre_cells[1][0]:.3f}.")
    sections = [
        ("Question", f"How good does the reward model get with more preference pairs, and do PPO, PPO-ptx, GRPO and "
                     f"DPO raise the true reward at matched compute? What happens to the true reward when the policy "
                     f"optimises the proxy hard? (The chapter: \"{CLAIM}\".)"),
        ("Setup", f"{models.describe()}. Policies evaluated on {n_prompts} held-out instructions x "
                  f"{s['eval_samples']} sampled answers at temperature {temperature:g}, {s['seeds']} seed(s); "
                  f"\"vs SFT\" is the mean over seeds of (policy - SFT evaluated with the same seed), ± its standard "
                  f"error over seeds."),
        ("1. Reward model: preference pairs and backbone",
         markdown_table(["backbone", "pairs", "held-out preference accuracy ± s.e.", "Pearson r with the true reward "
                         "[95%]", "Spearman"], reward_rows(reward_cells))
         + "\n\n" + reward_sentence.strip() + "\n\n![reward model](reward_model.png)"),
        ("2. PPO, PPO-ptx, GRPO and DPO from the same SFT model",
         markdown_table(["policy", "sequences backpropagated", "KL to SFT", "true reward ± s.e. (seeds)",
                         "vs SFT ± paired s.e. (seeds)", "accuracy", "learned reward", "polite share",
                         "train s"], rows)
         + "\n\nPairwise, paired by seed (mean ± s.e., paired t-test p):\n\n"
         + markdown_table(["difference", "true reward", "p"], comparison_rows)),
        ("3. Over-optimisation", "![over-optimisation](overoptimisation.png)\n\n" + over_text),
        ("What it shows", shows),
    ]
    lab.write_report("Alignment: reward models, PPO / PPO-ptx / GRPO / DPO, and over-optimisation", sections,
                     {"reward_models": reward_cells, "policies": figures, "comparisons": comparisons,
                      "sft": baseline, "overoptimisation": overoptimised, "models": models.figures})
