"""Quantized matrix products (minifm/kernels/quantized.py) side by side with float32, in one run.

    python benchmarks/bench_quantized.py               # 1 and 2 threads, decode and prefill (~5 minutes)
    python benchmarks/bench_quantized.py --quick       # fewer repeats, one thread count
    python benchmarks/bench_quantized.py --threads 2 --skip-prefill
    python benchmarks/bench_quantized.py --threads 1 --clock cpu   # CPU time of the calling thread

Shapes: the Linear layers of SmolLM2-135M (hidden 576, MLP 1536, 3 kv heads of 64, vocabulary 49152),
as (N, K) = (out, in): 576x576 (q, o), 192x576 (k, v), 1536x576 (gate, up), 576x1536 (down), 49152x576
(the tied output head). Weights are random blocks (random quant bytes, scales around 0.01): the speed of
these kernels does not depend on the values.

Decode (M = 1 input row), per shape and format, the median microseconds of:
    q-fused    quantized_matmul, compiled fused dequantize-and-dot with float32 x
    q8-input   quantized_matmul(..., quantize_input=True): x rounded to int8 per block, integer dots
    reference  the NumPy reference (dequantize the whole weight, then BLAS)
and once per shape, on float32 weights of the same shape:
    f32 matvec minifm's float32 few-row kernel (minifm/kernels/matvec.py)
    torch f32  torch.nn.functional.linear on float32 weights (torch with the same thread count)
GB/s = bytes of weights read per call / time: packed bytes for the quantized kernels, 4 per weight for
float32. The calls of one shape are interleaved (one call of each method per round, medians over rounds),
so a change of the machine's load hits every column alike.

Prefill (M = 512 rows): the tiled kernel (dequantize a tile, sgemm) vs the reference vs float32 BLAS
(minifm.kernels.threads.matmul, which the float32 Linear layer uses) vs torch, with GFLOP/s (2 M N K).

A summary adds up one decoding step's products of SmolLM2-135M (30 layers of q, k, v, o, gate,
up, down, plus the head), weighted by each shape's measured time: the matrix-product time per token and
the tokens/s it allows (attention, norms and Python are not included), and the bytes per token that
decode must read, against the bandwidth the float32 matvec of the largest matrix reaches. Those per-shape
times call one weight again and again, so small weights are read from cache; the "whole decoding step"
table instead runs one step's 211 products over 30 distinct layers of random weights (84 MB in Q4_1, 538
MB in float32: more than the caches hold), as a model does, Python overheads included.
Also printed: the machine (lscpu's model name, usable cores), load averages before and after.

--clock cpu times each call by the CPU time of the calling thread (time.thread_time) instead of the wall
clock: on a machine whose other processes keep the load above its core count, the wall clock mostly
measures how long the scheduler kept this process waiting, while the CPU time measures the work (cache
and memory-bandwidth contention from the neighbours still count). Only meaningful with one thread, where
every library computes in the calling thread: the script refuses it otherwise.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP workers sleep (see bench_kernels.py)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from minifm.kernels import _backend, backend_info, matvec, quantized, threads  # noqa: E402
from minifm.pretrained.quants import FORMATS, QuantizedTensor  # noqa: E402

from bench_common import machine_description  # noqa: E402  (a sibling script)

try:
    import torch
except ImportError:  # the torch column is left empty
    torch = None

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]  # (N, K) = (out, in)
TYPES = ("Q8_0", "Q4_0", "Q4_1")
# How many times one SmolLM2-135M decoding step multiplies with each shape: 30 layers of q and o
# (576x576), k and v (192x576), gate and up (1536x576), down (576x1536); the head once.
PER_TOKEN = {(576, 576): 60, (192, 576): 60, (1536, 576): 60, (576, 1536): 30, (49152, 576): 1}


def random_weight(type_name: str, rows: int, width: int, rng) -> QuantizedTensor:
    """Random blocks: random quant bytes, every scale (d, and m for Q4_1) an f16 near 0.01."""
    fmt = FORMATS[type_name]
    blocks = rng.integers(0, 256, size=(rows, width // 32, fmt.block_bytes), dtype=np.uint8)
    scales = np.full((rows, width // 32, 2 if type_name == "Q4_1" else 1), 0.01, dtype="<f2")
    blocks[:, :, :scales.shape[-1] * 2] = scales.view(np.uint8)
    return QuantizedTensor(type_name, (rows, width), blocks.reshape(rows, -1))


CLOCK = time.perf_counter  # --clock cpu: time.thread_time


def interleaved_medians(fns: dict, rounds: int, budget_s: float) -> dict:
    """Median seconds per call of each function, calling them in turn (one warm-up each), `rounds`
    rounds or until budget_s seconds have passed (at least 3 rounds)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    started = time.perf_counter()
    for done in range(rounds):
        if done >= 3 and time.perf_counter() - started > budget_s:
            break
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[name].append(CLOCK() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def on_reference(fn):
    def run():
        _backend.use_reference(True)
        try:
            fn()
        finally:
            _backend.use_reference(False)
    return run


def bench_decode(rounds, budget_s, rng):
    """Decode (M = 1) table; returns {(type, shape): seconds} of q-fused and q8-input for the summary."""
    print("\n### Decode, M = 1: median us (GB/s of weights read)\n")
    print(f"| {'N x K':<11} | {'type':<5} | {'q-fused':>16} | {'q8-input':>16} | {'reference':>16} | "
          f"{'f32 matvec':>16} | {'torch f32':>16} | q-fused / f32 | q8 / f32 |")
    print("|" + "|".join("-" * width for width in (13, 7, 18, 18, 18, 18, 18, 15, 10)) + "|")
    fused, q8 = {}, {}
    for rows, width in SHAPES:
        x = rng.standard_normal((1, width)).astype(np.float32)  # (1, K)
        dense = (rng.standard_normal((rows, width)) * 0.02).astype(np.float32)  # (N, K)
        weights = {type_name: random_weight(type_name, rows, width, rng) for type_name in TYPES}
        fns = {"f32": lambda: matvec.matvec(x, dense)}
        if torch is not None:
            x_t, dense_t = torch.from_numpy(x), torch.from_numpy(dense)
            fns["torch"] = lambda: torch.nn.functional.linear(x_t, dense_t)
        for type_name, weight in weights.items():
            fns[type_name + " fused"] = lambda weight=weight: quantized.quantized_matmul(x, weight)
            fns[type_name + " q8"] = lambda weight=weight: quantized.quantized_matmul(x, weight, quantize_input=True)
            fns[type_name + " ref"] = on_reference(lambda weight=weight: quantized.reference_matmul(x, weight))
        scale = 0.25 if rows * width > 10**7 else 1.0  # fewer rounds for the head
        medians = interleaved_medians(fns, max(5, int(rounds * scale)), budget_s)
        f32_s, torch_s = medians["f32"], medians.get("torch", float("nan"))

        def cell(seconds, nbytes):
            return f"{seconds * 1e6:>8.1f} ({nbytes / seconds / 1e9:>5.1f})"

        for type_name, weight in weights.items():
            fused[type_name, (rows, width)] = medians[type_name + " fused"]
            q8[type_name, (rows, width)] = medians[type_name + " q8"]
            print(f"| {f'{rows}x{width}':<11} | {type_name:<5} | {cell(medians[type_name + ' fused'], weight.nbytes)} | "
                  f"{cell(medians[type_name + ' q8'], weight.nbytes)} | {cell(medians[type_name + ' ref'], weight.nbytes)} | "
                  f"{cell(f32_s, dense.nbytes)} | {cell(torch_s, dense.nbytes)} | "
                  f"{f32_s / medians[type_name + ' fused']:>12.2f}x | {f32_s / medians[type_name + ' q8']:>7.2f}x |",
                  flush=True)
        fused["F32", (rows, width)] = f32_s
        fused["torch", (rows, width)] = torch_s
    return fused, q8


def summarize(fused, q8):
    """Per-token matrix-product time of SmolLM2-135M from the measured shapes (module docstring)."""
    print("\n### One SmolLM2-135M decoding step's matrix products (30 layers + head), from the times above\n")
    print(f"| {'weights':<22} | {'MB read / token':>15} | {'ms / token':>10} | {'tok/s bound':>11} | {'GB/s':>6} |")
    print("|" + "|".join("-" * width for width in (24, 17, 12, 13, 8)) + "|")
    head = max(PER_TOKEN)
    bandwidth = 4 * head[0] * head[1] / fused["F32", head]  # the float32 matvec of the largest matrix

    def line(label, type_of, times):
        seconds = sum(count * times[type_of(shape), shape] for shape, count in PER_TOKEN.items())
        nbytes = 0
        for shape, count in PER_TOKEN.items():
            type_name = type_of(shape)
            fmt = FORMATS.get(type_name, FORMATS["F32"])
            nbytes += count * shape[0] * shape[1] // fmt.block_size * fmt.block_bytes
        print(f"| {label:<22} | {nbytes / 1e6:>15.1f} | {seconds * 1e3:>10.2f} | {1 / seconds:>11.1f} | "
              f"{nbytes / seconds / 1e9:>6.1f} |")

    line("float32 (matvec)", lambda shape: "F32", fused)
    for type_name in TYPES:
        line(f"{type_name} fused", lambda shape, t=type_name: t, fused)
        line(f"{type_name} q8-input", lambda shape, t=type_name: t, q8)
    line("Q4_1 file, fused", lambda shape: "Q8_0" if shape == head else "Q4_1", fused)
    line("Q4_1 file, q8-input", lambda shape: "Q8_0" if shape == head else "Q4_1", q8)
    print(f"\nroofline: the float32 matvec of the {head[0]}x{head[1]} head read {bandwidth / 1e9:.1f} GB/s; at that "
          f"bandwidth the Q4_1 file's {sum(c * s[0] * s[1] for s, c in PER_TOKEN.items()) / 1e6:.0f}M weights per "
          f"token would take the MB column / {bandwidth / 1e9:.1f} GB/s")


def bench_step(rounds, budget_s, rng):
    """One decoding step's products over a whole model's worth of distinct weights (nothing stays in cache)."""
    print("\n### A whole SmolLM2-135M decoding step's matrix products, 30 distinct layers + head, M = 1\n")
    print("Per layer: q, k, v in one quantized_products call, o, gate and up in one call, down; then the head."
          " Float32 runs the same sequence with matvec_many. Median ms per step (wall or CPU, as the clock).\n")
    print(f"| {'weights':<26} | {'MB read / step':>14} | {'ms / step':>9} | {'steps/s':>7} | {'GB/s':>6} |")
    print("|" + "|".join("-" * width for width in (28, 16, 11, 9, 8)) + "|")
    x576 = rng.standard_normal((1, 576)).astype(np.float32)  # (1, hidden)
    x1536 = rng.standard_normal((1, 1536)).astype(np.float32)  # (1, intermediate)
    shapes = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576), "gate": (1536, 576),
              "up": (1536, 576), "down": (576, 1536)}

    def run(label, make, products, head_type=None):
        layers = [{name: make(shape) for name, shape in shapes.items()} for _ in range(30)]
        head = make((49152, 576)) if head_type is None else random_weight(head_type, 49152, 576, rng)

        def step():
            for layer in layers:
                products(x576, [layer["q"], layer["k"], layer["v"]])
                products(x576, [layer["o"]])
                products(x576, [layer["gate"], layer["up"]])
                products(x1536, [layer["down"]])
            products(x576, [head])

        nbytes = sum(w.nbytes for layer in layers for w in layer.values()) + head.nbytes
        seconds = interleaved_medians({label: step}, max(5, rounds // 3), budget_s)[label]
        print(f"| {label:<26} | {nbytes / 1e6:>14.1f} | {seconds * 1e3:>9.2f} | {1 / seconds:>7.1f} | "
              f"{nbytes / seconds / 1e9:>6.1f} |", flush=True)

    run("float32 (matvec_many)", lambda shape: (rng.standard_normal(shape) * 0.02).astype(np.float32),
        matvec.matvec_many)
    for type_name in TYPES:
        for quantize_input in (False, True):
            run(f"{type_name} {'q8-input' if quantize_input else 'fused'}",
                lambda shape, t=type_name: random_weight(t, *shape, rng),
                lambda x, ws, q=quantize_input: quantized.quantized_products(x, ws, quantize_input=q))
    for quantize_input in (False, True):
        run(f"Q4_1 file {'q8-input' if quantize_input else 'fused'}",
            lambda shape: random_weight("Q4_1", *shape, rng),
            lambda x, ws, q=quantize_input: quantized.quantized_products(x, ws, quantize_input=q), head_type="Q8_0")


def bench_prefill(rounds, budget_s, rng, rows_in=512):
    print(f"\n### Prefill, M = {rows_in}: median ms (GFLOP/s)\n")
    print(f"| {'N x K':<11} | {'type':<5} | {'q-tiled':>15} | {'reference':>15} | {'f32 BLAS':>15} | "
          f"{'torch f32':>15} | q-tiled / f32 |")
    print("|" + "|".join("-" * width for width in (13, 7, 17, 17, 17, 17, 15)) + "|")
    for rows, width in SHAPES:
        x = rng.standard_normal((rows_in, width)).astype(np.float32)  # (M, K)
        dense = (rng.standard_normal((rows, width)) * 0.02).astype(np.float32)  # (N, K)
        flops = 2 * rows_in * rows * width
        fns = {"f32": lambda: threads.matmul(x, dense.T)}
        if torch is not None:
            x_t, dense_t = torch.from_numpy(x), torch.from_numpy(dense)
            fns["torch"] = lambda: torch.nn.functional.linear(x_t, dense_t)
        for type_name in TYPES:
            weight = random_weight(type_name, rows, width, rng)
            fns[type_name] = lambda weight=weight: quantized.quantized_matmul(x, weight)
            fns[type_name + " ref"] = on_reference(lambda weight=weight: quantized.reference_matmul(x, weight))
        scale = 0.25 if rows * width > 10**7 else 1.0
        medians = interleaved_medians(fns, max(3, int(rounds * scale)), budget_s)

        def cell(seconds):
            return f"{seconds * 1e3:>7.2f} ({flops / seconds / 1e9:>5.1f})"

        for type_name in TYPES:
            print(f"| {f'{rows}x{width}':<11} | {type_name:<5} | {cell(medians[type_name])} | "
                  f"{cell(medians[type_name + ' ref'])} | {cell(medians['f32'])} | "
                  f"{cell(medians.get('torch', float('nan')))} | {medians['f32'] / medians[type_name]:>12.2f}x |",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, and only the thread count given")
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter; cpu: the calling thread's CPU time (one thread only)")
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.threads.strip() != "1":
            parser.error("--clock cpu needs --threads 1 (other threads' CPU time is not counted)")
        CLOCK = time.thread_time
    rounds, budget_s = (7, 3.0) if args.quick else (31, 20.0)
    counts = [int(count) for count in args.threads.split(",") if count]
    if args.quick:
        counts = counts[-1:]
    info = backend_info()
    compiled = _backend.compiled("quantized") is not None
    print(f"machine: {machine_description()}")
    print(f"minifm kernels: backend={info['backend']} openmp={info['openmp']} quantized compiled={compiled}; "
          f"torch {torch.__version__ if torch else 'not installed'}; numpy {np.__version__}; "
          f"rounds up to {rounds} (median); clock {args.clock}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}")
    if not compiled:
        print("warning: minifm.kernels._quantized is not built; the quantized columns are the NumPy reference")
    rng = np.random.default_rng(0)
    previous = threads.num_threads()
    try:
        for count in counts:
            threads.set_num_threads(count)
            if torch is not None:
                torch.set_num_threads(count)
            print(f"\n## {count} thread{'s' if count > 1 else ''} (minifm kernels, BLAS and torch), "
                  f"load {os.getloadavg()[0]:.1f}")
            fused, q8 = bench_decode(rounds, budget_s, rng)
            summarize(fused, q8)
            bench_step(rounds, budget_s, rng)
            if not args.skip_prefill:
                bench_prefill(max(3, rounds // 4), budget_s, rng)
    finally:
        threads.set_num_threads(previous)
    print(f"\nload average (1, 5, 15 min) after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
