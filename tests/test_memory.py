"""minifm.memory: the allocator setting a training process gets on its first backward().

What is checked: after keep_freed_memory_for_reuse (which the engine calls on the first backward), the
steps of a small model's training loop take (almost) no minor page faults, where with glibc's defaults
(MINIFM_KEEP_FREED_MEMORY=0) the same steps take hundreds; the user's own malloc settings and the switch
leave glibc alone; the decision is made once. Each case runs in a fresh interpreter (the setting is
process-wide and the test process has long made its own decision).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minifm import memory

# A fresh process: a small GPT (activations of 64-512 KiB, glibc's default mmap range), 3 warm-up steps,
# then the minor page faults of 5 more steps of forward, backward and AdamW.
STEPS_SCRIPT = """
import json, resource, sys
import numpy as np
from minifm import memory
from minifm.models import GPT, GPTConfig
from minifm.optim import AdamW
model = GPT(GPTConfig(vocab_size=128, block_size=64, n_layer=2, n_head=4, n_embd=128, seed=0))
optimizer = AdamW(model.parameters(), lr=1e-3)
ids = np.random.default_rng(0).integers(0, 128, size=(16, 65))
def step():
    optimizer.zero_grad()
    model.loss(ids[:, :-1], ids[:, 1:]).backward()
    optimizer.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"faults_per_step": faults, "in_effect": memory.keep_freed_memory_for_reuse()}))
"""


def run_steps(**environment) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MINIFM_KEEP_FREED_MEMORY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    env.update(environment, MINIFM_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", STEPS_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc page-fault counts")
def test_training_steps_reuse_freed_blocks_instead_of_faulting_in_new_pages():
    kept = run_steps()
    default = run_steps(MINIFM_KEEP_FREED_MEMORY="0")
    assert kept["in_effect"] and not default["in_effect"]
    assert default["faults_per_step"] > 200, default     # glibc's defaults: fresh pages every step
    assert kept["faults_per_step"] < 20, kept            # the same steps reuse the freed blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_users_own_malloc_settings_are_left_alone():
    assert not run_steps(MALLOC_TRIM_THRESHOLD_="1000000")["in_effect"]


def test_the_decision_is_made_once_per_process():
    first = memory.keep_freed_memory_for_reuse()
    assert memory.keep_freed_memory_for_reuse() is first
