"""Lab: alignment on a real model. "Preference tuning makes a model's outputs better", on SmolLM2.

The question. minifm lab alignment measures the chapter's claim on minifm's own 1M-parameter models: from one
SFT model, do DPO and PPO-ptx (with a reward model trained on preference pairs) raise the TRUE reward,
tinyworld.ground_truth_reward, which real systems can only estimate? This lab asks the same of a real
pretrained chat model, SmolLM2-135M-Instruct (30 layers, 134.5M parameters, its own ChatML chat template):
  1. how good is a reward model with SmolLM2's backbone, on tinyworld preference pairs it never saw
     (held-out preference accuracy, correlation with the true reward)?
  2. started from the same SFT'd SmolLM2, do DPO and PPO-ptx raise the mean true reward of sampled answers
     to held-out prompts, measured against the SFT model with the same evaluation seed, over training seeds?

The setup (preset "default"; every number is a PRESETS value).
  0. untuned   SmolLM2-135M-Instruct as shipped (the GGUF dequantized to float32), evaluated as below.
  1. SFT       tinyworld's train instructions (the lifecycle's data: tinyworld.instructions("train"),
               60% plain / 20% polite / 20% filler answers) rendered with SmolLM2's chat template (its
               default system turn, the user turn, the assistant turn), the loss on the assistant turn only
               (its <|im_end|> included; the mask is tested). LoRA r=16 on q, k, v, o (1.4% of the
               parameters): full fine-tuning runs took 1.5-2x as long as LoRA runs in lab peft-real and
               would add 1.08 GB of AdamW state (2 x 4 bytes x 134.5M), and this lab's budget is ~20
               minutes of 2 cores for everything.
               The adapter is MERGED into the weights afterwards (merge_and_unload: W + (alpha/r) B A), so
               the SFT model is a plain GPT again: the frozen reference of DPO and PPO, the start of the
               reward model and of every policy, each of which gets a fresh LoRA of its own. Only the
               adapter is kept on disk (runs/sft_lora_*.safetensors, 7 MB); a resumed run rebuilds the SFT model
               from the base and it.
  2. reward    RewardModel (minifm.models.heads: the backbone's final hidden state at the last real
               token -> Linear(576, 1), zero-initialised) with the SFT model as backbone (InstructGPT's
               choice), LoRA r=16 on q, k, v, o plus the head trained, Bradley-Terry loss
               (minifm.train.reward) on tinyworld.preferences("train") pairs in the chat template; judged
               on held-out pairs (tinyworld.preferences("test")): preference accuracy (binomial s.e.) and
               Pearson / Spearman r of the learned reward with the true reward over every held-out answer
               (95% interval by Fisher's z, alignment.pearson_interval).
  3. methods   from the SFT model, each with a fresh LoRA r=16 (q, k, v, o) seeded by the run's seed:
        DPO      minifm.train.dpo on the reward model's training pairs (sigmoid loss, beta, the
                 reference = the SFT model, its log-probabilities computed once), max_steps set by
                 alignment.matched_dpo_steps so that it backpropagates as many sequences as PPO without ptx
        PPO-ptx  minifm.train.ppo.PPOTrainer (GAE, a value model started from the reward model: its
                 backbone with its own LoRA and head), rollouts on the train prompts, KL leash kl_coef to
                 the SFT model, and InstructGPT's ptx term: ptx_coef x the NLL of the SFT demonstrations
     Seeds 0, 1, 2 (the default; `--seeds N` changes it; at least 2 are needed for a standard error).
  4. judged    every policy and the SFT model answer the same held-out instructions
               (tinyworld.instructions("test"): prompts the SFT data never contains), `eval_samples` answers
               each sampled at PPO's temperature, with the evaluation seed = the training seed; each answer
               is scored by tinyworld.ground_truth_reward (+1 correct / -1 wrong, +0.2 polite, -0.05 per extra
               word up to -0.5, -0.5 rude), averaged per prompt. Reported: the mean true reward, its
               difference to the SFT model evaluated with the same seed, and the mean and paired standard
               error of that difference over seeds (alignment.paired_over_seeds, with a paired t-test), plus
               accuracy (tinyworld.grade), the learned reward, the polite share, the sampled KL to the SFT
               model, and the wall and CPU time of every training run (CPU time counts both cores: on a
               shared machine it is the steadier figure).

What to expect. tinyworld's world is fictional: its facts are not in SmolLM2's weights and a few dozen SFT
steps cannot teach the held-out prompts' facts (the held-out prompts ask other questions about the same
world), so most held-out answers are wrong whatever the method (true reward near -1) and what preference
tuning can move is the style part of the reward (polite prefix, no filler, no rudeness), worth up to ~0.2
-- and the translation and arithmetic prompts SmolLM2 can partly answer from its own knowledge.

Cost, measured (default preset, 3 seeds, 2 cores shared with other jobs at load average 7-9): 41.9 min of
wall time for 18.1 CPU-minutes (the process got 43% of one core), peak RSS 3.6 GiB. Per seed: DPO ~30 CPU-s of
training, PPO-ptx ~125 (rollouts and four scoring passes per iteration), an evaluation 20-40 CPU-s. On an idle
2-core machine DEFAULT_MINUTES is the estimate from that CPU time.

The tiny preset (tests, CI) runs everything on a random 2-layer model of SmolLM2's layout with SmolLM2's real
tokenizer and chat template: its numbers check the machinery and mean nothing.

Simplifications: LoRA instead of full fine-tuning everywhere (see 1.), one SFT model and one reward model for
every seed (the seed changes the method's LoRA initialisation, data order and sampling, and the evaluation's
sampling), tens of steps (far from convergence), no hyper-parameter tuned per method, sub-runs checkpointed
as whole units (a sub-run interrupted half-way starts again), 3 seeds make rough standard errors.
"""
from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
from scipy import stats

