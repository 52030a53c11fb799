"""Generation speed: tokens/s of KV-cached greedy and top-p decoding, minifm vs PyTorch vs transformers.

For the small (L=4, d=128, H=4, V=2048) and medium (L=6, d=256, H=8, V=8192) GPT configs, batch 1
and 8, a 16-token prompt and 128 new tokens:
  minifm        minifm.sampling.generate (KV cache), greedy and top_p=0.9 sampling
  torch eager   the same weights in a hand-written PyTorch GPT with a KV cache, one token per step
                (written here; torch.no_grad, float32)
  transformers  GPT2LMHeadModel.generate on an equivalent GPT-2 config (random weights of the same
                shapes: speed does not depend on the values; only when transformers is importable)
tokens/s = batch * new tokens / wall time; each cell is the median of --repeats runs. The last column is the
process CPU time per decoding step (ms, median), which a busy machine moves less than the wall time.

    python benchmarks/bench_generate.py            # full table
    python benchmarks/bench_generate.py --quick    # small config, 32 new tokens, 1 repeat
    python benchmarks/bench_generate.py --configs medium --batches 8 --repeats 1   # one part of the table
    python benchmarks/bench_generate.py --threads 1   # every library on one thread

Threads: by default minifm's budget (its kernels follow the machine's load, minifm.kernels.threads) and
torch's own count; --threads N fixes both (minifm.kernels.threads.set_num_threads, torch.set_num_threads).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from minifm.kernels import backend_info, threads as minifm_threads
from minifm.models import GPT, GPTConfig
from minifm.sampling.generate import generate

CONFIGS = {
    "small": dict(n_layer=4, n_embd=128, n_head=4, vocab_size=2048),
    "medium": dict(n_layer=6, n_embd=256, n_head=8, vocab_size=8192),
}
PROMPT_LENGTH = 16


def build_minifm(name: str, block_size: int) -> GPT:
    return GPT(GPTConfig(block_size=block_size, **CONFIGS[name]))


# ---------------------------------------------------------------------------------------- torch twin
def torch_model(model: GPT):
    """A PyTorch GPT-2-layout model holding minifm's weights, with a per-layer KV cache."""
    import torch  # optional yardstick, imported only when its column runs
    import torch.nn.functional as TF  # optional yardstick, imported only when its column runs

    weights = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    config = model.config
    heads, dim = config.n_head, config.n_embd
    head_dim = dim // heads

    def linear(x, prefix):
        bias = weights.get(prefix + ".bias")
        return TF.linear(x, weights[prefix + ".weight"], bias)

    def norm(x, prefix):
        return TF.layer_norm(x, (dim,), weights[prefix + ".weight"], weights.get(prefix + ".bias"), 1e-5)


    def forward(ids, past, position):
        batch, steps = ids.shape
        x = weights["wte.weight"][ids] + weights["wpe.weight"][position:position + steps]
        for layer in range(config.n_layer):
            prefix = f"blocks.{layer}."
            h = norm(x, prefix + "norm1")
            q = linear(h, prefix + "attn.q_proj").view(batch, steps, heads, head_dim).transpose(1, 2)
            k = linear(h, prefix + "attn.k_proj").view(batch, steps, heads, head_dim).transpose(1, 2)
            v = linear(h, prefix + "attn.v_proj").view(batch, steps, heads, head_dim).transpose(1, 2)
            if past[layer] is not None:
                k = torch.cat([past[layer][0], k], dim=2)
                v = torch.cat([past[layer][1], v], dim=2)
            past[layer] = (k, v)
            attended = TF.scaled_dot_product_attention(q, k, v, is_causal=steps > 1)
            x = x + linear(attended.transpose(1, 2).reshape(batch, steps, dim), prefix + "attn.o_proj")
            h = norm(x, prefix + "norm2")
            x = x + linear(TF.gelu(linear(h, prefix + "mlp.fc_in")), prefix + "mlp.fc_out")
        x = norm(x, "norm_f")
        return x[:, -1] @ weights["wte.weight"].T  # (B, V)

    return forward


def torch_generate(forward, prompt: np.ndarray, new_tokens: int, top_p: float | None, seed: int):
    import torch  # optional yardstick, imported only when its column runs

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ids = torch.tensor(prompt)
        past = [None] * 64
        logits = forward(ids, past, 0)
        position = ids.shape[1]
        out = []
        for _ in range(new_tokens):
            if top_p is None:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(logits, dim=-1)
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                cumulative = sorted_probs.cumsum(dim=-1)
                sorted_probs[cumulative - sorted_probs > top_p] = 0
                choice = torch.multinomial(sorted_probs, 1, generator=generator)
                token = order.gather(-1, choice)
            out.append(token)
            logits = forward(token, past, position)
            position += 1
    return torch.cat(out, dim=1)


