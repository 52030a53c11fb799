"""Kernel benchmark: NumPy reference vs compiled Cython vs torch, side by side in one run.

    python benchmarks/bench_kernels.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_kernels.py --quick    # fewer repeats, for a smoke check

One table per kernel family at the sizes of issue 3. Each cell is the median wall time of repeated
calls (after one warm-up call); columns:
    reference ms | compiled ms | torch ms | speedup = reference / compiled | torch / compiled
(torch / compiled > 1 means the compiled kernel is faster than torch). torch is given the same thread
count as the OpenMP kernels (printed at the top). Timings on a shared machine are noisy: compare
columns within one run, not across runs. torch is only a yardstick here; minifm never imports it.
"""
from __future__ import annotations

import os

# Three thread pools share the cores here (minifm's OpenMP, torch's OpenMP, NumPy's OpenBLAS). By
# default an idle OpenMP worker keeps spinning for a while, stealing the core another pool's next
# call needs; on 2 cores that distorted every column by up to 30x. Idle workers sleep instead (set
# OMP_WAIT_POLICY yourself to override). This must happen before the libraries start their threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from minifm.kernels import _backend, activations, attention, backend_info, cross_entropy, embedding, softmax  # noqa: E402
from minifm.memory import keep_freed_memory_for_reuse  # noqa: E402
from minifm.sampling import sample  # noqa: E402

try:
    import torch
except ImportError:  # the torch column is left empty
    torch = None


def median_ms(fn, min_repeats: int, max_repeats: int, budget_s: float) -> float:
    """Median wall time in ms: one warm-up call, then between min_repeats and max_repeats timed calls
    (stopping early once budget_s seconds have been spent)."""
    fn()
    times = []
    started = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


class Table:
    def __init__(self, title: str, repeats: tuple[int, int, float]):
        self.title, self.repeats, self.rows = title, repeats, []

    def add(self, label: str, reference, compiled, torch_fn=None):
        def on_reference():
            _backend.use_reference(True)
            try:
                reference()
            finally:
                _backend.use_reference(False)

        ref_ms = median_ms(on_reference, *self.repeats)
        compiled_ms = median_ms(compiled, *self.repeats)
        torch_ms = median_ms(torch_fn, *self.repeats) if torch_fn is not None else float("nan")
        self.rows.append((label, ref_ms, compiled_ms, torch_ms))
        print(self._format_row(self.rows[-1]), flush=True)

    @staticmethod
    def _format_row(row):
        label, ref_ms, compiled_ms, torch_ms = row
        return (
            f"| {label:<34} | {ref_ms:>10.2f} | {compiled_ms:>10.2f} | {torch_ms:>10.2f} "
            f"| {ref_ms / compiled_ms:>7.1f}x | {torch_ms / compiled_ms:>8.2f}x |"
        )

    def header(self):
        print(f"\n### {self.title}\n")
        print(f"| {'case':<34} | {'reference ms':>10} | {'compiled ms':>10} | {'torch ms':>10} | {'speedup':>8} | {'torch/comp':>9} |")
        print(f"|{'-' * 36}|{'-' * 14}|{'-' * 13}|{'-' * 12}|{'-' * 10}|{'-' * 11}|")


def bench_softmax(repeats, rng):
    table = Table("softmax over the last axis (float32)", repeats)
    table.header()
    for shape in ((64 * 8 * 256, 256), (32, 50257)):
        x = rng.standard_normal(shape).astype(np.float32) * 3
        y = softmax.softmax(x)
        dy = rng.standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x) if torch else None
        yt, dyt = (torch.from_numpy(y), torch.from_numpy(dy)) if torch else (None, None)
        table.add(f"softmax fwd {shape}", lambda: softmax.softmax(x), lambda: softmax.softmax(x),
                  (lambda: torch.softmax(xt, -1)) if torch else None)
        table.add(f"softmax bwd {shape}", lambda: softmax.softmax_backward(y, dy), lambda: softmax.softmax_backward(y, dy),
                  (lambda: torch._softmax_backward_data(dyt, yt, -1, torch.float32)) if torch else None)
        table.add(f"log_softmax fwd {shape}", lambda: softmax.log_softmax(x), lambda: softmax.log_softmax(x),
                  (lambda: torch.log_softmax(xt, -1)) if torch else None)


