"""Benchmark: one GPT training step (forward, backward, AdamW) in minifm vs PyTorch eager, side by side.

For each configuration, builds the same GPT-2-style model (learned positions, LayerNorm, GELU MLP,
tied head, float32) in minifm and in plain PyTorch (nn.Linear / F.scaled_dot_product_attention /
torch.optim.AdamW), with torch.set_num_threads equal to minifm's thread budget
(minifm.kernels.threads.num_threads(), or --threads N for both), and reports the median step time of
each (the two models' steps alternate, so both see the same background load; "pair ratio" is the
median of the per-pair ratios), tokens per second, and model-FLOPs utilisation (MFU) against the
float32 GEMM peak measured on this machine (a 2048 x 2048 product through minifm.kernels.threads.matmul
on the same thread budget, printed first).
FLOPs per step = minifm.models.sizes.flops_per_token(config, T) * B * T (6 N + 12 L T d per token).

    python benchmarks/bench_train_step.py            # all four configs
    python benchmarks/bench_train_step.py --quick    # tiny and small, fewer repeats
    python benchmarks/bench_train_step.py --profile small   # also print a cProfile of one minifm step
    python benchmarks/bench_train_step.py --threads 1       # both libraries on one thread
    python benchmarks/bench_train_step.py --timing shared   # both in this process (the old way)

By default (--timing processes) each library steps in a child process of its own (the child runs this
script, so it imports both libraries, but builds and steps only its own model), and this process asks the
two in turn for one timed step at a time. Timing
both in one process made them share one allocator (glibc's sliding mmap threshold, raised by one
library's frees, spared the other its page faults), two OpenMP runtimes and the caches, which is not how
either is used. The torch child gets torch's own OpenMP settings, not the wait policy and spin count
importing minifm sets for its runtime (minifm.kernels._backend.OPENMP_DEFAULTS), unless the user set them.

Each timed step follows --lead-in untimed steps of the same library, run just before it in the same
child (default 1), so that it is measured as in a training loop: after a step of its own. Without the
lead-in every timed step started while the other library's last step still held the machine: torch's
OpenMP threads poll for about 6-9 ms after their work before they sleep (libgomp's default), and on 2
cores they took the second core from the first milliseconds of minifm's step, which then ran 1.11-1.16x
torch's time on the tiny config instead of 0.90-0.96x when torch's threads polled only briefly
(docs/performance.md, "The benchmark's turns"). --lead-in 0 gives the old measurement.

The machine's load average is printed before and after: on a shared machine the figures depend on it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

try:  # imported before minifm, so torch's OpenMP runtime starts with the user's settings, not minifm's
    import torch
except ImportError:
    torch = None

import minifm
from minifm.kernels import _backend, threads as minifm_threads
from minifm.models import GPT, GPTConfig, sizes
from minifm.optim import AdamW, param_groups_for_weight_decay

from bench_common import StepServer, profile_report, serve_steps, timed, torch_child_environment  # a sibling script

CONFIGS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, T=64, B=16, V=256),
    "small": dict(n_layer=4, n_embd=128, n_head=4, T=128, B=16, V=2048),
    "medium": dict(n_layer=6, n_embd=256, n_head=8, T=256, B=8, V=8192),
    "gpt2-mini": dict(n_layer=6, n_embd=384, n_head=6, T=256, B=8, V=16384),
}


def gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 size^3 product on minifm's thread budget (minifm.kernels.threads.matmul: NumPy's
    BLAS on its threads, or row blocks on the kernels' threads where BLAS stays on one)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    minifm_threads.matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        minifm_threads.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def paired_times(ours, theirs, repeats: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    """Step times of `ours` and `theirs` (callables returning one step's wall seconds; theirs None: skipped),
    alternating step by step.

    Alternating means both see the same background load at nearly the same moment, so the ratio of
    a pair is meaningful even when the machine is shared and absolute times drift by several x.
    """
    for _ in range(warmup):
        ours()
        if theirs is not None:
            theirs()
    our_times, their_times = [], []
    for _ in range(repeats):
        our_times.append(ours())
        their_times.append(theirs() if theirs is not None else float("nan"))
    return our_times, their_times


def model_config(name: str) -> GPTConfig:
    shape = CONFIGS[name]
    return GPTConfig(vocab_size=shape["V"], block_size=shape["T"], n_layer=shape["n_layer"], n_head=shape["n_head"],
                     n_embd=shape["n_embd"])


def step_fn(side: str, name: str):
    """One training step of config `name` in `side`'s library ("minifm" or "torch")."""
    if side == "minifm":
        return minifm_step_fn(model_config(name), CONFIGS[name]["B"])
    return torch_step_fn(torch, model_config(name), CONFIGS[name]["B"])


def step_timers(name: str, args, threads: int):
    """(minifm timer, torch timer or None, servers to close): callables returning one step's wall seconds,
    in child processes (--timing processes) or in this one, each after args.lead_in untimed steps."""
    if args.timing == "shared":
        ours, theirs = step_fn("minifm", name), step_fn("torch", name) if torch is not None else None
        return (lambda: timed(ours, args.lead_in)[0]), \
            (None if theirs is None else (lambda: timed(theirs, args.lead_in)[0])), []
    command = [sys.executable, os.path.abspath(__file__), "--child-config", name, "--child-threads", str(threads)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    servers = [StepServer("minifm", command + ["--child", "minifm"], dict(os.environ))]
    if torch is not None:
        servers.append(StepServer("torch", command + ["--child", "torch"],
                                  torch_child_environment(_backend.OPENMP_DEFAULTS)))
    timers = [(lambda server=server: server.step(args.lead_in)[0]) for server in servers]
    return timers[0], (timers[1] if len(timers) > 1 else None), servers


def minifm_step_fn(config: GPTConfig, batch: int):
    model = GPT(config)
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(batch, config.block_size + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        optimizer.zero_grad()
        loss = model.loss(inputs, targets)
        loss.backward()
        optimizer.step()

    return step


def torch_step_fn(torch, config: GPTConfig, batch: int):
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))
            self.fc_in, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            h = self.norm1(x)
            q, k, v = (proj(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                       for proj in (self.q_proj, self.k_proj, self.v_proj))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
            x = x + self.o_proj(attended)
            return x + self.fc_out(F.gelu(self.fc_in(self.norm2(x))))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.blocks = nn.ModuleList(Block(config.n_embd, config.n_head) for _ in range(config.n_layer))
            self.norm_f = nn.LayerNorm(config.n_embd)

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.norm_f(x) @ self.wte.weight.T

    model = TorchGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, config.vocab_size, (batch, config.block_size + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        optimizer.zero_grad()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny and small only, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--profile", choices=list(CONFIGS), default=None,
                        help="print the top functions of a cProfile of one minifm step")
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="thread budget for minifm (OpenMP and BLAS) and torch; default minifm's")
    parser.add_argument("--timing", choices=("processes", "shared"), default="processes",
                        help="each library in its own child process, taking turns (default), or both in this one")
    parser.add_argument("--lead-in", type=int, default=1,
                        help="untimed steps a library runs right before each of its timed steps (default 1: "
                             "the timed step follows a step of its own library, as in a training loop)")
    parser.add_argument("--child", choices=("minifm", "torch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", choices=list(CONFIGS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        minifm_threads.set_num_threads(args.threads)
    if args.child is not None:  # a step server: one library, one model
        if args.child == "torch":
            torch.set_num_threads(args.child_threads)
        serve_steps(step_fn(args.child, args.child_config))
        return
    names = args.configs or (["tiny", "small"] if args.quick else list(CONFIGS))
    repeats = args.repeats or (3 if args.quick else 7)

    info = minifm.kernels.backend_info()
    threads = minifm_threads.num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    peak = gemm_peak()
    print(f"minifm backend: {info}")
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}")
    if minifm_threads.blas_threads() == 1 and minifm_threads.row_blocks() == 1:
        products = "BLAS on one thread, each product whole"
    elif minifm_threads.blas_threads() == 1:
        products = f"BLAS on one thread, products in up to {minifm_threads.row_blocks()} row blocks on the kernels' threads"
    else:
        products = (f"BLAS on {minifm_threads.blas_threads()} threads from {minifm_threads.GEMM_PARALLEL_FLOPS:.0e} "
                    "FLOP, smaller products in row blocks on the kernels' threads")
    print(f"threads: {threads} (minifm: {products}); measured float32 GEMM peak (2048^3 product on the "
          f"budget): {peak / 1e9:.1f} GFLOP/s; timing: {args.timing}, {args.lead_in} untimed lead-in step(s) "
          "before each timed one")
    header = (f"{'config':<10} {'params':>9} {'minifm ms':>10} {'torch ms':>9} {'ratio':>6} {'pair ratio':>10} "
              f"{'minifm tok/s':>13} {'torch tok/s':>12} {'minifm MFU':>11} {'torch MFU':>10}")
    print(header)
    print("-" * len(header))
    for name in names:
        shape, config = CONFIGS[name], model_config(name)
        tokens = shape["B"] * shape["T"]
        flops = sizes.flops_per_token(config, shape["T"]) * tokens
        ours_timer, theirs_timer, servers = step_timers(name, args, threads)
        our_times, their_times = paired_times(ours_timer, theirs_timer, repeats)
        for server in servers:
            server.close()
        ours, theirs = statistics.median(our_times), statistics.median(their_times)
        pair_ratio = statistics.median(a / b for a, b in zip(our_times, their_times))
        print(f"{name:<10} {sizes.param_count(config):>9,} {ours * 1e3:>10.1f} {theirs * 1e3:>9.1f} "
              f"{ours / theirs:>6.2f} {pair_ratio:>10.2f} {tokens / ours:>13,.0f} {tokens / theirs:>12,.0f} "
              f"{flops / ours / peak:>10.1%} {flops / theirs / peak:>10.1%}")
    print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")
    if args.profile:
        step = step_fn("minifm", args.profile)
        step()
        print(f"\ncProfile of one minifm step ({args.profile}), by own time:")
        print(profile_report(step, lines=15))


if __name__ == "__main__":
    main()
