"""PPO with a KL leash (RLHF as in InstructGPT), following TRL's PPOTrainer names and semantics,
plus GRPO's group-relative advantages as an option.

One iteration (`PPOTrainer.step`):
  1. rollouts: `batch_size` prompts are continued by the policy with the sampler and KV cache
     (minifm.sampling.generate, do_sample=True, `temperature`, no top-k/top-p) for at most
     `response_length` tokens, stopping at `stop_token_id` (the chat's <|end|>);
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
     one AdamW over policy and value parameters, gradient norm clipped to `max_grad_norm`
     (the norm of the combined gradient);
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
labels, minifm.train.sft's encode/collate/loss), the usual small-scale variant: the failure PPO-ptx
fixes here is not forgetting pre-training text but the policy drifting off correct answers while it
learns the reward model's style preference, and the demonstrations are exactly the correct answers
(the reward model, which judges facts poorly, cannot hold them in place). It plays the role of
DPO's RPO term (minifm.train.dpo, `rpo_alpha`).

GRPO (`advantage_estimator="grpo"`): each prompt is sampled `num_generations` times; the advantage
of every token of a completion is its score's group-relative value (rl_math.group_relative_advantages);
there is no value model; the KL to the reference enters the loss, not the reward:
        loss = clipped_policy_loss + kl_coef * masked_mean(k3(policy, reference))
(TRL's GRPO calls kl_coef `beta`). Simplification: losses are averaged over all valid tokens of
the batch (token-level, as DAPO), not per sequence first.

Simplifications: no dropout during PPO (models run in eval mode, as TRL recommends), one model
per role (policy, reference, value, reward), no reward/critic warm-up phase.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.autograd.tensor import Tensor
from minifm.nn.module import Module
from minifm.train import rl_math, sft

ADVANTAGE_ESTIMATORS = ("gae", "grpo")


class ValueModel(Module):
    """A GPT backbone plus `value_head` (Linear(n_embd, 1), zero-initialised) at every position: (B, T) values."""

    def __init__(self, backbone):
        super().__init__()
        from minifm.nn import Linear

        self.backbone = backbone
        self.value_head = Linear(backbone.config.n_embd, 1).to(next(backbone.parameters()).dtype)
        self.value_head.weight.data[...] = 0.0  # deterministic start: every value estimate is 0
        if self.value_head.bias is not None:
            self.value_head.bias.data[...] = 0.0

    @classmethod
    def from_reward_model(cls, reward_model) -> "ValueModel":
        """Start from the reward model's backbone and head (TRL initialises the critic this way)."""
        model = cls(copy.deepcopy(reward_model.backbone))
        model.value_head.load_state_dict(reward_model.score_head.state_dict())
        return model

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids, attention_mask=None) -> Tensor:
        _, hidden = self.backbone(input_ids, attention_mask=attention_mask, return_hidden=True)  # (B, T, d)
        batch, steps = hidden.shape[0], hidden.shape[1]
        return self.value_head(hidden).reshape(batch, steps)  # (B, T)


