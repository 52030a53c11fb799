"""Data-parallel training on this machine, measured, and a cost model for N machines built on the measures.

    python benchmarks/bench_distributed.py            (needs pip install "minifm[mpi]"; ~3 minutes on 2 cores)
    python benchmarks/bench_distributed.py --quick    (fewer steps and sizes)

What it runs (each configuration in fresh processes, MINIFM_NUM_THREADS fixing the threads):

  1. throughput: the shared loop pre-training a GPT on random windows, the same global batch of
     2 x B sequences per step, as
        1 rank  x 1 thread      batch 2B
        1 rank  x 2 threads     batch 2B (the kernels' OpenMP loops and BLAS on both cores)
        2 ranks x 1 thread      batch B each (mpiexec -n 2), buckets sent during backward (overlap)
        2 ranks x 1 thread      batch B each, every bucket sent after backward (no overlap)
     reporting the median step time, tokens/s, and for 2 ranks the median time a step waits in
     finish_gradient_sync (the communication not hidden behind backward), with and without overlap.
     On this 2-core machine the 2 ranks share the CPU the single process has: the comparison is
     "one process using both cores through threads" against "two processes, one core each", not
     a speed-up from more hardware.
  2. allreduce bandwidth: MPI_Allreduce (sum) of float32 messages from 1 KB to 64 MB between the 2
     ranks (shared memory here), median time, algorithm bandwidth (bytes / time) and bus bandwidth
     (algbw x 2(N-1)/N, NCCL's convention: the bytes each rank moves in a ring allreduce).
  3. a cost model for N machines of this kind, each running one rank on both cores, connected at
     10 and 100 Gb/s:
        t_compute = 6 * params * tokens_per_step_per_machine / F       F: measured FLOP/s (1 rank x 2 threads)
        t_allreduce(N) = 2 (N-1)/N * 4 * params / bandwidth + 2 (N-1) * latency * buckets   (ring allreduce)
        exposed(N) = max(t_allreduce * s_last, t_allreduce - t_backward * (1 - s_last))
                   (buckets travel during backward, t_backward = 2/3 of t_compute; the last bucket, holding
                    the share s_last of the gradient bytes, can only start when backward ends)
        t_step(N) = t_compute + exposed(N),   efficiency = t_compute / t_step,   speed-up = N * efficiency
     with latency 30 us (10 Gb/s Ethernet, TCP) and 5 us (100 Gb/s, RDMA): assumptions, not measures.
     Since compute and gradient bytes both grow linearly with the parameter count, their ratio does not
     depend on the model size at a fixed batch: communication dominates when a machine processes
     fewer tokens per step than about 8 F / (6 * bandwidth) * (N-1)/N; latency matters only for tiny models.

The printed tables are what docs/distributed.md records, with the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average  # noqa: E402  (a sibling script)

BENCHMARK = Path(__file__).resolve()
LINKS = (("10 Gb/s", 10e9 / 8, 30e-6), ("100 Gb/s", 100e9 / 8, 5e-6))  # (name, bytes/s, assumed latency per message)
MODEL = {"vocab_size": 1024, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128}  # minifm pretrain's default


# ---------------------------------------------------------------------------------------- workers
def throughput_worker(args) -> None:
    """Train args.steps steps (after 2 warm-up steps) and print one JSON line (rank 0)."""
    import minifm.functional as F
    from minifm.data.batches import causal_lm_batches
    from minifm.distributed import DistributedConfig, get_world
    from minifm.models import GPT, GPTConfig
    from minifm.models.sizes import param_count
    from minifm.train.config import TrainConfig
    from minifm.train.loop import Trainer

    world = get_world()
    model_config = GPTConfig(**{**MODEL, "n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head})
    model = GPT(model_config)
    windows = np.random.default_rng(0).integers(0, model_config.vocab_size, (4096, model_config.block_size + 1))

    def batches(rng):
        while True:
            yield from causal_lm_batches(windows, args.batch, rng, drop_last=True)

    def loss_fn(model, batch):
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets), targets.size

    warmup = 2
    config = TrainConfig(max_steps=warmup + args.steps, per_device_train_batch_size=args.batch, warmup_steps=1,
                         eval_steps=0, disable_tqdm=True)
    trainer = Trainer(model, loss_fn, batches, config, stage="pretrain",
                      distributed=DistributedConfig(overlap=bool(args.overlap), bucket_cap_mb=args.bucket_mb,
                                                    check_every=0))
    result = trainer.fit()
    rows = [row for row in result.history if "loss" in row]
    elapsed = np.diff([0.0] + [row["elapsed_s"] for row in rows])[warmup:]  # (steps,)
    tokens = rows[-1]["tokens"] - rows[warmup - 1]["tokens"]
    step_s = float(np.median(elapsed))
    stats = trainer.communication_stats
    waits = stats.wait_per_step[warmup:] if stats is not None else []
    allreduce_s = synchronized_allreduce_seconds(model, world, args.bucket_mb) if world.distributed else 0.0
    if world.is_writer:
        print(json.dumps({
            "ranks": world.size, "threads": os.environ.get("MINIFM_NUM_THREADS"), "batch_per_rank": args.batch,
            "overlap": bool(args.overlap), "params": int(param_count(model_config)), "step_s": step_s,
            "tokens_per_step": tokens / len(elapsed), "tokens_per_s": tokens / len(elapsed) / step_s,
            "wait_s": float(np.median(waits)) if waits else 0.0, "allreduce_s": allreduce_s,
            "gradient_bytes": int(stats.bytes_sent / max(stats.steps, 1)) if stats is not None else 0,
            "buckets_per_step": (stats.buckets_sent_in_backward / max(stats.steps, 1)) if stats is not None else 0,
        }), flush=True)


def synchronized_allreduce_seconds(model, world, bucket_mb: float, repeats: int = 7) -> float:
    """The communication alone: the step's gradient buckets allreduced one after the other by ranks that
    start together (a barrier first), median over `repeats`. A step's wait in finish_gradient_sync is
    this part not hidden behind backward, plus the time one rank waits for the other to finish backward."""
    from minifm.distributed.buckets import make_buckets

    buckets = make_buckets([p for p in model.parameters() if p.requires_grad], int(bucket_mb * 1024 * 1024))
    times = []
    for _ in range(repeats):
        world.barrier()
        started = time.perf_counter()
        for bucket in buckets:
            world.comm.Allreduce(world.MPI.IN_PLACE, bucket.buffer, op=world.MPI.SUM)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def bandwidth_worker(args) -> None:
    """Median MPI_Allreduce time per message size; rank 0 prints one JSON line."""
    from minifm.distributed import get_world

    world = get_world()
    results = []
    for exponent in range(10, args.max_exponent + 1, 2):
        size = 2 ** exponent  # bytes
        send = np.ones(size // 4, dtype=np.float32)
        receive = np.empty_like(send)
        for _ in range(3):
            world.comm.Allreduce(send, receive, op=world.MPI.SUM)
        first = time.perf_counter()
        world.comm.Allreduce(send, receive, op=world.MPI.SUM)
        guess = np.array([time.perf_counter() - first])
        world.broadcast_(guess)  # rank 0 decides how many repeats: every rank must call Allreduce as often
        repeats = int(min(200, max(5, args.seconds_per_size / max(guess[0], 1e-6))))
        times = []
        for _ in range(repeats):
            world.comm.Barrier()
            started = time.perf_counter()
            world.comm.Allreduce(send, receive, op=world.MPI.SUM)
            times.append(time.perf_counter() - started)
        seconds = float(np.median(times))
        algbw = size / seconds
        results.append({"bytes": size, "seconds": seconds, "algbw": algbw,
                        "busbw": algbw * 2 * (world.size - 1) / world.size})
    if world.is_writer:
        print(json.dumps({"ranks": world.size, "allreduce": results}), flush=True)


# ---------------------------------------------------------------------------------------- driver
def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def launch(ranks: int, threads: int, worker_args: list[str]) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PMI_", "OMPI_", "MINIFM_DIST_"))}
    env.update({"MINIFM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)})
    command = [sys.executable, str(BENCHMARK), "--worker", *worker_args]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks)] + command
    output = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if output.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.stderr[-2000:]}")
    return json.loads([line for line in output.stdout.splitlines() if line.startswith("{")][-1])


def cost_model(flops_per_s: float, tokens_per_machine: float, last_bucket_share: float, buckets: int) -> list[str]:
    """Markdown rows: per model size and link, the step's compute, its allreduce and the efficiency at N machines."""
    lines = ["| params | link | compute per step | allreduce, N=8 / N=128 | not hidden, N=128 | efficiency N=8 | "
             "efficiency N=128 (speed-up) |", "|---|---|---|---|---|---|---|"]
    for params in (1e6, 1e7, 1e8, 1e9):
        t_compute = 6 * params * tokens_per_machine / flops_per_s
        t_backward = t_compute * 2 / 3
        for name, bandwidth, latency in LINKS:
            def allreduce(n):
                return 2 * (n - 1) / n * 4 * params / bandwidth + 2 * (n - 1) * latency * buckets

            def exposed(n):
                return max(allreduce(n) * last_bucket_share, allreduce(n) - t_backward * (1 - last_bucket_share))

            efficiency = {n: t_compute / (t_compute + exposed(n)) for n in (8, 128)}
            lines.append(f"| {params:.0e} | {name} | {seconds(t_compute)} | {seconds(allreduce(8))} / "
                         f"{seconds(allreduce(128))} | {seconds(exposed(128))} | {efficiency[8]:.2%} | "
                         f"{efficiency[128]:.2%} ({128 * efficiency[128]:.0f}x) |")
    return lines


def seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.1f} s"


def break_even_tokens(flops_per_s: float, bandwidth: float, n: int = 128) -> float:
    """Tokens per machine per step below which the allreduce (ring, bandwidth term) takes longer than compute."""
    return 8 * flops_per_s / (6 * bandwidth) * (n - 1) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer steps and message sizes")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per configuration")
    parser.add_argument("--batch", type=int, default=8, help="per-rank batch B (sequences of 128 tokens)")
    args = parser.parse_args()
    if args.worker is not None:
        worker = argparse.ArgumentParser()
        worker.add_argument("kind", choices=("throughput", "bandwidth"))
        worker.add_argument("--steps", type=int, default=10)
        worker.add_argument("--batch", type=int, default=8)
        worker.add_argument("--overlap", type=int, default=1)
        worker.add_argument("--bucket-mb", type=float, default=25.0)
        worker.add_argument("--n-embd", type=int, default=MODEL["n_embd"])
        worker.add_argument("--n-layer", type=int, default=MODEL["n_layer"])
        worker.add_argument("--n-head", type=int, default=MODEL["n_head"])
        worker.add_argument("--max-exponent", type=int, default=26)
        worker.add_argument("--seconds-per-size", type=float, default=0.5)
        worker_args = worker.parse_args(args.worker)
        (throughput_worker if worker_args.kind == "throughput" else bandwidth_worker)(worker_args)
        return

    steps = 4 if args.quick else args.steps
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average before: {load_average()}")
    models = [("default pretrain GPT (4 x 128)", []), ("wider GPT (6 x 256)", ["--n-embd", "256", "--n-layer", "6"])]
    if args.quick:
        models = models[:1]
    measured = {}
    for title, model_args in models:
        common = ["throughput", "--steps", str(steps), *model_args]
        runs = {
            "1 rank x 1 thread": launch(1, 1, common + ["--batch", str(2 * args.batch)]),
            "1 rank x 2 threads": launch(1, 2, common + ["--batch", str(2 * args.batch)]),
            "2 ranks x 1 thread, overlap": launch(2, 1, common + ["--batch", str(args.batch), "--overlap", "1",
                                                                  "--bucket-mb", "1"]),
            "2 ranks x 1 thread, no overlap": launch(2, 1, common + ["--batch", str(args.batch), "--overlap", "0",
                                                                     "--bucket-mb", "1"]),
        }
        measured[title] = runs
        params = runs["1 rank x 1 thread"]["params"]
        print(f"\n### {title}: {params:,} parameters, {2 * args.batch} x 128 tokens per step, "
              f"median of {steps} steps (load average now {load_average()})\n")
        print("| configuration | step (s) | tokens/s | vs 1 x 1 | waiting for the allreduce per step | share of step |")
        print("|---|---|---|---|---|---|")
        base = runs["1 rank x 1 thread"]["tokens_per_s"]
        for name, run in runs.items():
            wait = f"{run['wait_s'] * 1e3:.1f} ms" if run["ranks"] > 1 else "-"
            share = f"{run['wait_s'] / run['step_s']:.1%}" if run["ranks"] > 1 else "-"
            print(f"| {name} | {run['step_s']:.3f} | {run['tokens_per_s']:.0f} | {run['tokens_per_s'] / base:.2f}x "
                  f"| {wait} | {share} |")
        with_overlap = runs["2 ranks x 1 thread, overlap"]
        without = runs["2 ranks x 1 thread, no overlap"]
        print(f"\ngradient bytes per step {with_overlap['gradient_bytes'] / 1e6:.2f} MB in "
              f"{with_overlap['buckets_per_step']:.0f} buckets of <= 1 MB sent during backward. The allreduce alone "
              f"(ranks started together) takes {with_overlap['allreduce_s'] * 1e3:.1f} ms; a step waited "
              f"{without['wait_s'] * 1e3:.1f} ms for it without overlap and {with_overlap['wait_s'] * 1e3:.1f} ms "
              "with overlap (a wait also holds the time one rank waits for the other to finish backward)")

    bandwidth = launch(2, 1, ["bandwidth", "--max-exponent", "22" if args.quick else "26",
                              "--seconds-per-size", "0.2" if args.quick else "0.5"])
    print("\n### MPI_Allreduce between 2 ranks on this machine (shared memory)\n")
    print("| message | median time | algbw | busbw |")
    print("|---|---|---|---|")
    for row in bandwidth["allreduce"]:
        size = row["bytes"]
        label = f"{size // 1024} KB" if size < 2 ** 20 else f"{size // 2 ** 20} MB"
        print(f"| {label} | {row['seconds'] * 1e6:.0f} us | {row['algbw'] / 1e9:.2f} GB/s | {row['busbw'] / 1e9:.2f} GB/s |")

    runs = measured[models[0][0]]
    single = max((runs["1 rank x 1 thread"], runs["1 rank x 2 threads"]), key=lambda run: run["tokens_per_s"])
    from minifm.models import GPTConfig
    from minifm.models.sizes import flops_per_token
    flops = flops_per_token(GPTConfig(**MODEL), seq_len=MODEL["block_size"]) * single["tokens_per_s"]
    vocab_share = MODEL["vocab_size"] * MODEL["n_embd"] / single["params"]  # tied embedding: the last gradient
    tokens = single["tokens_per_step"]
    print(f"\n### Cost model: N machines like this one (one process each, {tokens:.0f} tokens per machine per step, "
          f"F = {flops / 1e9:.2f} GFLOP/s: the faster single-process configuration above)\n")
    print(f"ring allreduce of 4 bytes per parameter in {4} buckets; the last bucket ({vocab_share:.0%} of the bytes: the "
          "tied embedding, whose gradient is ready last) cannot overlap; latency per message 30 us at 10 Gb/s, 5 us at "
          "100 Gb/s (assumed)\n")
    for line in cost_model(flops, tokens, vocab_share, buckets=4):
        print(line)
    for name, bandwidth, _ in LINKS:
        print(f"\n{name}: the allreduce outlasts the compute when a machine processes fewer than "
              f"{break_even_tokens(flops, bandwidth):.1f} tokens per step (any model size, N = 128)")
    print("\nmemory per rank with AdamW in float32: 16 bytes per parameter (weights, gradients, two moments); "
          "ZeRO-1 (MINIFM_DIST_ZERO=1): 8 + 8 / N bytes")


if __name__ == "__main__":
    main()
