"""What the bench_*.py scripts beside it share: the machine line they print, the load average, SmolLM2-135M's
layout, a random next-token batch, one training step, resident-memory readings, a profile, and the step
servers: child processes that each hold one library's model and time one step per request, so that two
libraries are timed in turns, each in a process of its own (as a user runs either), not sharing one
process's allocator, thread pools and caches.

Kept free of torch and the other oracles, so that a benchmark's child processes (resident-memory
measurements) can import it without loading a second library.
"""
from __future__ import annotations

import cProfile
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import time

import numpy as np


def machine_description() -> str:
    """lscpu's model name, the vector width, the caches, this process's usable cores and the platform."""
    fields = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = set(fields.get("Flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{fields.get('Model name', platform.processor() or 'unknown CPU')}, {cores} usable cores, {vector}, "
            f"L2 {fields.get('L2 cache', '?')}, L3 {fields.get('L3 cache', '?')}; {platform.platform()}")


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as "0.81 1.02 1.10" ("?" where the system has none)."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


def rss_bytes() -> int:
    """This process's resident set now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The largest resident set this process has had (getrusage; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def high_water_bytes() -> int:
    """VmHWM of /proc/self/status: the peak resident set since the start or the last reset_high_water()."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return peak_rss_bytes()


def reset_high_water() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def next_token_batch(batch: int, tokens: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels), each (batch, tokens) int64: random ids (seed 0) and the ids that follow them."""
    ids = np.random.default_rng(0).integers(0, vocab, size=(batch, tokens + 1))  # (batch, tokens + 1)
    return np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:])


def training_step(model, optimizer, inputs: np.ndarray, labels: np.ndarray):
    """A function doing one step of minifm training (zero the gradients, loss, backward, optimizer step) that
    returns the loss as a float; the same step in every benchmark that times minifm's training."""
    def step() -> float:
        optimizer.zero_grad()
        loss = model.loss(inputs, labels)
        loss.backward()
        optimizer.step()
        return float(loss.data)

    return step


def timed(step, lead_in: int = 0) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of one call, made after `lead_in`
    untimed calls."""
    for _ in range(lead_in):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def serve_steps(step) -> None:
    """The child's side of a StepServer: print "ready", then for each "step" or "step K" line read from
    stdin run K untimed steps (0 when not given) and time one more (one JSON line each: wall and CPU
    seconds), until any other line."""
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "step":
            break
        wall, cpu = timed(step, int(words[1]) if len(words) > 1 else 0)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def torch_child_environment(minifm_openmp_defaults: dict) -> dict:
    """The environment for a child process that runs torch: this one's, without the OpenMP settings that
    importing minifm set for its own runtime (minifm.kernels._backend.OPENMP_DEFAULTS: the wait policy
    and the spin count). Torch's runtime then keeps its own defaults, unless the user chose them."""
    environment = dict(os.environ)
    for name in minifm_openmp_defaults:
        environment.pop(name, None)
    return environment


class StepServer:
    """A child process (started with `command`, which ends in serve_steps) that holds one side's model and
    times one step per request."""

    def __init__(self, name: str, command: list[str], environment: dict | None = None):
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=environment)
        self._expect("ready")

    def _expect(self, what: str) -> str:
        line = self.process.stdout.readline()
        if not line or (what == "ready" and line.strip() != "ready"):
            raise SystemExit(f"the {self.name} step server stopped (exit {self.process.poll()}) before {what!r}")
        return line

    def step(self, lead_in: int = 0) -> tuple[float, float]:
        """(wall, CPU) seconds of one step, timed inside the child after `lead_in` untimed steps there."""
        self.process.stdin.write(f"step {lead_in}\n")
        self.process.stdin.flush()
        result = json.loads(self._expect("a timing"))
        return result["wall"], result["cpu"]

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()


# SmolLM2-135M-Instruct's layout as a minifm GPTConfig's fields, and the same as transformers' LlamaConfig
# arguments, for the benchmarks that build both libraries' models at that shape
SMOLLM2_CONFIG = dict(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, mlp="swiglu",
                      mlp_hidden=1536, pos="rope", rope_base=100000.0, norm="rmsnorm", norm_eps=1e-5, bias=False,
                      tie_weights=True)


def smollm2_llama_config() -> dict:
    """transformers.LlamaConfig(**this) is SMOLLM2_CONFIG's model in transformers' names."""
    return dict(vocab_size=SMOLLM2_CONFIG["vocab_size"], hidden_size=SMOLLM2_CONFIG["n_embd"],
                intermediate_size=SMOLLM2_CONFIG["mlp_hidden"], num_hidden_layers=SMOLLM2_CONFIG["n_layer"],
                num_attention_heads=SMOLLM2_CONFIG["n_head"], num_key_value_heads=SMOLLM2_CONFIG["n_kv_head"],
                max_position_embeddings=SMOLLM2_CONFIG["block_size"], rms_norm_eps=SMOLLM2_CONFIG["norm_eps"],
                rope_parameters={"rope_type": "default", "rope_theta": SMOLLM2_CONFIG["rope_base"]},
                tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu")


def profile_report(function, lines: int = 20) -> str:
    """Run function() under cProfile; the `lines` functions with the most own time, as pstats prints them."""
    profiler = cProfile.Profile()
    profiler.enable()
    function()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(lines)
    return text.getvalue()