def check_torch_twin(model: GPT, forward) -> float:
    """Max |logit difference| between minifm and the torch twin on a random prompt (a sanity check)."""
    import torch  # optional yardstick, imported only when its column runs

    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(2, 8))
    with torch.no_grad():
        theirs = forward(torch.tensor(ids), [None] * 64, 0).numpy()
    ours = model(ids).data[:, -1]
    return float(np.abs(theirs - ours).max())


def transformers_model(model: GPT):
    import torch  # optional yardstick, imported only when its column runs
    from transformers import GPT2Config, GPT2LMHeadModel  # optional yardstick, imported only when its column runs

    config = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                    n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                    activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)).eval()
    return hf, torch


def time_call(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of `repeats` calls: on a busy machine the CPU time
    moves less than the wall time (it leaves out the time other processes held the cores)."""
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    return statistics.median(times), statistics.median(cpu_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--configs", default="small,medium", help="comma-separated subset of small,medium")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every library (default: minifm's budget and torch's own count)")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive integer, got {args.threads}")
        minifm_threads.set_num_threads(args.threads)
    configs = ["small"] if args.quick else [name for name in args.configs.split(",") if name]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown config(s) {unknown}; choose from {sorted(CONFIGS)}")
    batches = [int(size) for size in args.batches.split(",") if size]
    new_tokens = 32 if args.quick else args.new_tokens
    repeats = 1 if args.quick else args.repeats
    try:
        import torch  # optional yardstick, imported only when its column runs

        torch.set_num_threads(args.threads if args.threads is not None else max(1, torch.get_num_threads()))
    except ImportError:
        torch = None
    try:
        import transformers  # noqa: F401  (optional yardstick: its column is skipped without it)

        have_transformers = True
    except ImportError:
        have_transformers = False

    print(f"minifm backend: {backend_info()}")
    torch_threads = torch.get_num_threads() if torch is not None else "-"
    print(f"threads: minifm {minifm_threads.num_threads()} (fixed: {not minifm_threads.follows_load()}), "
          f"torch {torch_threads}")
    print(f"prompt {PROMPT_LENGTH} tokens, {new_tokens} new tokens, median of {repeats}; tokens/s (higher is better)\n")
    header = f"{'config':<7} {'batch':>5} {'mode':<7} {'minifm':>9} {'torch eager':>12} {'transformers':>13} " \
             f"{'vs torch':>9} {'vs HF':>7}   CPU ms/step minifm / torch / HF"
    print(header)
    print("-" * len(header))
    for name in configs:
        model = build_minifm(name, PROMPT_LENGTH + new_tokens)
        forward = torch_model(model) if torch is not None else None
        if forward is not None:
            error = check_torch_twin(model, forward)
            if error > 1e-3:
                print(f"warning: torch twin differs from minifm by {error:.2e} in the logits")
        hf = transformers_model(model) if have_transformers else None
        for batch in batches:
            prompt = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(batch, PROMPT_LENGTH))
            for mode in ("greedy", "top-p"):
                options = {} if mode == "greedy" else {"do_sample": True, "top_k": 0, "top_p": 0.9, "seed": 0}
                ours, ours_cpu = time_call(lambda: generate(model, prompt, new_tokens, **options), repeats)
                tokens = batch * new_tokens
                row = {"minifm": tokens / ours}
                cpu = {"minifm": ours_cpu / new_tokens * 1e3}  # ms of process CPU time per decoding step
                if forward is not None:
                    top_p = None if mode == "greedy" else 0.9
                    theirs, theirs_cpu = time_call(lambda: torch_generate(forward, prompt, new_tokens, top_p, 0),
                                                   repeats)
                    row["torch"] = tokens / theirs
                    cpu["torch"] = theirs_cpu / new_tokens * 1e3
                if hf is not None:
                    hf_model, torch_module = hf
                    hf_options = {"do_sample": False} if mode == "greedy" else {"do_sample": True, "top_p": 0.9,
                                                                                 "top_k": 0}
                    ids = torch_module.tensor(prompt)

                    def run_hf():
                        with torch_module.no_grad():
                            hf_model.generate(ids, attention_mask=torch_module.ones_like(ids),
                                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                              pad_token_id=0, **hf_options)

                    hf_wall, hf_cpu = time_call(run_hf, repeats)
                    row["hf"] = tokens / hf_wall
                    cpu["hf"] = hf_cpu / new_tokens * 1e3
                vs_torch = f"{row['minifm'] / row['torch']:.2f}x" if "torch" in row else "-"
                vs_hf = f"{row['minifm'] / row['hf']:.2f}x" if "hf" in row else "-"
                cpu_text = " / ".join(f"{cpu.get(key, float('nan')):.2f}" for key in ("minifm", "torch", "hf"))
                print(f"{name:<7} {batch:>5} {mode:<7} {row['minifm']:>9.0f} "
                      f"{row.get('torch', float('nan')):>12.0f} {row.get('hf', float('nan')):>13.0f} "
                      f"{vs_torch:>9} {vs_hf:>7}   {cpu_text}", flush=True)


if __name__ == "__main__":
    main()
