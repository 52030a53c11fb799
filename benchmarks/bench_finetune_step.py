"""Fine-tuning speed and memory: one LoRA step and one full fine-tuning step of SmolLM2-135M, minifm vs PyTorch
eager (transformers + peft), the same weights, inputs, labels, optimizer and threads, side by side.

The model: SmolLM2-135M-Instruct's Llama layout (30 layers, width 576, 9 query / 3 key-value heads, SwiGLU 1536,
RoPE, RMSNorm, tied 49152-token embedding; float32). By default transformers' LlamaForCausalLM randomly
initialised with that shape and its weights copied by name into a minifm GPT (benchmarks/bench_real_model.py's
`random_transformers_model` and `minifm_copy_of`); with --gguf the real GGUF in both
(bench_real_model.load_gguf_models, minifm's weights in float32).
One step = zero the gradients, forward a batch of --batch (8) sequences of --tokens (128) random token ids,
mean next-token cross-entropy against the following token ids (the same labels in both), backward, AdamW step
(lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on every trained parameter, in both libraries).
  lora  minifm.peft LoRA vs peft.LoraConfig on the transformers model: r --rank (16), lora_alpha --alpha (32),
        dropout 0, targets --targets (q_proj k_proj v_proj o_proj: every attention projection); peft's A
        matrices are copied into minifm's (B starts at zero in both), so both adapters start equal
  full  every parameter trains (the tied embedding once)

Before anything is timed, for each step kind: the first step's loss must agree (|difference| <= 1e-4 x the
loss), every trained parameter's gradient must agree (max |difference| <= 1e-3 x the largest |gradient| of that
parameter) and AdamW's first update must agree (||update difference|| <= 1e-2 x ||update||; elementwise the
first Adam update is lr * g / (|g| + eps), so an entry whose gradient is at rounding level may flip sign
between two correct summation orders: the count of entries that differ by more than lr/100 is printed); the
script stops otherwise.

Time: the median wall time of --repeats steps (after --warmup steps, which also create the optimizer state),
the libraries alternating step by step so both see the same background load; "ratio" is minifm / torch (<= 1:
minifm no slower) and "pair ratio" the median of the per-pair ratios. CPU time (process_time: all threads)
is printed beside it, which on a loaded machine says more than wall time.
Where the steps run (--timing): by default ("processes") each side steps in a child process of its own that
imports only its library (as a user runs either), the parent asking the two in turn for one step at a time, so
the alternation is kept; the weights are then each library's own random initialisation of the same shapes (or
the GGUF in both). "shared" times the checked pair in this one process, as the first version of this script
did: there the thread pools of both libraries live side by side (torch's OpenMP and MKL threads, NumPy's
OpenBLAS threads and minifm's OpenMP threads: four pools on two cores, each spinning for a while after its
own work), so each side's step also pays for the other library's idle threads (docs/performance.md,
"Fine-tuning step", has both measurements).
Memory: each side alone in a child process of its own (the minifm child never imports torch, the torch child
never imports minifm), which builds its model (the same shapes; the random weights are each library's own
initialisation, which does not change the memory), runs --memory-steps steps and reports the kernel's peak
resident set (getrusage ru_maxrss: model + library + optimizer state + the step's activations), and the RSS
after building the model and before the first step.
Threads: torch.set_num_threads and minifm.kernels.threads.set_num_threads both --threads (default 2).
Also printed: the machine, load averages before and after, library versions.

    python benchmarks/bench_finetune_step.py                  # LoRA and full, 5 repeats (~15 min idle)
    python benchmarks/bench_finetune_step.py --kinds lora --repeats 3
    python benchmarks/bench_finetune_step.py --gguf           # the real SmolLM2 weights in both
    python benchmarks/bench_finetune_step.py --skip-memory    # time only
    python benchmarks/bench_finetune_step.py --profile lora   # also cProfile one minifm step
    python benchmarks/bench_finetune_step.py --timing shared  # both sides timed in this one process
    python benchmarks/bench_finetune_step.py --gradient-checkpointing   # both recompute activations in backward

Simplifications: float32 only; no padding (every token is a label); dropout 0; without --gguf the memory
children use each library's own random initialisation (the same shapes), with --gguf both load the GGUF.
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

# A memory child imports only its own library, so its peak RSS holds nothing of the other one. The parent
# imports torch before minifm (as bench_train_step does), so torch's OpenMP runtime starts with its own settings.
_CHILD_SIDE = sys.argv[sys.argv.index("--child") + 1] if "--child" in sys.argv[:-1] else None
if _CHILD_SIDE != "minifm":
    import torch
    import transformers
    import peft
if _CHILD_SIDE != "torch":
    import minifm
    from minifm.kernels import _backend, threads as minifm_threads
    from minifm.models import GPT, GPTConfig
    from minifm.optim import AdamW
    from minifm.peft import LoraConfig, get_peft_model
    from minifm.pretrained.registry import resolve_model_path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402  (a sibling script)
    SMOLLM2_CONFIG, StepServer, machine_description, next_token_batch, peak_rss_bytes, profile_report, rss_bytes,
    serve_steps, smollm2_llama_config, timed, torch_child_environment, training_step,
)
if _CHILD_SIDE is None:
    import bench_real_model

ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
KINDS = ("lora", "full")


# ------------------------------------------------------------------------------------------ inputs
# ------------------------------------------------------------------------------------------ minifm side
def minifm_lora_config(args) -> "LoraConfig":
    return LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=list(args.targets))


def minifm_trainer(model, kind: str, args):
    """(model to train, step function returning the loss, {name: trained parameter}) for minifm."""
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if kind == "lora":
        model = get_peft_model(model, minifm_lora_config(args))
    else:
        model.requires_grad_(True)
    model.train()
    trained = {name: param for name, param in model.named_parameters() if param.requires_grad}
    optimizer = AdamW(list(trained.values()), **ADAMW)
    inputs, labels = next_token_batch(args.batch, args.tokens, SMOLLM2_CONFIG["vocab_size"])
    return model, training_step(model, optimizer, inputs, labels), trained


# ------------------------------------------------------------------------------------------ torch side
def torch_lora_config(args):
    return peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=list(args.targets),
                           bias="none")


def torch_trainer(model, kind: str, args):
    """(model to train, step function returning the loss, {name: trained parameter}) for transformers (+ peft)."""
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if kind == "lora":
        model = peft.get_peft_model(model, torch_lora_config(args))
    else:
        model.requires_grad_(True)
    model.train()
    trained = {name: param for name, param in model.named_parameters() if param.requires_grad}
    optimizer = torch.optim.AdamW(list(trained.values()), lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                                  weight_decay=ADAMW["weight_decay"])
    inputs, labels = (torch.from_numpy(array) for array in next_token_batch(args.batch, args.tokens,
                                                                      SMOLLM2_CONFIG["vocab_size"]))

    def step() -> float:
        optimizer.zero_grad()
        logits = model(input_ids=inputs).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return model, step, trained


def torch_random_model():
    """LlamaForCausalLM of SmolLM2-135M's shape, transformers' own random initialisation (memory child)."""
    config = transformers.LlamaConfig(**smollm2_llama_config())
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float()


# ------------------------------------------------------------------------------------------ name maps
def hf_name_of(minifm_name: str) -> str:
    """The transformers (+ peft) parameter name of a minifm parameter name (plain or PEFT-wrapped)."""
    lora = minifm_name.startswith("base_model.")
    name = minifm_name[len("base_model."):] if lora else minifm_name
    fixed = {"wte.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}
    if name in fixed:
        hf = fixed[name]
    else:
        _, layer, rest = name.split(".", 2)  # blocks.N.<rest>
        renames = {"attn.": "self_attn.", "norm1.": "input_layernorm.", "norm2.": "post_attention_layernorm.",
                   "mlp.": "mlp."}
        prefix = next(ours for ours in renames if rest.startswith(ours))
        hf = f"model.layers.{layer}.{renames[prefix]}{rest[len(prefix):]}"
    return f"base_model.model.{hf}" if lora else hf


def copy_lora_a(ours: dict, theirs: dict) -> None:
    """Copy peft's initial LoRA matrices into minifm's, so both adapters start equal (A random, B zero)."""
    for name, param in ours.items():
        param.data[...] = theirs[hf_name_of(name)].detach().numpy()


# ------------------------------------------------------------------------------------------ the checks
def relative_gap(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max |theirs|; the plain max |ours - theirs| where theirs is all zero (LoRA's A
    before its B has moved off zero)."""
    scale = float(np.abs(theirs).max())
    gap = float(np.abs(ours - theirs).max())
    return gap / scale if scale > 0 else gap


