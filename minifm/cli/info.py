"""`minifm info`: version, kernel backend and a tiny forward/backward pass as a smoke test."""
from __future__ import annotations

import sys
import time

import numpy as np

import minifm
import minifm.functional as F
from minifm.cli.common import Command, config_values
from minifm.kernels import backend_info
from minifm.models import GPT, GPTConfig


def add_info_arguments(parser) -> None:
    parser.add_argument("--no-demo", action="store_true", help="skip the tiny forward/backward demo")


def run_info(args) -> int:
    config_values(args, [])  # info has no settings: any key in a --config file is an error
    print(f"minifm {minifm.__version__} (numpy {np.__version__}, Python {sys.version.split()[0]})")
    for key, value in backend_info().items():
        print(f"  {key}: {value}")
    if args.no_demo:
        return 0
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    ids = np.random.default_rng(0).integers(0, 64, size=(4, 17))
    started = time.perf_counter()
    loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])  # (B, T, V) logits against next tokens
    loss.backward()
    seconds = time.perf_counter() - started
    grad_norm = float(np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in model.parameters()
                                  if p.grad is not None)))
    print(f"demo: GPT with {model.num_parameters():,} parameters, batch 4 x 16 tokens; loss {float(loss.data):.4f} "
          f"(ln 64 = {np.log(64):.4f} for a uniform guess), gradient norm {grad_norm:.4f}, "
          f"forward+backward {seconds * 1000:.1f} ms")
    return 0


COMMANDS = [Command("info", "version, kernel backend and a tiny forward/backward demo", add_info_arguments, run_info)]