def bench_cross_entropy(repeats, rng):
    table = Table("fused cross-entropy forward + backward (float32; torch: F.cross_entropy(mean).backward())", repeats)
    table.header()
    for n, vocab in ((2048, 50257), (2048, 8192)):
        logits = rng.standard_normal((n, vocab)).astype(np.float32)
        targets = rng.integers(0, vocab, n)

        def minifm_step():  # per-row losses and d loss_i / d logits_i (the autograd node then scales by 1/N)
            return cross_entropy.cross_entropy(logits, targets)

        torch_step = None
        if torch:
            logits_t, targets_t = torch.from_numpy(logits).requires_grad_(), torch.from_numpy(targets)

            def torch_step():
                logits_t.grad = None
                torch.nn.functional.cross_entropy(logits_t, targets_t).backward()

        table.add(f"CE fwd+bwd ({n}, {vocab})", minifm_step, minifm_step, torch_step)


def bench_attention(repeats, rng):
    table = Table("causal attention forward + backward (float32)", repeats)
    table.header()
    for b, h, t, d in ((8, 8, 256, 32), (8, 8, 1024, 64), (1, 12, 2048, 64)):
        q, k, v, dout = (rng.standard_normal((b, h, t, d)).astype(np.float32) for _ in range(4))

        def minifm_step():
            out, lse = attention.attention_forward(q, k, v, causal=True)
            return attention.attention_backward(q, k, v, out, lse, dout, causal=True)

        torch_step = None
        if torch:
            qt, kt, vt = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
            dout_t = torch.from_numpy(dout)

            def torch_step():
                for x in (qt, kt, vt):
                    x.grad = None
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True).backward(dout_t)

        table.add(f"attention fwd+bwd {(b, h, t, d)}", minifm_step, minifm_step, torch_step)


def bench_gelu(repeats, rng):
    table = Table("exact GELU forward + backward (float32; minifm: output and derivative in one pass, then "
                  "dy * derivative, as its autograd op does; torch: F.gelu(x).backward(dy))", repeats)
    table.header()
    for shape in ((1024, 256), (4096, 1024)):  # the tiny GPT's MLP, a larger one
        x, dy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))

        def minifm_step():
            _, derivative = activations.gelu_with_derivative(x)
            return dy * derivative

        torch_step = None
        if torch:
            x_t, dy_t = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

            def torch_step():
                x_t.grad = None
                torch.nn.functional.gelu(x_t).backward(dy_t)

        table.add(f"GELU fwd+bwd {shape}", minifm_step, minifm_step, torch_step)


def bench_embedding(repeats, rng):
    table = Table("embedding lookup's gradient (float32; torch: F.embedding(ids, weight).backward(grad))", repeats)
    table.header()
    for vocab, rows, width in ((256, 1024, 64), (50257, 8192, 768)):  # the tiny GPT's tokens, GPT-2's
        ids = rng.integers(0, vocab, rows)
        grad = rng.standard_normal((rows, width)).astype(np.float32)

        def minifm_step():
            return embedding.embedding_backward(ids, grad, vocab)

        torch_step = None
        if torch:
            ids_t, grad_t = torch.from_numpy(ids), torch.from_numpy(grad)
            weight_t = torch.zeros(vocab, width, requires_grad=True)

            def torch_step():
                weight_t.grad = None
                torch.nn.functional.embedding(ids_t, weight_t).backward(grad_t)

        table.add(f"embedding grad ({rows} ids, {vocab} x {width})", minifm_step, minifm_step, torch_step)