def check_first_step(kind: str, our_model, our_trained: dict, their_model, their_trained: dict, args) -> str:
    """One step of each (forward, backward, AdamW) compared: loss, gradients, update (see the docstring)."""
    inputs, labels = next_token_batch(args.batch, args.tokens, SMOLLM2_CONFIG["vocab_size"])
    names = list(our_trained)
    before = {name: our_trained[name].data.copy() for name in names}
    their_before = {name: their_trained[hf_name_of(name)].detach().clone().numpy() for name in names}
    our_optimizer = AdamW(list(our_trained.values()), **ADAMW)
    their_optimizer = torch.optim.AdamW(list(their_trained.values()), lr=ADAMW["lr"], betas=ADAMW["betas"],
                                        eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    our_loss = our_model.loss(inputs, labels)
    our_loss.backward()
    logits = their_model(input_ids=torch.from_numpy(inputs)).logits
    their_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   torch.from_numpy(labels).reshape(-1))
    their_loss.backward()
    del logits
    loss_gap = abs(float(our_loss.data) - float(their_loss.detach())) / abs(float(their_loss.detach()))
    gradient_gap = max(relative_gap(our_trained[name].grad, their_trained[hf_name_of(name)].grad.numpy())
                       for name in names)
    our_optimizer.step()
    their_optimizer.step()
    difference_sq = update_sq = 0.0
    flipped = total = 0
    for name in names:
        ours = our_trained[name].data - before[name]
        theirs = their_trained[hf_name_of(name)].detach().numpy() - their_before[name]
        difference_sq += float(np.sum((ours.astype(np.float64) - theirs) ** 2))
        update_sq += float(np.sum(theirs.astype(np.float64) ** 2))
        flipped += int(np.count_nonzero(np.abs(ours - theirs) > ADAMW["lr"] / 100))
        total += ours.size
    update_gap = (difference_sq / update_sq) ** 0.5
    for optimizer in (our_optimizer, their_optimizer):
        optimizer.zero_grad()
    line = (f"{kind}: loss minifm {float(our_loss.data):.6f} torch {float(their_loss.detach()):.6f} "
            f"(relative gap {loss_gap:.1e}); gradients: worst max|diff|/max|grad| over {len(names)} parameters "
            f"{gradient_gap:.1e}; AdamW update: ||diff||/||update|| {update_gap:.1e}, entries off by > lr/100: "
            f"{flipped} of {total:,}")
    if not (loss_gap <= 1e-4 and gradient_gap <= 1e-3 and update_gap <= 1e-2):
        raise SystemExit(f"the two libraries disagree, not timing them:\n  {line}")
    return line


