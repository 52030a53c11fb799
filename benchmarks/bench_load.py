"""Thread policies under load: train step, generation and a short pretrain, idle and beside a busy process.

Each measurement runs in a fresh Python process whose environment sets one candidate thread policy
(the OpenMP, OpenBLAS and MINIFM_NUM_THREADS variables are read when the libraries start, so a policy
cannot be switched inside one process). Two conditions:

  idle     nothing started by this script (other users of the machine are not controlled: the load
           average is printed with every table)
  loaded   one competing busy process, `yes > /dev/null`, started by this script before the
           measurement and always killed afterwards (try/finally)

Workloads (the train step and generation reuse bench_train_step.py and bench_generate.py):

  step      median time of one GPT training step (forward, backward, AdamW) of bench_train_step's
            "small" config (L=4, d=128, T=128, B=16, V=2048: the default `minifm pretrain` model's
            shape), after two warm-up steps
  generate  median time of KV-cached greedy generation of 32 tokens, batch 8, bench_generate's "small"
  pretrain  wall time of `minifm pretrain --max-steps 20` (tokenizer, curation, 20 steps, checkpoint),
            with --pretrain-command to use another interpreter or copy of minifm

Within one repeat both conditions run, and every policy once in each, one after the other, so they see
the same background; each cell is the median over --repeats repeats. "x 1 thread" divides the median
by the policy `one-thread`'s in the same condition, "pair ratio" is the median of the per-repeat
ratios (robust to a background that drifts between repeats): the goal is <= 1.3 loaded and about 1.0
or below idle.

    python benchmarks/bench_load.py                         # all policies, step and generate
    python benchmarks/bench_load.py --workloads pretrain    # the end-to-end 20-step pretrain
    python benchmarks/bench_load.py --policies default one-thread --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Environment of each candidate policy, on top of the caller's environment (from which every thread
# variable is removed first, so that only the policy's own settings count).
POLICIES = {
    # whatever this copy of minifm does when the user sets nothing
    "default": {},
    # everything on one thread
    "one-thread": {"MINIFM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    # two threads for the kernels' OpenMP loops and for large BLAS products (minifm before the load policy)
    "two-threads": {"MINIFM_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
    # the same, with OpenMP threads that spin while idle instead of sleeping
    "two-threads-active-wait": {"MINIFM_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    # two threads for the kernels' OpenMP loops, one for every BLAS product
    "blas-one-thread": {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"},
    # the default, with idle OpenMP threads that sleep at once instead of polling ~0.1 ms first (the
    # default before stop 18: a user's OMP_WAIT_POLICY keeps minifm from setting GOMP_SPINCOUNT)
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
THREAD_VARIABLES = ("MINIFM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
                    "GOMP_SPINCOUNT", "GOTO_NUM_THREADS", "MKL_NUM_THREADS")

CHILD_CODE = {
    "step": """
import statistics, sys, time
sys.path.insert(0, {benchmarks!r})
from bench_train_step import CONFIGS, minifm_step_fn
from minifm.models import GPTConfig
from minifm.kernels import threads
shape = CONFIGS["small"]
config = GPTConfig(vocab_size=shape["V"], block_size=shape["T"], n_layer=shape["n_layer"],
                   n_head=shape["n_head"], n_embd=shape["n_embd"])
step = minifm_step_fn(config, shape["B"])
step(); step()
times = []
for _ in range({count}):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(statistics.median(times), threads.num_threads())
""",
    "generate": """
import statistics, sys, time
import numpy as np
sys.path.insert(0, {benchmarks!r})
from bench_generate import PROMPT_LENGTH, build_minifm
from minifm.sampling.generate import generate
from minifm.kernels import threads
model = build_minifm("small", PROMPT_LENGTH + 32)
prompt = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(8, PROMPT_LENGTH))
generate(model, prompt, 32)
times = []
for _ in range({count}):
    start = time.perf_counter(); generate(model, prompt, 32); times.append(time.perf_counter() - start)