from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.checkpoint import load_safetensors, save_safetensors
from minifm.data.batches import IGNORE_INDEX, pad_right
from minifm.data.conversations import assistant_turns, chat_ids, decode_response, end_of_turn_id, padding_id
from minifm.lab.alignment import backward_sequences, matched_dpo_steps, paired_over_seeds, pearson_interval
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, settings_fingerprint
from minifm.lab.peft_real import TINY_MODEL, fine_tune, load_base
from minifm.lifecycle.evaluation import sampled_kl
from minifm.models.heads import RewardModel, ValueModel
from minifm.peft import LoraConfig, get_peft_model
from minifm.pretrained.registry import resolve_model_path
from minifm.sampling.generate import generate
from minifm.train.dpo import DPOConfig, evaluate_dpo, precompute_reference, train_dpo_encoded
from minifm.train.plots import pyplot, save_figure
from minifm.train.ppo import PPOConfig, PPOTrainer
from minifm.train.reward import RewardConfig, train_reward_model_encoded
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

NAME = "alignment-real"
CLAIM = "preference tuning makes a model's outputs better (on a real model)"
SUMMARY = ("SmolLM2-135M-Instruct: LoRA SFT on tinyworld, a LoRA reward model, DPO and PPO-ptx over seeds, judged "
           "by the true reward")
DEFAULT_MINUTES = 15

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
METHODS = ("DPO", "PPO-ptx")

PRESETS = {
    "tiny": dict(model="smollm2-135m-instruct", tiny_model=TINY_MODEL, lora_rank=4, seeds=2,
                 sft=dict(n_train=16, max_steps=3, batch_size=4, lr=3e-3),
                 reward=dict(n_train_pairs=16, n_eval_pairs=8, max_steps=3, batch_size=4, lr=3e-3),
                 dpo=dict(per_device_train_batch_size=2, learning_rate=3e-3, beta=0.1),
                 ppo=dict(max_steps=2, per_device_train_batch_size=4, response_length=6, num_ppo_epochs=1,
                          num_mini_batches=2, learning_rate=1e-3, kl_coef=0.1, temperature=0.7, ptx_coef=1.0,
                          ptx_batch_size=2),
                 methods=list(METHODS), eval_prompts=6, eval_samples=1, max_new_tokens=6),
    "default": dict(model="smollm2-135m-instruct", tiny_model=None, lora_rank=16, seeds=3,
                    sft=dict(n_train=128, max_steps=16, batch_size=8, lr=2e-3),
                    reward=dict(n_train_pairs=48, n_eval_pairs=40, max_steps=12, batch_size=4, lr=1e-3),
                    dpo=dict(per_device_train_batch_size=2, learning_rate=1e-3, beta=0.1),
                    ppo=dict(max_steps=4, per_device_train_batch_size=8, response_length=16, num_ppo_epochs=1,
                             num_mini_batches=2, learning_rate=5e-4, kl_coef=0.1, temperature=0.7, ptx_coef=1.0,
                             ptx_batch_size=4),
                    methods=list(METHODS), eval_prompts=24, eval_samples=1, max_new_tokens=16),
}