# ------------------------------------------------------------------------------------------ memory children
def child_trainer(side: str, kind: str, args):
    """(step function, {name: trained parameter}) of one side, built inside a child process that imports only
    that side's library (each library's own random initialisation of the same shapes, or the GGUF in both)."""
    if side == "minifm":
        minifm_threads.set_num_threads(args.threads)
        if args.gguf:
            model = GPT.from_pretrained(resolve_model_path("smollm2-135m-instruct"), dtype="float32")
        else:
            model = GPT(GPTConfig(**SMOLLM2_CONFIG))
        _, step, trained = minifm_trainer(model, kind, args)
    else:
        torch.set_num_threads(args.threads)
        if args.gguf:
            path = gguf_path()
            model = transformers.AutoModelForCausalLM.from_pretrained(
                os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
        else:
            model = torch_random_model()
        _, step, trained = torch_trainer(model, kind, args)
    return step, trained


def run_memory_child(side: str, kind: str, args) -> None:
    """Build one side's model, run --memory-steps steps, print one JSON line (see the module docstring)."""
    started_rss = rss_bytes()
    step, trained = child_trainer(side, kind, args)
    gc.collect()
    model_rss = rss_bytes()
    seconds = []
    for _ in range(args.memory_steps):
        begun = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - begun)
    print(json.dumps({"side": side, "kind": kind, "start_rss": started_rss, "model_rss": model_rss,
                      "peak_rss": peak_rss_bytes(), "end_rss": rss_bytes(), "seconds": seconds,
                      "trained": int(sum(param.data.size if side == "minifm" else param.numel()
                                         for param in trained.values()))}))


