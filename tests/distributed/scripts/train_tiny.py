"""A tiny float64 GPT trained by the shared loop, on one process or on every rank of `mpiexec -n N`.

The distributed tests run it on 2 ranks at per-rank batch B and on one process at batch 2 * B and
compare what each rank leaves in --results (its parameters as rank<r>.safetensors, its metrics rows
and facts as rank<r>.json). Everything that would make the two differ beyond rounding is off:
float64, no dropout, one thread per process (set by the launcher), the same seed for the data.
The model is initialised from seed = rank, so only the broadcast of rank 0's weights makes the ranks
(and the single process) start equal.

Failure injection for the failure-path tests: --fail-rank R --fail-step S --fail-kind raise|nan|hang
makes rank R raise, return a NaN loss, or sleep for an hour in its loss at step S; --sleep adds a
pause to every loss call (a slow run to send Ctrl-C to).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import minifm.functional as F
from minifm.autograd.tensor import Tensor
from minifm.checkpoint import save_safetensors
from minifm.data.batches import causal_lm_batches
from minifm.distributed import DistributedConfig, get_world
from minifm.models import GPT, GPTConfig
from minifm.train.config import TrainConfig
from minifm.train.loop import Trainer

VOCAB, BLOCK = 32, 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", required=True)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--accumulate", default="tokens")
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-step", type=int, default=-1)
    parser.add_argument("--fail-kind", default="raise", choices=("raise", "nan", "hang"))
    args = parser.parse_args()

    world = get_world()
    windows = np.random.default_rng(123).integers(0, VOCAB, size=(args.windows, BLOCK + 1))  # (n, T + 1)

    def batches(rng):
        while True:  # epoch after epoch, each one permutation cut into consecutive batches
            yield from causal_lm_batches(windows, args.batch, rng, drop_last=True)

    calls = {"n": 0}

    def loss_fn(model, batch):
        step = calls["n"] // args.accumulation + 1
        calls["n"] += 1
        if args.sleep:
            time.sleep(args.sleep)
        inputs, targets = batch  # (B, T), (B, T)
        loss = F.cross_entropy(model(inputs), targets)
        if world.rank == args.fail_rank and step == args.fail_step:
            if args.fail_kind == "raise":
                raise RuntimeError(f"injected failure on rank {world.rank} at step {step}")
            if args.fail_kind == "hang":
                time.sleep(3600)
            loss = loss * Tensor(np.array(np.nan))
        return loss, targets.size

    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                          seed=world.rank))
    model.to(np.float64)
    config = TrainConfig(learning_rate=3e-3, max_steps=args.steps, per_device_train_batch_size=args.batch,
                         gradient_accumulation_steps=args.accumulation, accumulate=args.accumulate, warmup_steps=2,
                         min_lr=1e-4, weight_decay=0.1, max_grad_norm=1.0, eval_steps=0, save_steps=args.save_steps,
                         seed=0, disable_tqdm=True)
    distributed = DistributedConfig(bucket_cap_mb=args.bucket_mb, overlap=bool(args.overlap), zero_stage=args.zero,
                                    check_every=args.check_every, timeout_s=world.timeout_s)
    trainer = Trainer(model, loss_fn, batches, config, run_dir=args.run_dir, stage="pretrain", distributed=distributed)
    result = trainer.fit(resume=args.resume)

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    save_safetensors(results / f"rank{world.rank}.safetensors", model.state_dict())
    facts = {"rank": world.rank, "size": world.size, "step": result.step, "tokens": result.tokens,
             "losses": result.losses(), "optimizer_states": len(trainer.optimizer.state),
             "micro_batches": trainer.steps.micro_batches}
    (results / f"rank{world.rank}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main()
