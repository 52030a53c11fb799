"""What the bench_*.py scripts beside it share: the machine line they print, SmolLM2-135M's layout, a profile.

Kept free of torch and the other oracles, so that a benchmark's child processes (resident-memory
measurements) can import it without loading a second library.
"""
from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import subprocess


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
