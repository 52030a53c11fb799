"""PPO with a KL leash (RLHF as in InstructGPT), following TRL's PPOTrainer names and semantics,
plus GRPO's group-relative advantages as an option.

One iteration (`PPOTrainer.run_step`, one step of the shared loop):
  1. rollouts: `per_device_train_batch_size` prompts are continued by the policy with the sampler
     and KV cache (minifm.sampling.generate, do_sample=True, `temperature`, no top-k/top-p) for at
     most `response_length` tokens, stopping at `stop_token_id` (the chat's <|end|>);
  2. with no graph: log-probs of the sampled tokens under the policy and under the frozen
     reference policy (both at `temperature`, as TRL), the value model's estimates, and the
     reward model's score of each whole sequence (minus `missing_eos_penalty` when a response
     never ended);
  3. per-token reward: rewards_t = -kl_coef * KL_t (rl_math.kl_per_token, `kl_estimator` "k1" or
     "k3"), with the score added at the response's last token; optionally whitened
     (`whiten_rewards`, scale only);
  4. advantages by GAE computed backwards (`gamma`, `lam`), returns = advantages + values,
     advantages whitened over valid tokens;
  5. `num_ppo_epochs` passes over the batch in `num_mini_batches` shuffled mini-batches:
        loss = clipped_policy_loss(cliprange) + vf_coef * clipped_value_loss(cliprange_value)
               [+ ptx_coef * NLL(demonstration mini-batch)]          (PPO-ptx, below)
     one AdamW over policy and value parameters (minifm.train.loop.make_optimizer; PPO's defaults:
     constant `learning_rate`, no weight decay, betas (0.9, 0.999)), gradient norm clipped to
     `max_grad_norm` (the norm of the combined gradient);
  6. the adaptive KL controller (optional, `adaptive_kl`, `target_kl`, `kl_horizon`) updates kl_coef.
Logged per iteration: mean learned reward (score), mean ground-truth reward (when a ground-truth
function is given), KL (per sequence, summed over tokens), entropy (mean per token), clip fraction,
value loss, approximate KL of each epoch, kl_coef, response length, and the PPO-ptx loss.

PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2) maximises

    E_{(x, y) ~ policy} [ r(x, y) - beta log(policy(y|x) / ref(y|x)) ]  +  gamma E_{x ~ D} [ log policy(x) ]

where beta is the KL coefficient (`kl_coef`) and gamma, the "ptx" (pre-training mix) coefficient, is
`ptx_coef`: how strongly the policy keeps predicting the text of a data set D while it chases the
reward. gamma = 0 is plain PPO. As a loss to minimise, every PPO mini-batch update adds

    ptx_coef * mean over completion tokens of -log policy(token | earlier tokens)

on the next mini-batch of `ptx_batch_size` demonstrations. InstructGPT took D = GPT-3's pre-training
data and reported gamma = 27.8 (its loss scales differ from minifm's, so the number does not carry
over). minifm uses the SFT demonstrations instead ({"prompt", "completion"} chats, completion-only
labels: minifm.data.conversations, minifm.data.batches.collate_sft, minifm.train.sft.sft_loss), the
usual small-scale variant: the failure PPO-ptx fixes here is not forgetting pre-training text but
the policy drifting off correct answers while it learns the reward model's style preference, and
the demonstrations are exactly the correct answers (the reward model, which judges facts poorly,
cannot hold them in place). It plays the role of
DPO's RPO term (minifm.train.dpo, `rpo_alpha`).

GRPO (`advantage_estimator="grpo"`): each prompt is sampled `num_generations` times; the advantage
of every token of a completion is its score's group-relative value (rl_math.group_relative_advantages);
there is no value model; the KL to the reference enters the loss, not the reward:
        loss = clipped_policy_loss + kl_coef * masked_mean(k3(policy, reference))
(TRL's GRPO calls kl_coef `beta`). Simplification: losses are averaged over all valid tokens of
the batch (token-level, as DAPO), not per sequence first.

Through the shared loop (minifm.train.loop): `PPOTrainer` is a step kind, one PPO iteration per
step, so `PPOTrainer.train(run_dir, resume, log)` gets what every stage gets: a checkpoint every
`save_steps` iterations and at the end, bit-exact resume, Ctrl-C saving the last completed
iteration (`TrainingInterrupted`), a NaN/inf loss stopping the run without saving
(`NonFiniteLossError`), metrics.jsonl (one row per iteration) and a tqdm bar. A checkpoint holds
    model.safetensors        the policy alone (it loads into a plain GPT, like an SFT output)
    value_model.safetensors  the critic (GAE only; GRPO has none)
    optimizer.safetensors    the AdamW moments over both
    train_state.json         the iteration, and PPOTrainer.state_dict(): the rollout RNG state, the
                             number of PPO-ptx mini-batches drawn (on resume the demonstration stream is
                             rebuilt from the seed and advanced past them), the KL controller's value,
                             every iteration's record, and a digest of the prompts and demonstrations
                             (a resume with other data is refused, as is one with other trajectory settings)
The reference policy is copied (when not given) when the trainer is built, before a resume loads
the checkpoint, so it stays the policy PPO started from.

Simplifications: no dropout during PPO (models run in eval mode, as TRL recommends), one model
per role (policy, reference, value, reward), no reward/critic warm-up phase.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.config import ConfigError
from minifm.data.batches import collate_sft, shuffled_batches
from minifm.sampling.generate import generate
from minifm.train import rl_math
from minifm.train.config import TrainConfig
from minifm.train.loop import NonFiniteLossError, TrainingLoop, clip_gradients, make_optimizer, rng_state
from minifm.train.sft import sft_loss

ADVANTAGE_ESTIMATORS = ("gae", "grpo")


@dataclass
class PPOConfig(TrainConfig):
    """PPO / GRPO hyper-parameters: the shared loop's knobs (TrainConfig) with PPO's defaults, then
    PPO's own with the names and meanings of TRL's PPOConfig (and GRPOConfig).

    One PPO iteration is one step of the loop: `max_steps` iterations of `per_device_train_batch_size`
    prompts. Deviation from TRL: TRL samples per_device_train_batch_size * gradient_accumulation_steps
    * num_mini_batches prompts per iteration (and GRPO counts completions, not prompts); minifm samples
    per_device_train_batch_size prompts (GRPO: each num_generations times) and splits the rollouts into
    num_mini_batches, so gradient_accumulation_steps must stay 1. The two agree when num_mini_batches = 1.
    """

    # the shared knobs, redeclared with PPO's defaults (constant lr, no warm-up, no decay, AdamW's betas)
    learning_rate: float = 1e-4
    max_steps: int = 30                     # PPO iterations
    per_device_train_batch_size: int = 32   # prompts per iteration (GRPO: each sampled num_generations times)
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    eval_steps: int = 0
    disable_tqdm: bool = True
    # PPO's own
    num_mini_batches: int = 1               # mini-batches the rollouts are split into per epoch
    num_ppo_epochs: int = 4                 # passes over each batch of rollouts
    response_length: int = 24               # tokens sampled per response
    temperature: float = 0.7                # sampling temperature of the rollouts
    kl_coef: float = 0.05                   # weight of the KL penalty to the reference (GRPO: beta)
    kl_estimator: str = "k1"                # "k1" | "k3"
    cliprange: float = 0.2                  # policy ratio clip (PPO epsilon)
    cliprange_value: float = 0.2            # value clip around the old values
    vf_coef: float = 0.1                    # weight of the value loss
    gamma: float = 1.0                      # discount of GAE
    lam: float = 0.95                       # lambda of GAE
    whiten_rewards: bool = False            # scale the per-token rewards to unit variance
    missing_eos_penalty: float | None = None # subtracted from the score of responses that never ended
    adaptive_kl: bool = False               # adapt kl_coef towards target_kl (Ziegler et al.'s controller)
    target_kl: float = 6.0                  # adaptive KL: target KL per response
    kl_horizon: float = 10000.0             # adaptive KL: horizon of the controller
    advantage_estimator: str = "gae"        # "gae" (PPO with a value model) | "grpo" (group-relative)
    num_generations: int = 4                # GRPO: samples per prompt
    ptx_coef: float = 0.0            # PPO-ptx: weight of the demonstrations' NLL in the loss (InstructGPT's gamma)
    ptx_batch_size: int = 16         # demonstrations per PPO mini-batch update (PPO-ptx)

    def validate(self) -> None:
        super().validate()
        if self.gradient_accumulation_steps != 1:
            raise ConfigError("PPOConfig.gradient_accumulation_steps must be 1 (PPO splits each iteration's "
                              f"rollouts into num_mini_batches instead), got {self.gradient_accumulation_steps}",
                              "gradient_accumulation_steps")
        self.check_choice("kl_estimator", ("k1", "k3"))
        self.check_choice("advantage_estimator", ADVANTAGE_ESTIMATORS)
        for name in ("num_mini_batches", "num_ppo_epochs", "response_length", "ptx_batch_size"):
            self.check_range(name, low=1)
        for name in ("temperature", "cliprange", "cliprange_value", "target_kl", "kl_horizon"):
            self.check_range(name, low=0, low_open=True)
        for name in ("kl_coef", "vf_coef", "ptx_coef"):
            self.check_range(name, low=0)
        self.check_range("gamma", 0, 1)
        self.check_range("lam", 0, 1)
        if self.adaptive_kl:
            self.check_range("kl_coef", low=0, low_open=True)
        if self.advantage_estimator == "grpo":
            self.check_range("num_generations", low=2)
        rows = self.per_device_train_batch_size * (self.num_generations if self.advantage_estimator == "grpo" else 1)
        if rows < self.num_mini_batches:
            raise ConfigError(f"PPOConfig.num_mini_batches={self.num_mini_batches} exceeds the {rows} rollouts per "
                              "iteration", "num_mini_batches")


def response_logprobs(model, sequences: np.ndarray, attention_mask: np.ndarray, prompt_length: int,
                      temperature: float) -> tuple[Tensor, Tensor]:
    """log pi(response token) (B, Tr) at `temperature`, and the logits used (B, Tr, V)."""
    logits = model(sequences, attention_mask=attention_mask)  # (B, T, V)
    response_logits = logits[:, prompt_length - 1:-1] / temperature  # (B, Tr, V)
    tokens = sequences[:, prompt_length:]  # (B, Tr)
    return rl_math.token_logprobs(response_logits, tokens), response_logits


class PPOTrainer:
    """Policy optimisation against a reward function with a KL leash to a frozen reference policy.

    policy            the model trained (a GPT); `ref_policy` defaults to a frozen deep copy of it.
    reward_fn         callable (sequences (N, T), attention_mask (N, T)) -> (N,) scores; a RewardModel fits.
    prompts           list of token-id lists the rollouts start from.
    value_model       a ValueModel (required for advantage_estimator="gae", unused for "grpo").
    ground_truth_fn   optional callable (prompt_indices (N,), responses list of token lists) -> (N,)
                      scores, logged only (never optimised).
    stop_token_id     the token that ends a response (<|end|>); pad_token_id fills after it.
    ptx_examples      demonstrations for PPO-ptx (needed when config.ptx_coef > 0): (input_ids, labels)
                      pairs of 1-D int arrays, labels -100 outside the completion, as
                      minifm.data.conversations.encode_sft_examples returns them.

    `train(run_dir=None, resume=False, log=None)` runs config.max_steps iterations through the shared
    loop and returns every iteration's record (`history`). As the loop's step kind it has `model` (the
    policy), `optimizer`, `extra_models` (the value model), `run_step(step)` (one iteration),
    `state_dict()` / `load_state_dict()`, `updating` and `progress(row)`.
    """

    def __init__(self, config: PPOConfig, policy, reward_fn, prompts, *, value_model=None, ref_policy=None,
                 stop_token_id: int, pad_token_id: int, ground_truth_fn=None, ptx_examples=None):
        self.config = config
        self.policy = policy
        self.ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
        self.ref_policy.requires_grad_(False)
        self.ref_policy.eval()
        self.reward_fn, self.ground_truth_fn = reward_fn, ground_truth_fn
        self.prompts = [list(map(int, p)) for p in prompts]
        if not self.prompts:
            raise ValueError("PPOTrainer needs at least one prompt")
        block_size = getattr(getattr(policy, "config", None), "block_size", None)
        longest = max(len(p) for p in self.prompts)
        if block_size is not None and longest + config.response_length > block_size:
            raise ValueError(f"the longest prompt ({longest} tokens) + response_length {config.response_length} "
                             f"exceeds the policy's block_size {block_size}; drop long prompts or shorten responses")
        self.use_value = config.advantage_estimator == "gae"
        if self.use_value and value_model is None:
            raise ValueError("advantage_estimator='gae' needs value_model= (a ValueModel)")
        self.value_model = value_model if self.use_value else None
        self.extra_models = {"value_model": self.value_model} if self.use_value else {}
        self.stop_token_id, self.pad_token_id = int(stop_token_id), int(pad_token_id)
        params = [p for p in policy.parameters() if p.requires_grad]
        if self.value_model is not None:
            params += [p for p in self.value_model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = make_optimizer(policy, config, *self.extra_models.values())
        self.kl_controller = (rl_math.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                              if config.adaptive_kl else rl_math.FixedKLController(config.kl_coef))
        self.rng = np.random.default_rng(config.seed)  # rollouts and mini-batch orders
        self.ptx_examples = list(ptx_examples) if ptx_examples is not None else []
        if config.ptx_coef > 0 and not self.ptx_examples:
            raise ValueError(f"ptx_coef={config.ptx_coef} needs ptx_examples= (SFT-encoded demonstrations)")
        self.ptx_draws = 0  # PPO-ptx mini-batches taken from the stream so far
        self.ptx_batches = self._ptx_stream() if config.ptx_coef > 0 else None
        self.ptx_max_length = block_size  # demonstrations longer than the context are truncated
        self.data_digest = self._digest_data()
        self.history: list[dict] = []
        self.updating = False

    @property
    def model(self):
        """The module the loop saves as model.safetensors: the policy."""
        return self.policy

    @property
    def stage(self) -> str:
        return "ppo" if self.config.advantage_estimator == "gae" else "grpo"

    def _ptx_stream(self):
        """The endless shuffled stream of PPO-ptx demonstration mini-batches, advanced past `ptx_draws`.
        Its random stream is its own, so that PPO-ptx leaves the rollout and mini-batch draws unchanged."""
        ptx_rng = np.random.default_rng([self.config.seed, 1])
        stream = shuffled_batches(self.ptx_examples, self.config.ptx_batch_size)(ptx_rng)
        for _ in range(self.ptx_draws):
            next(stream)
        return stream

    def _digest_data(self) -> str:
        """SHA-256 of everything besides the config and the models that shapes the run: prompts,
        demonstrations, stop and pad ids."""
        data = {"prompts": self.prompts, "stop": self.stop_token_id, "pad": self.pad_token_id,
                "ptx": [[np.asarray(ids).tolist(), np.asarray(labels).tolist()] for ids, labels in self.ptx_examples]}
        return hashlib.sha256(json.dumps(data).encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ the loop's step kind
    def state_dict(self) -> dict:
        return {"rollout_rng_state": rng_state(self.rng), "ptx_draws": self.ptx_draws,
                "kl_coef": self.kl_controller.value, "history": self.history, "data_sha256": self.data_digest}

    def load_state_dict(self, state: dict) -> None:
        if state["data_sha256"] != self.data_digest:
            raise ValueError("resume: the prompts, PPO-ptx demonstrations or stop/pad ids differ from the "
                             "checkpoint's and would change the run")
        self.rng.bit_generator.state = state["rollout_rng_state"]
        self.kl_controller.value = float(state["kl_coef"])
        self.history = list(state["history"])
        self.ptx_draws = int(state["ptx_draws"])
        if self.ptx_batches is not None:
            self.ptx_batches = self._ptx_stream()

    def progress(self, row: dict) -> dict:
        return {"reward": f"{row['reward_mean']:+.3f}", "kl": f"{row['kl']:.3f}"}

    def train(self, run_dir=None, resume: bool = False, log=None) -> list[dict]:
        """Run config.max_steps iterations through the shared loop (checkpoints in run_dir when given;
        resume=True continues the run saved there); `log(record)` is called after every iteration.
        Returns the record of every iteration, those before a resume included."""
        def keep(record):
            self.history.append(record)
            if log is not None:
                log(record)

        TrainingLoop(self, self.config, run_dir=run_dir, stage=self.stage, log=keep).fit(resume=resume)
        return self.history

    # ------------------------------------------------------------------ rollouts
    def rollout(self) -> dict:
        """Sample responses and compute everything PPO needs about them (no graph)."""
        config = self.config
        copies = config.num_generations if config.advantage_estimator == "grpo" else 1
        n_prompts = config.per_device_train_batch_size
        chosen = self.rng.choice(len(self.prompts), size=n_prompts, replace=len(self.prompts) < n_prompts)
        prompt_indices = np.repeat(chosen, copies)  # (N,)
        self.policy.eval()
        out = generate(self.policy, [self.prompts[i] for i in prompt_indices], config.response_length,
                       do_sample=True, temperature=config.temperature, top_k=0, top_p=1.0,
                       eos_token_id=self.stop_token_id, pad_token_id=self.pad_token_id, seed=self.rng,
                       return_dict_in_generate=True)
        sequences, attention_mask, start = out.sequences, out.attention_mask, out.prompt_length
        response_mask = attention_mask[:, start:].astype(np.float64)  # (N, Tr)
        with no_grad():
            logprobs, logits = response_logprobs(self.policy, sequences, attention_mask, start, config.temperature)
            ref_logprobs, _ = response_logprobs(self.ref_policy, sequences, attention_mask, start, config.temperature)
            values = (self.value_model(sequences, attention_mask).data[:, start - 1:-1]
                      if self.use_value else np.zeros(response_mask.shape))  # (N, Tr)
            scores = np.asarray(self.reward_fn(sequences, attention_mask), dtype=np.float64).reshape(-1)  # (N,)
        if scores.shape != (len(prompt_indices),) or not np.all(np.isfinite(scores)):
            raise ValueError(f"reward_fn must return {len(prompt_indices)} finite scores, got shape {scores.shape}")
        responses = [out.new_tokens(row) for row in range(len(prompt_indices))]
        ended = np.array([self.stop_token_id in r for r in responses])
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * (~ended)
        ground_truth = None
        if self.ground_truth_fn is not None:
            ground_truth = np.asarray(self.ground_truth_fn(prompt_indices, responses), dtype=np.float64)
        return {"sequences": sequences, "attention_mask": attention_mask, "prompt_length": start,
                "response_mask": response_mask, "logprobs": logprobs.data.astype(np.float64),
                "ref_logprobs": ref_logprobs.data.astype(np.float64), "values": values.astype(np.float64),
                "scores": scores, "ground_truth": ground_truth, "ended": ended,
                "entropy": rl_math.entropy_from_logits(logits.data), "prompt_indices": prompt_indices}

    def advantages(self, batch: dict) -> dict:
        """Per-token rewards, advantages and returns for a rollout batch (steps 3-4 of the docstring)."""
        config = self.config
        mask = batch["response_mask"]
        kl = rl_math.kl_per_token(batch["logprobs"], batch["ref_logprobs"], config.kl_estimator) * mask  # (N, Tr)
        if config.advantage_estimator == "grpo":
            group = rl_math.group_relative_advantages(batch["scores"], config.num_generations)  # (N,)
            advantages = group[:, None] * mask  # (N, Tr)
            return {"kl": kl, "rewards": None, "advantages": advantages, "returns": np.zeros_like(mask)}
        kl_coef = self.kl_controller.value
        rewards = -kl_coef * kl  # (N, Tr)
        last = mask.sum(axis=1).astype(np.int64) - 1  # (N,) index of each response's last token
        rewards[np.arange(len(last)), last] += batch["scores"]
        if config.whiten_rewards:
            rewards = rl_math.whiten(rewards, mask, shift_mean=False) * mask
        advantages, returns = rl_math.gae(rewards, batch["values"], config.gamma, config.lam, mask)
        advantages = rl_math.whiten(advantages, mask) * mask
        return {"kl": kl, "rewards": rewards, "advantages": advantages, "returns": returns}

    # ------------------------------------------------------------------ optimisation
    def ptx_loss(self, examples=None) -> Tensor:
        """PPO-ptx's language-modelling term: mean NLL per completion token of a mini-batch of
        demonstrations under the policy (minifm.train.sft.sft_loss). `examples` defaults to the next
        `ptx_batch_size` demonstrations of the shuffled stream."""
        if examples is None:
            examples = next(self.ptx_batches)
            self.ptx_draws += 1
        longest = max(ids.size for ids, _ in examples)
        max_length = max(1, longest - 1)  # rows as wide as the longest demonstration, not the whole context
        if self.ptx_max_length is not None:
            max_length = min(max_length, self.ptx_max_length)
        inputs, targets, mask = collate_sft(examples, max_length, self.pad_token_id)  # (b, L) each
        return sft_loss(self.policy, inputs, targets, mask)

    def minibatch_loss(self, batch: dict, targets: dict, rows: np.ndarray) -> tuple[Tensor, dict]:
        config = self.config
        sequences, attention_mask = batch["sequences"][rows], batch["attention_mask"][rows]
        start, mask = batch["prompt_length"], batch["response_mask"][rows]
        new_logprobs, _ = response_logprobs(self.policy, sequences, attention_mask, start,
                                            config.temperature)  # (n, Tr)
        policy_loss, stats = rl_math.clipped_policy_loss(new_logprobs, batch["logprobs"][rows],
                                                         targets["advantages"][rows], mask, config.cliprange)
        stats["policy_loss"] = float(policy_loss.item())
        loss = policy_loss
        if self.use_value:
            values = self.value_model(sequences, attention_mask)[:, start - 1:-1]  # (n, Tr)
            value_loss, value_stats = rl_math.clipped_value_loss(values, batch["values"][rows],
                                                                 targets["returns"][rows], mask, config.cliprange_value)
            loss = loss + config.vf_coef * value_loss
            stats.update(value_stats, value_loss=float(value_loss.item()))
        else:  # GRPO: KL to the reference in the loss, k3 estimator
            k3 = rl_math.kl_per_token(new_logprobs, batch["ref_logprobs"][rows], "k3")  # (n, Tr) Tensor
            kl_term = rl_math.masked_mean(k3, mask)
            loss = loss + config.kl_coef * kl_term
            stats["kl_loss"] = float(kl_term.item())
        if config.ptx_coef > 0:  # PPO-ptx
            ptx_term = self.ptx_loss()
            loss = loss + config.ptx_coef * ptx_term
            stats["ptx_loss"] = float(ptx_term.item())
        return loss, stats

    def run_step(self, step: int) -> dict:
        """PPO iteration number `step` (0-based): rollouts, advantages, num_ppo_epochs of clipped
        updates. Returns the iteration's record (the loop adds "stage" and "elapsed_s")."""
        config = self.config
        batch = self.rollout()
        targets = self.advantages(batch)
        n_rows = batch["sequences"].shape[0]
        self.policy.eval()
        if self.value_model is not None:
            self.value_model.eval()
        epoch_stats = []
        for _ in range(config.num_ppo_epochs):
            order = self.rng.permutation(n_rows)
            collected = []
            for rows in np.array_split(order, config.num_mini_batches):
                if batch["response_mask"][rows].sum() == 0:
                    continue
                loss, stats = self.minibatch_loss(batch, targets, rows)
                if not np.isfinite(loss.item()):
                    raise NonFiniteLossError(f"the PPO loss is {loss.item()}")
                loss.backward()
                clip_gradients(self.params, config.max_grad_norm)
                self.updating = True  # from the first update on, the weights are past the last step's
                self.optimizer.step()
                self.optimizer.zero_grad()
                collected.append(stats)
            epoch_stats.append({k: float(np.mean([s[k] for s in collected])) for k in collected[0]})
        mask = batch["response_mask"]
        sequence_kl = float(np.mean(targets["kl"].sum(axis=1)))
        kl_coef_used = self.kl_controller.value
        self.kl_controller.update(sequence_kl, n_rows)
        self.updating = False
        return {
            "iteration": step + 1,
            "reward_mean": float(np.mean(batch["scores"])),
            "ground_truth_reward_mean": (float(np.mean(batch["ground_truth"]))
                                         if batch["ground_truth"] is not None else None),
            "kl": sequence_kl,
            "kl_coef": kl_coef_used,
            "entropy": float(rl_math.masked_mean(batch["entropy"], mask)),
            "clipfrac": epoch_stats[-1]["clipfrac"],
            "policy_loss": epoch_stats[-1]["policy_loss"],
            "value_loss": epoch_stats[-1].get("value_loss"),
            "vf_clipfrac": epoch_stats[-1].get("vf_clipfrac"),
            "ptx_loss": epoch_stats[-1].get("ptx_loss"),  # None without PPO-ptx
            "approxkl_per_epoch": [s["approxkl"] for s in epoch_stats],
            "response_length": float(mask.sum(axis=1).mean()),
            "ended_fraction": float(np.mean(batch["ended"])),
        }