def run_step_server(side: str, kind: str, args) -> None:
    """Build one side's model, then serve timed steps (--timing processes; bench_common.serve_steps)."""
    step, _ = child_trainer(side, kind, args)
    serve_steps(step)


def gguf_path() -> str:
    """The SmolLM2-135M-Instruct GGUF's path without importing minifm (the torch child), via a subprocess."""
    code = ("from minifm.pretrained.registry import resolve_model_path;"
            "print(resolve_model_path('smollm2-135m-instruct'))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def child_command(side: str, kind: str, args) -> list[str]:
    """The command line of a child process of `side` running `kind` steps with this run's settings."""
    return [sys.executable, os.path.abspath(__file__), "--child", side, "--child-kind", kind,
            "--threads", str(args.threads), "--batch", str(args.batch), "--tokens", str(args.tokens),
            "--rank", str(args.rank), "--alpha", str(args.alpha), "--memory-steps", str(args.memory_steps),
            "--targets", *args.targets] + (["--gguf"] if args.gguf else []) \
        + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])


def child_environment(side: str) -> dict:
    """The environment of a child: this one's; a torch child's without the OpenMP settings importing minifm made
    for its own runtime (torch's threads would otherwise sleep after every parallel region)."""
    return torch_child_environment(_backend.OPENMP_DEFAULTS) if side == "torch" else dict(os.environ)