print(statistics.median(times), threads.num_threads())
""",
}


def policy_environment(policy: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    env.update(POLICIES[policy])
    return env


def run_child(workload: str, policy: str, count: int, pretrain_command: list[str]) -> tuple[float, str]:
    """Seconds for one measurement of `workload` under `policy`, and the thread budget it reported."""
    env = policy_environment(policy)
    if workload == "pretrain":
        with tempfile.TemporaryDirectory() as out:
            command = [*pretrain_command, "pretrain", "--max-steps", "20", "--out", out, "--run-name", "bench"]
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            return time.perf_counter() - start, "-"
    code = CHILD_CODE[workload].format(benchmarks=str(HERE), count=count)
    result = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    seconds, budget = result.stdout.split()[-2:]
    return float(seconds), budget


def start_busy_process() -> subprocess.Popen:
    """One competing busy process: `yes` writing to /dev/null, as in `yes > /dev/null &`."""
    return subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(workloads, policies, conditions, repeats: int, count: int, pretrain_command) -> dict:
    """Seconds per run, {condition: {(workload, policy): [one per repeat]}}, and the load averages seen.

    Repeats are the outer loop and both conditions run inside each repeat, so that idle and loaded
    runs see the same background from the machine's other users; `yes` runs only inside its block.
    """
    results = {c: {(w, p): [] for w in workloads for p in policies} for c in conditions}
    budgets: dict = {c: {} for c in conditions}
    loads: dict = {c: [] for c in conditions}
    for _ in range(repeats):
        for condition in conditions:
            busy = start_busy_process() if condition == "loaded" else None
            try:
                if busy is not None:
                    time.sleep(1.0)  # let the scheduler see it
                loads[condition].append(os.getloadavg())
                for workload in workloads:
                    for policy in policies:
                        seconds, budget = run_child(workload, policy, count, pretrain_command)
                        results[condition][(workload, policy)].append(seconds)
                        budgets[condition].setdefault((workload, policy), set()).add(budget)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return {"results": results, "budgets": budgets, "loads": loads}


def print_table(condition: str, measured: dict, workloads, policies) -> None:
    loads = measured["loads"][condition]
    mean_load = [statistics.mean(load[i] for load in loads) for i in range(3)]
    print(f"\n### {condition}: mean load average (1, 5, 15 min) at the start of its runs "
          f"{mean_load[0]:.2f} {mean_load[1]:.2f} {mean_load[2]:.2f} (1-min range "
          f"{min(load[0] for load in loads):.2f}-{max(load[0] for load in loads):.2f})\n")
    print("| workload | policy | threads | median s | min s | max s | x 1 thread | pair ratio |")
    print("|---|---|---|---|---|---|---|---|")
    results = measured["results"][condition]
    for workload in workloads:
        baseline = results.get((workload, "one-thread"))
        for policy in policies:
            times = results[(workload, policy)]
            median = statistics.median(times)
            ratio = pair = "-"
            if baseline:
                ratio = f"{median / statistics.median(baseline):.2f}"
                pair = f"{statistics.median(t / b for t, b in zip(times, baseline)):.2f}"
            budget = ",".join(sorted(measured["budgets"][condition][(workload, policy)]))
            print(f"| {workload} | {policy} | {budget} | {median:.3f} | {min(times):.3f} | {max(times):.3f} "
                  f"| {ratio} | {pair} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=["step", "generate", "pretrain"],
                        default=["step", "generate"])
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--conditions", nargs="+", choices=["idle", "loaded"], default=["idle", "loaded"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (workload, policy) per condition")
    parser.add_argument("--count", type=int, default=7, help="timed steps or generations inside one run")
    parser.add_argument("--pretrain-command", default=f"{sys.executable} -m minifm.cli",
                        help="command that runs the minifm CLI (default: this interpreter's minifm)")
    args = parser.parse_args()
    # SIGTERM (kill) ends the script through SystemExit, so the finally that stops `yes` still runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    print(f"machine: {os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; policies: "
          + "; ".join(f"{name} {POLICIES[name] or '(no variables)'}" for name in args.policies))
    measured = measure(args.workloads, args.policies, args.conditions, args.repeats, args.count,
                       shlex.split(args.pretrain_command))
    for condition in args.conditions:
        print_table(condition, measured, args.workloads, args.policies)
    print(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S")}))


if __name__ == "__main__":
    main()