@dataclass
class PPOConfig:
    """PPO / GRPO hyper-parameters; names and meanings follow TRL's PPOConfig (and GRPOConfig)."""

    learning_rate: float = 1e-4
    num_iterations: int = 30
    batch_size: int = 32             # prompts per iteration (GRPO: each sampled num_generations times)
    num_mini_batches: int = 1
    num_ppo_epochs: int = 4
    response_length: int = 24
    temperature: float = 0.7
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None
    adaptive_kl: bool = False
    target_kl: float = 6.0
    kl_horizon: float = 10000.0
    advantage_estimator: str = "gae"
    num_generations: int = 4
    max_grad_norm: float = 1.0
    ptx_coef: float = 0.0            # PPO-ptx: weight of the demonstrations' NLL in the loss (InstructGPT's gamma)
    ptx_batch_size: int = 16         # demonstrations per PPO mini-batch update (PPO-ptx)
    seed: int = 0

    def __post_init__(self):
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}")
        for name in ("num_iterations", "batch_size", "num_mini_batches", "num_ppo_epochs", "response_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        rows = self.batch_size * (self.num_generations if self.advantage_estimator == "grpo" else 1)
        if rows < self.num_mini_batches:
            raise ValueError(f"num_mini_batches={self.num_mini_batches} exceeds the {rows} rollouts per iteration")
        if self.advantage_estimator == "grpo" and self.num_generations < 2:
            raise ValueError(f"GRPO needs num_generations >= 2, got {self.num_generations}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.ptx_coef >= 0:
            raise ValueError(f"ptx_coef must be >= 0, got {self.ptx_coef}")
        if self.ptx_batch_size < 1:
            raise ValueError(f"ptx_batch_size must be >= 1, got {self.ptx_batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


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
                      minifm.train.sft.encode_sft_examples returns them.
    """

    def __init__(self, config: PPOConfig, policy, reward_fn, prompts, *, value_model=None, ref_policy=None,
                 stop_token_id: int, pad_token_id: int, ground_truth_fn=None, ptx_examples=None):
        from minifm.optim import AdamW

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
        self.stop_token_id, self.pad_token_id = int(stop_token_id), int(pad_token_id)
        params = [p for p in policy.parameters() if p.requires_grad]
        if self.value_model is not None:
            params += [p for p in self.value_model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        self.kl_controller = (rl_math.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                              if config.adaptive_kl else rl_math.FixedKLController(config.kl_coef))
        self.rng = np.random.default_rng(config.seed)
        self.ptx_examples = list(ptx_examples) if ptx_examples is not None else []
        self.ptx_batches = None  # endless shuffled mini-batches of demonstrations (PPO-ptx only)
        if config.ptx_coef > 0:
            if not self.ptx_examples:
                raise ValueError(f"ptx_coef={config.ptx_coef} needs ptx_examples= (SFT-encoded demonstrations)")
            # a random stream of its own, so that PPO-ptx leaves the rollout and mini-batch draws unchanged
            ptx_rng = np.random.default_rng([config.seed, 1])
            self.ptx_batches = sft.shuffled_batches(self.ptx_examples, config.ptx_batch_size)(ptx_rng)
        self.ptx_max_length = block_size  # demonstrations longer than the context are truncated
        self.iteration = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ rollouts
    def rollout(self) -> dict:
        """Sample responses and compute everything PPO needs about them (no graph)."""
        from minifm.sampling.generate import generate

        config = self.config
        copies = config.num_generations if config.advantage_estimator == "grpo" else 1
        replace = len(self.prompts) < config.batch_size
        chosen = self.rng.choice(len(self.prompts), size=config.batch_size, replace=replace)
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
        longest = max(ids.size for ids, _ in examples)
        max_length = max(1, longest - 1)  # rows as wide as the longest demonstration, not the whole context
        if self.ptx_max_length is not None:
            max_length = min(max_length, self.ptx_max_length)
        inputs, targets, mask = sft.collate(examples, max_length, self.pad_token_id)  # (b, L) each
        return sft.sft_loss(self.policy, inputs, targets, mask)

    def minibatch_loss(self, batch: dict, targets: dict, rows: np.ndarray) -> tuple[Tensor, dict]:
        config = self.config
        sequences, attention_mask = batch["sequences"][rows], batch["attention_mask"][rows]
        start, mask = batch["prompt_length"], batch["response_mask"][rows]
        new_logprobs, _ = response_logprobs(self.policy, sequences, attention_mask, start, config.temperature)  # (n, Tr)
        policy_loss, stats = rl_math.clipped_policy_loss(new_logprobs, batch["logprobs"][rows],
                                                         targets["advantages"][rows], mask, config.cliprange)
        stats["policy_loss"] = float(policy_loss.item())
        loss = policy_loss
        if self.use_value:
            values = self.value_model(sequences, attention_mask)[:, start - 1:-1]  # (n, Tr)
            value_loss, value_stats = rl_math.clipped_value_loss(values, batch["values"][rows], targets["returns"][rows],
                                                                 mask, config.cliprange_value)
            loss = loss + config.vf_coef * value_loss
            stats.update(value_stats, value_loss=float(value_loss.item()))
        else:  # GRPO: KL to the reference in the loss, k3 estimator
            log_ratio = batch["ref_logprobs"][rows].astype(new_logprobs.dtype) - new_logprobs  # (n, Tr)
            k3 = log_ratio.exp() - log_ratio - 1.0  # (n, Tr)
            kl_term = rl_math.masked_mean(k3, mask)
            loss = loss + config.kl_coef * kl_term
            stats["kl_loss"] = float(kl_term.item())
        if config.ptx_coef > 0:  # PPO-ptx
            ptx_term = self.ptx_loss()
            loss = loss + config.ptx_coef * ptx_term
            stats["ptx_loss"] = float(ptx_term.item())
        return loss, stats

    def step(self) -> dict:
        """One PPO iteration: rollouts, advantages, num_ppo_epochs of clipped updates. Returns the log record."""
        from minifm.optim import clip_grad_norm

        config = self.config
        started = time.perf_counter()
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
                    raise FloatingPointError(f"PPO loss became {loss.item()} at iteration {self.iteration}")
                loss.backward()
                clip_grad_norm(self.params, config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                collected.append(stats)
            epoch_stats.append({k: float(np.mean([s[k] for s in collected])) for k in collected[0]})
        mask = batch["response_mask"]
        sequence_kl = float(np.mean(targets["kl"].sum(axis=1)))
        kl_coef_used = self.kl_controller.value
        self.kl_controller.update(sequence_kl, n_rows)
        self.iteration += 1
        record = {
            "stage": "ppo" if config.advantage_estimator == "gae" else "grpo",
            "iteration": self.iteration,
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
            "elapsed_s": time.perf_counter() - started,
        }
        self.history.append(record)
        return record

    def train(self, num_iterations: int | None = None, log=None) -> list[dict]:
        for _ in range(num_iterations or self.config.num_iterations):
            record = self.step()
            if log:
                log(record)
        return self.history