def attention_memory(t: int = 4096, heads: int = 4, d: int = 64):
    """Peak traced NumPy memory of forward + backward at sequence length t (tracemalloc)."""
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((1, heads, t, d)).astype(np.float32) for _ in range(4))
    peaks = {}
    for path in ("compiled", "reference"):
        _backend.use_reference(path == "reference")
        tracemalloc.start()
        out, lse = attention.attention_forward(q, k, v, causal=True)
        attention.attention_backward(q, k, v, out, lse, dout, causal=True)
        peaks[path] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    _backend.use_reference(False)
    print(f"\n### attention peak memory, forward + backward at (1, {heads}, {t}, {d}) float32 (tracemalloc)\n")
    print(f"compiled {peaks['compiled']:.1f} MiB, reference {peaks['reference']:.1f} MiB "
          f"({peaks['compiled'] / peaks['reference']:.3f} of the reference; inputs alone are {4 * q.nbytes / 2**20:.1f} MiB)")


def torch_sampler(logits_t, generator, top_k=0, top_p=1.0):
    """A transformers-style warper chain (topk mask, sort-based top-p) followed by torch.multinomial."""
    scores = logits_t
    if top_k > 0:
        kth = torch.topk(scores, top_k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative <= (1 - top_p)
        sorted_remove[..., -1:] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, -float("inf"))
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)


def bench_sampling(repeats, rng):
    table = Table("sampling: process logits + one draw per row (float32 logits ~ N(0, 2^2))", repeats)
    table.header()
    for batch in (1, 32):
        logits = (rng.standard_normal((batch, 50257)) * 2).astype(np.float32)
        logits_t = torch.from_numpy(logits) if torch else None
        generator = torch.Generator().manual_seed(0) if torch else None
        for options in (dict(top_k=50), dict(top_p=0.9)):
            seeded = np.random.default_rng(0)
            label = ", ".join(f"{key}={value}" for key, value in options.items())
            table.add(f"{label} ({batch}, 50257)", lambda: sample(logits, seeded, **options),
                      lambda: sample(logits, seeded, **options),
                      (lambda: torch_sampler(logits_t, generator, **options)) if torch else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (1 to 3 per cell)")
    parser.add_argument("--only", default="", help="comma list of: softmax, cross_entropy, gelu, embedding, attention, memory, sampling")
    args = parser.parse_args()
    repeats = (1, 3, 2.0) if args.quick else (3, 9, 8.0)
    info = backend_info()
    threads = info["num_threads"]
    if torch:
        torch.set_num_threads(threads)
    print(f"minifm kernels: backend={info['backend']} openmp={info['openmp']} threads={threads}; "
          f"torch {'%s with %d threads' % (torch.__version__, torch.get_num_threads()) if torch else 'not installed'}; "
          f"numpy {np.__version__}; repeats {repeats[0]}-{repeats[1]} (median); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if info["backend"] != "compiled":
        print("warning: not every compiled kernel is loaded; the 'compiled' column may be the reference")
    # As in training (minifm's first backward does this): glibc keeps freed blocks up to 32 MiB for reuse, so
    # a kernel's output array is not a fresh mapping whose every page faults on first touch (torch's caching
    # allocator spares it the same). Without it a (4096, 1024) GELU took 37 ms instead of ~8.
    keep_freed_memory_for_reuse()
    rng = np.random.default_rng(0)
    selected = set(filter(None, args.only.split(","))) or {"softmax", "cross_entropy", "gelu", "embedding", "attention", "memory", "sampling"}
    if "softmax" in selected:
        bench_softmax(repeats, rng)
    if "cross_entropy" in selected:
        bench_cross_entropy(repeats, rng)
    if "gelu" in selected:
        bench_gelu(repeats, rng)
    if "embedding" in selected:
        bench_embedding(repeats, rng)
    if "attention" in selected:
        bench_attention(repeats, rng)
    if "memory" in selected:
        attention_memory()
    if "sampling" in selected:
        bench_sampling(repeats, rng)


if __name__ == "__main__":
    main()