def measure_memory(side: str, kind: str, args) -> dict:
    done = subprocess.run(child_command(side, kind, args), capture_output=True, text=True,
                          env=child_environment(side))
    if done.returncode != 0:
        raise SystemExit(f"the {side} {kind} memory child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ timing
def step_server(side: str, kind: str, args) -> StepServer:
    """A child process holding `side`'s model, timing one `kind` step per request."""
    return StepServer(side, child_command(side, kind, args) + ["--serve"], child_environment(side))


def build_pair(kind: str, args):
    """The two models with the same weights, their step functions and trained parameters, the check line."""
    if args.gguf:
        ours, theirs, _, _ = bench_real_model.load_gguf_models("float32")
    else:
        theirs = bench_real_model.random_transformers_model()
        ours = bench_real_model.minifm_copy_of(theirs)
    our_model, our_step, our_trained = minifm_trainer(ours, kind, args)
    their_model, their_step, their_trained = torch_trainer(theirs, kind, args)
    if kind == "lora":
        copy_lora_a(our_trained, their_trained)
    check = check_first_step(kind, our_model, our_trained, their_model, their_trained, args)
    return our_step, their_step, check


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--threads", type=int, default=2, help="threads of both libraries (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each library before timing")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    parser.add_argument("--gguf", action="store_true", help="the real SmolLM2-135M-Instruct weights in both")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="both sides recompute each block's activations in backward (minifm: "
                             "GPT.gradient_checkpointing_enable(); transformers: the same, non-reentrant)")
    parser.add_argument("--skip-memory", action="store_true", help="no memory children")
    parser.add_argument("--skip-timing", action="store_true", help="memory children only")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps each memory child runs")
    parser.add_argument("--profile", choices=KINDS, default=None, help="cProfile one minifm step of this kind")
    parser.add_argument("--child", choices=("minifm", "torch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-kind", choices=KINDS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timing", choices=("processes", "shared"), default="processes",
                        help="time each side in its own child process, the two taking turns (default), or both "
                             "in this process (see the module docstring)")
    args = parser.parse_args()
    if args.child is not None:
        if args.serve:
            run_step_server(args.child, args.child_kind, args)
        else:
            run_memory_child(args.child, args.child_kind, args)
        return
    torch.set_num_threads(args.threads)
    minifm_threads.set_num_threads(args.threads)
    print(f"machine: {machine_description()}")
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}")
    print(f"threads: torch {torch.get_num_threads()}, minifm kernels {minifm_threads.num_threads()} "
          f"(BLAS {minifm_threads.blas_threads()}); torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__}, numpy {np.__version__}; "
          f"{minifm.kernels.backend_info()}")
    print(f"weights: {'SmolLM2-135M-Instruct GGUF (float32)' if args.gguf else 'random, SmolLM2-135M shape'}; "
          f"batch {args.batch} x {args.tokens} tokens; AdamW {ADAMW}; LoRA r={args.rank} alpha={args.alpha} "
          f"dropout 0 on {' '.join(args.targets)}; gradient checkpointing "
          f"{'on (both)' if args.gradient_checkpointing else 'off'}")

    memory = {}
    if not args.skip_memory:
        for kind in args.kinds:
            for side in ("minifm", "torch"):
                memory[kind, side] = measure_memory(side, kind, args)
                result = memory[kind, side]
                print(f"memory {kind} {side}: peak RSS {result['peak_rss'] / 2**20:,.0f} MiB; after building "
                      f"{result['model_rss'] / 2**20:,.0f} MiB; trained parameters {result['trained']:,}; "
                      f"steps {', '.join(f'{s:.1f}' for s in result['seconds'])} s", flush=True)

    timing = {}
    if not args.skip_timing:
        for kind in args.kinds:
            our_step, their_step, check = build_pair(kind, args)
            print(f"check {check}", flush=True)
            if args.profile == kind:
                our_step()
                print(f"\ncProfile of one minifm {kind} step, by own time:\n{profile_report(our_step)}")
            if args.timing == "processes":  # the checked pair leaves; each side steps in its own process
                del our_step, their_step
                gc.collect()
                servers = [step_server("minifm", kind, args), step_server("torch", kind, args)]
                our_timed, their_timed = servers[0].step, servers[1].step
            else:
                our_timed, their_timed = (lambda: timed(our_step)), (lambda: timed(their_step))
            for _ in range(args.warmup):
                our_timed()
                their_timed()
            ours, theirs = [], []
            for repeat in range(args.repeats):
                ours.append(our_timed())
                theirs.append(their_timed())
                print(f"{kind} repeat {repeat + 1}: minifm {ours[-1][0]:.2f} s (CPU {ours[-1][1]:.2f}), torch "
                      f"{theirs[-1][0]:.2f} s (CPU {theirs[-1][1]:.2f}), load {os.getloadavg()[0]:.1f}", flush=True)
            timing[kind] = ours, theirs
            if args.timing == "processes":
                for server in servers:
                    server.close()
            del our_timed, their_timed
            gc.collect()

    print(f"\nload average (1, 5, 15 min) after: {os.getloadavg()}")
    if timing:
        print(f"medians of {args.repeats} steps (after {args.warmup} warm-up), seconds; ratio = minifm / torch")
        header = (f"{'step':<6} {'minifm s':>9} {'torch s':>8} {'ratio':>6} {'pair ratio':>10} "
                  f"{'minifm CPU s':>12} {'torch CPU s':>11} {'CPU ratio':>9}")
        print(header)
        print("-" * len(header))
        for kind, (ours, theirs) in timing.items():
            wall = [statistics.median(t[0] for t in side) for side in (ours, theirs)]
            cpu = [statistics.median(t[1] for t in side) for side in (ours, theirs)]
            pair = statistics.median(a[0] / b[0] for a, b in zip(ours, theirs))
            print(f"{kind:<6} {wall[0]:>9.2f} {wall[1]:>8.2f} {wall[0] / wall[1]:>6.2f} {pair:>10.2f} "
                  f"{cpu[0]:>12.2f} {cpu[1]:>11.2f} {cpu[0] / cpu[1]:>9.2f}")
    if memory:
        print("peak resident memory, MiB (each side alone in its own process)")
        header = f"{'step':<6} {'minifm peak':>11} {'torch peak':>10} {'ratio':>6} {'minifm built':>12} {'torch built':>11}"
        print(header)
        print("-" * len(header))
        for kind in args.kinds:
            ours, theirs = memory[kind, "minifm"], memory[kind, "torch"]
            print(f"{kind:<6} {ours['peak_rss'] / 2**20:>11,.0f} {theirs['peak_rss'] / 2**20:>10,.0f} "
                  f"{ours['peak_rss'] / theirs['peak_rss']:>6.2f} {ours['model_rss'] / 2**20:>12,.0f} "
                  f"{theirs['model_rss'] / 2**20:>11,.0f}")


if __name__ == "__main__":
    main()