# ------------------------------------------------------------------ the data in SmolLM2's chat template
def user_turn(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """The chat up to the assistant's turn (the template's generation prompt), ready for sampling."""
    return chat_ids(tokenizer, user_turn(prompt), add_generation_prompt=True)


def reply_tokens(tokenizer, prompt: str, reply: str) -> tuple[list[int], list[int]]:
    """(prompt ids, the assistant turn's ids up to and including its end-of-turn token)."""
    start = prompt_tokens(tokenizer, prompt)
    ids, turns = assistant_turns(tokenizer, user_turn(prompt) + [{"role": "assistant", "content": reply}])
    _, turn_start, turn_stop = turns[-1]
    if turn_start != len(start):
        raise ValueError(f"the assistant turn of {prompt!r} starts at token {turn_start}, not after the "
                         f"{len(start)}-token prompt")
    return start, ids[turn_start:turn_stop]


def encode_demonstration(tokenizer, prompt: str, completion: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of one SFT example: labels -100 everywhere but the assistant turn."""
    start, reply = reply_tokens(tokenizer, prompt, completion)
    ids = np.asarray(start + reply, dtype=np.int64)  # (T,)
    labels = np.concatenate([np.full(len(start), IGNORE_INDEX, dtype=np.int64), ids[len(start):]])  # (T,)
    return ids, labels


def encode_pair(tokenizer, pair: dict) -> dict:
    """One tinyworld preference pair as the reward and DPO trainers take it (encode_preference_pairs' layout)."""
    start, chosen = reply_tokens(tokenizer, pair["prompt"], pair["chosen"])
    _, rejected = reply_tokens(tokenizer, pair["prompt"], pair["rejected"])
    return {"chosen": start + chosen, "rejected": start + rejected, "prompt_length": len(start),
            "margin": 0.0, "prompt": pair["prompt"], "chosen_text": pair["chosen"],
            "rejected_text": pair["rejected"]}


# ------------------------------------------------------------------ models
def lora(settings: dict) -> LoraConfig:
    rank = settings["lora_rank"]
    return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(ATTENTION))


def trainable_state(model) -> dict[str, np.ndarray]:
    return {name: np.array(p.data) for name, p in model.named_parameters() if p.requires_grad}


def save_trainable_state(model, path) -> dict[str, np.ndarray]:
    """Write `model`'s trainable parameters to a safetensors file (atomically: an interrupted write leaves no
    half file) and return them."""
    state = trainable_state(model)
    save_safetensors(path, state)
    return state


def load_trainable_state(model, path) -> None:
    """Put the arrays saved by save_trainable_state into `model`'s trainable parameters (names and shapes must
    match)."""
    saved = load_safetensors(path)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        raise ValueError(f"{path}: saved parameters {sorted(saved)[:4]}... do not match the model's "
                         f"trainable ones {sorted(params)[:4]}...")
    for name, p in params.items():
        if saved[name].shape != p.data.shape:
            raise ValueError(f"{path}: {name} has shape {saved[name].shape}, the model's is {p.data.shape}")
        p.data[...] = saved[name]


def with_lora(model, settings: dict, seed: int):
    """A trainable copy of `model` with a fresh LoRA (its A drawn from `seed`, B = 0: the copy's outputs are the
    model's until it trains)."""
    return get_peft_model(copy.deepcopy(model), lora(settings), rng=np.random.default_rng(seed))


def reward_model_from(sft, settings: dict) -> RewardModel:
    reward_model = RewardModel(with_lora(sft, settings, seed=0))
    reward_model.eval()
    return reward_model


def value_model_from(reward_model) -> ValueModel:
    """PPO's critic: a copy of the reward model (TRL's start) whose LoRA and head train; its base stays frozen."""
    value_model = ValueModel.from_reward_model(reward_model)
    value_model.requires_grad_(False)
    for name, p in value_model.named_parameters():
        if ".lora_" in name or name.startswith("value_head."):
            p.requires_grad = True
    return value_model


class Timer:
    """Wall and CPU seconds of a block (CPU: the process's, every thread)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return False


# ------------------------------------------------------------------ evaluation
def evaluate(policy, reference, reward_model, tokenizer, prompts: list[str], samples: int, temperature: float,
             max_new_tokens: int, seed: int, batch_size: int = 20) -> dict:
    """Sampled answers (`samples` per prompt, the generator seeded with `seed`): the true reward per prompt,
    accuracy, the learned reward (None without a reward model), the polite share and the sampled KL(policy ||
    reference) (0 when the policy is the reference, None without one)."""
    repeated = prompts * samples
    rng = np.random.default_rng(seed)
    answers, learned, kls, weights = [], [], [], []
    with no_grad():
        for start in range(0, len(repeated), batch_size):
            ids = [prompt_tokens(tokenizer, p) for p in repeated[start:start + batch_size]]
            out = generate(policy, ids, max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                           eos_token_id=end_of_turn_id(tokenizer), pad_token_id=padding_id(tokenizer), seed=rng,
                           return_dict_in_generate=True)
            answers += [decode_response(tokenizer, out.new_tokens(row)) for row in range(len(ids))]
            if reward_model is not None:
                learned.append(reward_model.score(out.sequences, out.attention_mask))  # (b,)
            if reference is not None and policy is not reference:
                kls.append(sampled_kl(policy, reference, out, temperature))
                weights.append(len(ids))
    truth = np.array([tinyworld.ground_truth_reward(p, a) for p, a in zip(repeated, answers)])  # (prompts x samples,)
    per_prompt = truth.reshape(samples, len(prompts)).mean(axis=0)  # (prompts,)
    return {"per_prompt": per_prompt.tolist(), "reward": float(per_prompt.mean()),
            "accuracy": float(np.mean([tinyworld.grade(p, a) for p, a in zip(repeated, answers)])),
            "learned": float(np.concatenate(learned).mean()) if learned else None,
            "kl": float(np.average(kls, weights=weights)) if kls else 0.0 if policy is reference else None,
            "polite": float(np.mean([tinyworld.tasks.strip_polite_prefix(a)[1] for a in answers])),
            "examples": [{"prompt": p, "reply": a, "true_reward": float(r)}
                         for p, a, r in list(zip(repeated, answers, truth))[:4]]}


def reward_model_metrics(reward_model, pairs: list[dict], pad_id: int, batch_size: int = 16) -> dict:
    """Held-out preference accuracy and the correlation of the learned reward with the true reward over every
    chosen and rejected answer (evaluate_reward_model's figures, on pairs already in the chat template)."""
    from_pairs = [[p["chosen"] for p in pairs], [p["rejected"] for p in pairs]]
    scores = []
    for rows in from_pairs:
        part = []
        for start in range(0, len(rows), batch_size):
            ids, mask = pad_right(rows[start:start + batch_size], pad_id)  # (b, T) each
            part.append(reward_model.score(ids, mask))
        scores.append(np.concatenate(part))
    chosen, rejected = scores
    truth = np.array([tinyworld.ground_truth_reward(p["prompt"], p[key]) for key in ("chosen_text", "rejected_text")
                      for p in pairs])
    learned = np.concatenate([chosen, rejected])
    return {"preference_accuracy": float(np.mean(chosen > rejected)),
            "pearson_r": float(stats.pearsonr(learned, truth)[0]),
            "spearman_r": float(stats.spearmanr(learned, truth)[0]), "n_pairs": len(pairs),
            "chosen_scores": chosen.tolist(), "rejected_scores": rejected.tolist()}


# ------------------------------------------------------------------ settings of the two methods
def ppo_config(settings: dict, seed: int) -> PPOConfig:
    return PPOConfig(**settings["ppo"], seed=seed)


def dpo_config(settings: dict, seed: int) -> DPOConfig:
    """DPO at matched compute: as many sequences backpropagated as PPO without its ptx term."""
    steps = matched_dpo_steps(PPOConfig(**settings["ppo"]), settings["dpo"]["per_device_train_batch_size"])
    return DPOConfig(**settings["dpo"], max_steps=steps, warmup_steps=0, lr_scheduler_type="constant",
                     max_length=4096, precompute_ref_log_probs=False, seed=seed)


def sequences_backpropagated(method: str, settings: dict) -> int:
    """alignment.backward_sequences with this lab's settings (PPO-ptx counts its demonstrations too)."""
    if method == "DPO":
        config = dpo_config(settings, 0)
        return backward_sequences("DPO", {"dpo": {"max_steps": config.max_steps,
                                                  "per_device_train_batch_size": config.per_device_train_batch_size}})
    return backward_sequences(method, {"ppo": dict(settings["ppo"])})


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    fingerprint = settings_fingerprint({key: value for key, value in s.items() if key != "methods"})
    runs = lab.path("runs")
    runs.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_from_pretrained(resolve_model_path(s["model"]))
    pad_id = padding_id(tokenizer)
    sft_tasks = tinyworld.instructions("train", n=s["sft"]["n_train"])
    demonstrations = [encode_demonstration(tokenizer, t["prompt"], t["completion"]) for t in sft_tasks]
    train_prompts = [t["prompt"] for t in sft_tasks]
    train_pairs = [encode_pair(tokenizer, p) for p in tinyworld.preferences("train", n=s["reward"]["n_train_pairs"])]
    eval_pairs = [encode_pair(tokenizer, p) for p in tinyworld.preferences("test", n=s["reward"]["n_eval_pairs"])]
    eval_prompts = [t["prompt"] for t in tinyworld.instructions("test")][:s["eval_prompts"]]
    temperature = s["ppo"]["temperature"]
    sft_path = runs / f"sft_lora_{fingerprint}.safetensors"
    reward_path = runs / f"reward_lora_{fingerprint}.safetensors"
    models: dict = {}

    def base():
        """The untuned model, loaded on first use (a re-run that keeps every sub-run loads nothing)."""
        if "base" not in models:
            with Timer() as timer:
                models["base"] = load_base(s["model"], s["tiny_model"])[0]
                models["base"].requires_grad_(False)
            lab.log(f"loaded {s['model']} ({models['base'].config.n_layer} layers) in {timer.wall:.1f} s")
        return models["base"]

    def sft_model():
        """The SFT model: the base with the trained adapter merged in place (the base is not needed after SFT)."""
        if "sft" not in models:
            peft = models.pop("sft_peft", None)
            if peft is None:  # a resumed run: the saved adapter onto the base
                peft = get_peft_model(base(), lora(s), rng=np.random.default_rng(0))
                load_trainable_state(peft, sft_path)
            models.pop("base", None)
            models["sft"] = peft.merge_and_unload()
            models["sft"].requires_grad_(False)
            models["sft"].eval()
        return models["sft"]

    def reward_model():
        if "reward" not in models:
            models["reward"] = reward_model_from(sft_model(), s)
            load_trainable_state(models["reward"], reward_path)
            models["reward"].requires_grad_(False)
        return models["reward"]

    def judge(policy, reference, scorer, seed: int) -> dict:
        with Timer() as timer:
            result = evaluate(policy, reference, scorer, tokenizer, eval_prompts, s["eval_samples"], temperature,
                              s["max_new_tokens"], seed)
        return dict(result, eval_seconds=timer.wall, eval_cpu_seconds=timer.cpu)

    # 0. the untuned model, for reference (no reward model exists yet: no learned reward, no KL)
    untuned = lab.sub_run(f"untuned seed=0 {fingerprint}", lambda: judge(base(), None, None, 0))

    # 1. SFT: LoRA on the base itself, saved, then merged
    def train_sft() -> dict:
        model = base()
        total = int(sum(p.size for p in model.parameters()))
        peft = get_peft_model(model, lora(s), rng=np.random.default_rng(0))
        with Timer() as timer:
            result, _ = fine_tune(peft, demonstrations, pad_id, {"max_steps": s["sft"]["max_steps"],
                                                                  "batch_size": s["sft"]["batch_size"]},
                                  s["sft"]["lr"], seed=0)
        state = save_trainable_state(peft, sft_path)
        models["sft_peft"] = peft
        return {"losses": [float(x) for x in result.losses()], "steps": result.step, "train_seconds": timer.wall,
                "train_cpu_seconds": timer.cpu, "trainable_params": int(sum(v.size for v in state.values())),
                "total_params": total, "load_average": os.getloadavg()[0]}

    sft_run = lab.sub_run(f"SFT LoRA {fingerprint}", train_sft)

    # 2. the reward model
    def train_reward() -> dict:
        model = reward_model_from(sft_model(), s)
        config = RewardConfig(learning_rate=s["reward"]["lr"], max_steps=s["reward"]["max_steps"],
                              per_device_train_batch_size=s["reward"]["batch_size"], warmup_steps=0,
                              lr_scheduler_type="constant", max_length=4096, seed=0)
        with Timer() as timer:
            result = train_reward_model_encoded(model, train_pairs, pad_id, config)
        state = save_trainable_state(model, reward_path)
        model.requires_grad_(False)
        models["reward"] = model
        with Timer() as eval_timer:
            metrics = reward_model_metrics(model, eval_pairs, pad_id)
        return dict(metrics, losses=[float(x) for x in result.losses()], steps=result.step,
                    train_seconds=timer.wall, train_cpu_seconds=timer.cpu, eval_seconds=eval_timer.wall,
                    trainable_params=int(sum(v.size for v in state.values())), load_average=os.getloadavg()[0])

    reward_run = lab.sub_run(f"reward model LoRA {fingerprint}", train_reward)
    lab.log(f"reward model: held-out preference accuracy {reward_run['preference_accuracy']:.3f}, "
            f"Pearson r {reward_run['pearson_r']:.3f}")

    # 3. the methods, seed-major: an interrupted run has every method for its first seeds
    baseline, methods = [], {method: [] for method in s["methods"]}
    for seed in range(s["seeds"]):
        baseline.append(lab.sub_run(f"evaluate SFT seed={seed} {fingerprint}",
                                    lambda seed=seed: judge(sft_model(), sft_model(), reward_model(), seed)))
        for method in s["methods"]:
            def train_and_judge(method=method, seed=seed) -> dict:
                if method == "DPO":
                    if "scored_pairs" not in models:
                        models["scored_pairs"] = with_reference_logps(sft_model(), train_pairs, pad_id)
                    policy, facts = train_dpo_policy(sft_model(), models["scored_pairs"], pad_id, s, seed)
                elif method == "PPO-ptx":
                    policy, facts = train_ppo_policy(sft_model(), reward_model(), tokenizer, train_prompts,
                                                     demonstrations, s, seed)
                else:
                    raise ValueError(f"unknown method {method!r}; methods: {list(METHODS)}")
                return dict(facts, evaluation=judge(policy, sft_model(), reward_model(), seed),
                            backward_sequences=sequences_backpropagated(method, s), load_average=os.getloadavg()[0])

            row = lab.sub_run(f"{method} seed={seed} {fingerprint}", train_and_judge)
            methods[method].append(row)
            lab.log(f"{method} seed {seed}: true reward {row['evaluation']['reward']:+.3f} (SFT "
                    f"{baseline[-1]['reward']:+.3f}), train {row['train_seconds']:.0f} s wall, "
                    f"{row['train_cpu_seconds']:.0f} s CPU")
    report(lab, sft_run, reward_run, untuned, baseline, methods, len(eval_prompts))


def train_dpo_policy(sft, train_pairs: list[dict], pad_id: int, settings: dict, seed: int):
    """DPO from a fresh LoRA on the SFT model (the reference scores each batch as it comes: a few steps need fewer
    reference passes than scoring every pair first); then the DPO loss over all its training pairs, against the
    reference log-probabilities stored in them (`with_reference_logps`)."""
    policy = with_lora(sft, settings, seed)
    config = dpo_config(settings, seed)
    with Timer() as timer:
        result, last = train_dpo_encoded(policy, train_pairs, pad_id, config, ref_policy=sft)
    policy.eval()
    after = evaluate_dpo(policy, train_pairs, config, pad_id, 16)
    return policy, {"losses": [float(x) for x in result.losses()], "steps": result.step, "last_batch": last,
                    "train_pairs_after": after, "train_seconds": timer.wall, "train_cpu_seconds": timer.cpu}


def with_reference_logps(reference, pairs: list[dict], pad_id: int) -> list[dict]:
    """Copies of `pairs` holding the reference's summed log-probabilities of chosen and rejected (computed once for
    every seed: the reference is the SFT model throughout)."""
    scored = [dict(pair) for pair in pairs]
    precompute_reference(reference, scored, pad_id, 16)
    return scored


def train_ppo_policy(sft, reward_model, tokenizer, train_prompts: list[str], demonstrations, settings: dict,
                     seed: int):
    """PPO-ptx from a fresh LoRA on the SFT model, against the reward model, its value model a copy of it."""
    policy = with_lora(sft, settings, seed)
    value_model = value_model_from(reward_model)

    def ground_truth(prompt_indices, responses):
        return np.array([tinyworld.ground_truth_reward(train_prompts[i], decode_response(tokenizer, r))
                         for i, r in zip(prompt_indices, responses)])

    trainer = PPOTrainer(ppo_config(settings, seed), policy, reward_model,
                         [prompt_tokens(tokenizer, p) for p in train_prompts], value_model=value_model,
                         ref_policy=sft, stop_token_id=end_of_turn_id(tokenizer), pad_token_id=padding_id(tokenizer),
                         ground_truth_fn=ground_truth, ptx_examples=demonstrations)
    with Timer() as timer:
        history = trainer.train()
    policy.eval()
    keep = ("iteration", "reward_mean", "ground_truth_reward_mean", "kl", "ptx_loss", "response_length")
    return policy, {"history": [{name: row[name] for name in keep} for row in history], "steps": len(history),
                    "train_seconds": timer.wall, "train_cpu_seconds": timer.cpu}


# ------------------------------------------------------------------ the report
def method_figures(baseline: list[dict], methods: dict) -> dict:
    """Per method: mean true reward over seeds, the paired difference to SFT over seeds, and the rest."""
    sft_rewards = [run["reward"] for run in baseline]
    figures = {}
    for method, seeds in methods.items():
        if not seeds:
            continue
        evaluations = [run["evaluation"] for run in seeds]
        rewards = [e["reward"] for e in evaluations]
        figures[method] = {
            "seeds": len(seeds), "reward": float(np.mean(rewards)), "reward_se": mean_and_stderr(rewards)[1],
            "rewards_per_seed": rewards, "vs_sft": paired_over_seeds(sft_rewards[:len(rewards)], rewards),
            "accuracy": float(np.mean([e["accuracy"] for e in evaluations])),
            "learned": float(np.mean([e["learned"] for e in evaluations])),
            "kl": float(np.mean([e["kl"] for e in evaluations])),
            "polite": float(np.mean([e["polite"] for e in evaluations])),
            "backward_sequences": seeds[0]["backward_sequences"],
            "train_seconds": mean_and_stderr([run["train_seconds"] for run in seeds]),
            "train_cpu_seconds": mean_and_stderr([run["train_cpu_seconds"] for run in seeds]),
            "load_average": float(np.mean([run["load_average"] for run in seeds]))}
    return figures


def plot_results(untuned: dict, baseline: list[dict], methods: dict, figures: dict, path) -> None:
    """Left: mean true reward per policy (± s.e. over seeds) with each seed's value beside it. Right: the PPO-ptx rollouts'
    learned and true reward per iteration, one line per seed."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    names = ["untuned", "SFT"] + list(figures)
    per_seed = [[untuned["reward"]], [run["reward"] for run in baseline]] + [figures[m]["rewards_per_seed"]
                                                                            for m in figures]
    for index, (name, values) in enumerate(zip(names, per_seed)):
        mean, se = mean_and_stderr(values)
        left.errorbar(index, mean, yerr=se, fmt="s", markersize=8, capsize=5, color=f"C{index}")
        left.plot(np.full(len(values), index + 0.12), values, "k.", markersize=6)
    left.axhline(mean_and_stderr(per_seed[1])[0], color="C1", linestyle=":", linewidth=1, label="SFT mean")
    left.set_xticks(range(len(names)))
    left.set_xticklabels(names)
    left.set_ylabel("true reward of sampled answers, held-out prompts")
    left.set_title("True reward (squares: mean ± s.e. over seeds; dots: seeds)")
    left.grid(alpha=0.3, axis="y")
    for index, run in enumerate(methods.get("PPO-ptx", [])):
        history = run["history"]
        iterations = [row["iteration"] for row in history]
        right.plot(iterations, [row["ground_truth_reward_mean"] for row in history], "s-", markersize=3,
                   color=f"C{index}", label=f"true reward, seed {index}")
        right.plot(iterations, [row["reward_mean"] for row in history], "--", color=f"C{index}",
                   label=f"learned reward, seed {index}")
    right.set_xlabel("PPO-ptx iteration")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_ylabel("mean reward of the iteration's rollouts")
    right.set_title("PPO-ptx rollouts (train prompts)")
    right.grid(alpha=0.3)
    if methods.get("PPO-ptx"):
        right.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def verdict(figures: dict) -> str:
    """Plain words per method: raised / lowered the true reward beyond two paired standard errors, or not."""
    sentences = []
    for method, f in figures.items():
        versus = f["vs_sft"]
        if f["seeds"] < 2 or not versus["se"] > 0:
            words = ("cannot be judged: no spread over seeds to measure noise by (one seed, or every seed moved "
                     "alike)")
        elif versus["mean"] > 2 * versus["se"]:
            words = "raised the true reward beyond two paired standard errors"
        elif versus["mean"] < -2 * versus["se"]:
            words = "lowered the true reward beyond two paired standard errors"
        else:
            words = "did not change the true reward beyond two paired standard errors"
        sentences.append(f"{method} {words}: {versus['mean']:+.3f} ± {versus['se']:.3f} against SFT over "
                         f"{f['seeds']} seeds (paired t-test p = {versus['p_value']:.3f}).")
    return " ".join(sentences)


def report(lab: LabRun, sft_run: dict, reward_run: dict, untuned: dict, baseline: list[dict], methods: dict,
           n_prompts: int) -> None:
    s = lab.settings
    figures = method_figures(baseline, methods)
    every = [untuned, sft_run, reward_run] + baseline + [run for runs in methods.values() for run in runs]
    total_wall = sum(run["seconds"] for run in every)
    total_cpu = sum(run.get(key, 0.0) for run in every + [run["evaluation"] for runs in methods.values()
                                                            for run in runs]
                    for key in ("train_cpu_seconds", "eval_cpu_seconds"))
    plot_results(untuned, baseline, methods, figures, lab.path("alignment_real.png"))
    sft_rewards = [run["reward"] for run in baseline]
    sft_mean, sft_se = mean_and_stderr(sft_rewards)
    rows = [["untuned SmolLM2", "—", f"{untuned['reward']:+.3f}", f"{untuned['reward'] - baseline[0]['reward']:+.3f}"
             " (seed 0)", "—", f"{untuned['accuracy']:.3f}", "—", f"{untuned['polite']:.2f}",
             "—", "—", "—"],
            ["SFT (LoRA, merged)", len(baseline), f"{sft_mean:+.3f} ± {sft_se:.3f}", "0", "—",
             f"{np.mean([r['accuracy'] for r in baseline]):.3f}", f"{np.mean([r['learned'] for r in baseline]):+.3f}",
             f"{np.mean([r['polite'] for r in baseline]):.2f}", "0", f"{sft_run['train_seconds']:.0f}",
             f"{sft_run['train_cpu_seconds']:.0f}"]]
    for method, f in figures.items():
        versus = f["vs_sft"]
        rows.append([method, f["seeds"], f"{f['reward']:+.3f} ± {f['reward_se']:.3f}",
                     f"{versus['mean']:+.3f} ± {versus['se']:.3f}", f"{versus['p_value']:.3f}",
                     f"{f['accuracy']:.3f}", f"{f['learned']:+.3f}", f"{f['polite']:.2f}", f"{f['kl']:.3f}",
                     f"{f['train_seconds'][0]:.0f}", f"{f['train_cpu_seconds'][0]:.0f}"])
    accuracy = reward_run["preference_accuracy"]
    accuracy_se = math.sqrt(accuracy * (1 - accuracy) / max(reward_run["n_pairs"], 1))
    low, high = pearson_interval(reward_run["pearson_r"], 2 * reward_run["n_pairs"])
    reward_table = markdown_table(
        ["held-out pairs", "preference accuracy ± s.e.", "Pearson r with the true reward [95%]", "Spearman",
         "train loss first -> last", "steps", "train s (wall / CPU)"],
        [[reward_run["n_pairs"], f"{accuracy:.3f} ± {accuracy_se:.3f}",
          f"{reward_run['pearson_r']:.3f} [{low:.3f}, {high:.3f}]", f"{reward_run['spearman_r']:.3f}",
          f"{reward_run['losses'][0]:.3f} -> {reward_run['losses'][-1]:.3f}", reward_run["steps"],
          f"{reward_run['train_seconds']:.0f} / {reward_run['train_cpu_seconds']:.0f}"]])
    model = ("SmolLM2-135M-Instruct (float32 from its Q4_1 GGUF)" if not s["tiny_model"] else
             "a random 2-layer model of SmolLM2's layout with its tokenizer (the tiny preset: its numbers mean "
             "nothing)")
    dpo_rows = methods.get("DPO", [])
    dpo_text = ""
    if dpo_rows:
        before = math.log(2)  # the fresh LoRA leaves the policy equal to its reference: every pair's loss is log 2
        after = np.mean([r["train_pairs_after"]["eval_loss"] for r in dpo_rows])
        margin = np.mean([r["train_pairs_after"]["eval_rewards_accuracy"] for r in dpo_rows])
        dpo_text = (f" DPO's loss over all its {s['reward']['n_train_pairs']} training pairs went {before:.3f} "
                    f"(log 2: at the start the policy is its reference) -> {after:.3f} (mean over seeds) "
                    f"and its implicit reward ranks {margin:.3f} of them right.")
    ppo_rows = methods.get("PPO-ptx", [])
    ppo_text = ""
    if ppo_rows:
        first = np.mean([r["history"][0]["ground_truth_reward_mean"] for r in ppo_rows])
        last = np.mean([r["history"][-1]["ground_truth_reward_mean"] for r in ppo_rows])
        proxy_first = np.mean([r["history"][0]["reward_mean"] for r in ppo_rows])
        proxy_last = np.mean([r["history"][-1]["reward_mean"] for r in ppo_rows])
        ppo_text = (f" PPO-ptx's rollouts (train prompts): learned reward {proxy_first:+.3f} -> {proxy_last:+.3f}, "
                    f"true reward {first:+.3f} -> {last:+.3f} from its first to its last iteration (mean over seeds).")
    setup = (f"{model}, {sft_run['total_params']:,} parameters; LoRA r={s['lora_rank']} (alpha {2 * s['lora_rank']}) "
             f"on q, k, v, o: {sft_run['trainable_params']:,} trainable. SFT: {s['sft']['n_train']} tinyworld "
             f"instructions in SmolLM2's chat template, {sft_run['steps']} steps of batch {s['sft']['batch_size']}, "
             f"lr {s['sft']['lr']:g}, loss {sft_run['losses'][0]:.3f} -> {np.mean(sft_run['losses'][-4:]):.3f}; "
             f"the adapter merged. Reward model: {s['reward']['n_train_pairs']} pairs, {reward_run['steps']} steps. "
             f"DPO: beta {s['dpo']['beta']:g}, lr {s['dpo']['learning_rate']:g}, batch "
             f"{s['dpo']['per_device_train_batch_size']} pairs, {dpo_config(s, 0).max_steps} steps (matched to PPO). "
             f"PPO-ptx: {s['ppo']['max_steps']} iterations of {s['ppo']['per_device_train_batch_size']} rollouts "
             f"(up to {s['ppo']['response_length']} tokens), {s['ppo']['num_ppo_epochs']} epoch(s), kl_coef "
             f"{s['ppo']['kl_coef']:g}, ptx_coef {s['ppo']['ptx_coef']:g}, lr {s['ppo']['learning_rate']:g}. "
             f"Judged on {n_prompts} held-out instructions x {s['eval_samples']} answer(s) sampled at temperature "
             f"{s['ppo']['temperature']:g} (up to {s['max_new_tokens']} tokens), evaluation seed = training seed; "
             f"'vs SFT' is the mean over seeds of (policy - SFT with the same seed) ± its standard error over seeds. "
             f"Times: wall and CPU seconds of training (mean over seeds; 2 cores, shared: the mean 1-minute load "
             f"average at the methods' ends was "
             f"{np.mean([f['load_average'] for f in figures.values()]) if figures else float('nan'):.1f}). "
             f"Every sub-run together (loading, training, evaluation): {total_wall / 60:.1f} min of wall time"
             f"{f', {total_cpu / 60:.1f} CPU-minutes of training and evaluation' if total_cpu else ''}.")
    example_lines = [f"- {name}: {e['prompt']!r} -> {e['reply']!r} (true reward {e['true_reward']:+.2f})"
                     for name, e in [("untuned", untuned["examples"][0]), ("SFT", baseline[0]["examples"][0])]
                     + [(m, methods[m][0]["evaluation"]["examples"][0]) for m in figures]]
    shows = (verdict(figures) + f" The SFT model itself scores {sft_mean:+.3f} against the untuned model's "
             f"{untuned['reward']:+.3f} (seed 0).{dpo_text}{ppo_text} Read the result as measured at this budget "
             f"(tens of LoRA steps on a 135M model, {len(baseline)} seeds), not as a property of the methods.")
    sections = [
        ("Question", f"Do DPO and PPO-ptx, started from the same SFT'd SmolLM2-135M-Instruct, raise the true "
                     f"reward (tinyworld.ground_truth_reward) of its answers to held-out prompts? (The chapter: "
                     f"\"{CLAIM}\".)"),
        ("Setup", setup),
        ("Reward model", reward_table),
        ("Policies", markdown_table(["policy", "seeds", "true reward ± s.e. (seeds)", "vs SFT ± paired s.e.",
                                     "paired p", "accuracy", "learned reward", "polite share", "KL to SFT",
                                     "train wall s", "train CPU s"], rows)
         + "\n\n![true reward per policy](alignment_real.png)"),
        ("Answers (seed 0, first held-out prompt)", "\n".join(example_lines)),
        ("What it shows", shows),
    ]
    lab.write_report("Alignment on a real model: SmolLM2-135M-Instruct, DPO and PPO-ptx against SFT", sections,
                     {"sft": sft_run, "reward_model": reward_run, "untuned": untuned, "sft_evaluations": baseline,
                      "methods": methods, "policies": figures, "n_prompts": n_prompts})
