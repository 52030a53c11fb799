"""Real-model speed: minifm vs transformers on SmolLM2-135M's Llama layout, with identical weights, side by side.

Models (float32, batch 1), the same weights in both libraries:
  default  transformers' LlamaForCausalLM, randomly initialised with SmolLM2-135M-Instruct's shape (30 layers,
           width 576, 9 query and 3 key/value heads of 64, SwiGLU 1536, RoPE base 1e5, RMSNorm eps 1e-5, tied
           embeddings, vocabulary 49152), its weights copied by name into a minifm GPT of the same config
  --gguf   the real SmolLM2-135M-Instruct GGUF (minifm's short name smollm2-135m-instruct): minifm's
           GPT.from_pretrained(file, dtype="float32") and transformers' AutoModelForCausalLM.from_pretrained(
           folder, gguf_file=name, dtype=torch.float32), each timed from the file to a model ready to run;
           with --dtype stored minifm keeps the file's own blocks (Q4_1 Linear weights, Q8_0 embedding and
           head: minifm/nn/quantized.py) while transformers runs its float32 dequantization of them, the
           same values, so the logits check below holds for both
Before anything is timed, both models' logits on one 32-token prompt must agree (max |difference| at most
1e-4 of the largest logit); the script stops otherwise.

Figures, each the median of --repeats runs (the libraries alternate inside every repeat, so both see the
same background load; "x HF" is minifm's speed over transformers'):
  prefill   tokens/s of one forward over a --prefill-token prompt (512). Row "all logits": both compute the
            logits of every position (a plain forward in both). Row "last logits": only the last position's
            (logits_to_keep=1 in both, what both libraries' generate does)
  decode    tokens/s of --decode (128) greedy steps after a 16-token prompt: a loop of one-token forwards
            with the KV cache and an argmax (the prompt's forward is not timed); also the process CPU time
            per token (all threads), which a busy host changes less than the wall time
  generate  tokens/s of a whole greedy generate() of --decode new tokens after a 16-token prompt:
            minifm.sampling.generate vs transformers' model.generate (min_new_tokens = max_new_tokens)
Also printed: the machine (lscpu's model name, usable cores), load averages before and after, the threads
(torch.set_num_threads and minifm.kernels.threads.set_num_threads, both --threads; default every usable
core), and the memory-bandwidth bound of decoding: the weight bytes one decoded token reads (every
parameter once: the tied embedding is the output head) over the read bandwidth measured here with a large
float32 matrix-vector product (NumPy's BLAS on --threads threads, 4096 x 16384) and a plain sum over 1 GB,
and minifm's decode speed as a fraction of that bound: against the bound measured once before the repeats,
and against the bound measured again right after each repeat's decode (the same product, median of 3), so
that on a shared host each repeat is compared with the bandwidth it had.

    python benchmarks/bench_real_model.py                  # random weights, the full table (~5 min)
    python benchmarks/bench_real_model.py --quick          # 2 repeats, 128-token prefill, 32 decode steps
    python benchmarks/bench_real_model.py --gguf           # the real SmolLM2 GGUF in both (+ ~2 min to load)
    python benchmarks/bench_real_model.py --gguf --dtype stored   # minifm runs the GGUF's Q4_1 blocks as they are
    python benchmarks/bench_real_model.py --threads 1      # both libraries on one thread
    python benchmarks/bench_real_model.py --profile        # also cProfile minifm's generate (top costs)
    python benchmarks/bench_real_model.py --gguf --decode-only   # decode figures only (and the bound beside them)

Simplifications: batch 1 only; the random model's greedy tokens are compared and reported, not required
to match (near-ties of random logits may break either way).
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

import numpy as np

try:  # imported before minifm, so torch's OpenMP runtime starts with the user's settings, not minifm's
    import torch
    import transformers
except ImportError as missing:
    raise SystemExit(f"this benchmark needs torch and transformers ({missing}): pip install torch transformers gguf")

import minifm
from minifm.kernels import threads as minifm_threads
from minifm.models import GPT, GPTConfig
from minifm.sampling.generate import generate as minifm_generate

from bench_common import SMOLLM2_CONFIG, machine_description, profile_report, smollm2_llama_config  # a sibling script

DECODE_PROMPT = 16
CHECK_PROMPT = 32
CPU_SECONDS = {"minifm": [], "transformers": []}  # process CPU seconds per decoded token, one entry per repeat


# ------------------------------------------------------------------------------------------ the machine
def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def blas_matvec_bandwidth(matrix: np.ndarray, vector: np.ndarray, threads: int, repeats: int) -> float:
    """Bytes/s read by NumPy's BLAS computing matrix @ vector on `threads` threads (median of `repeats`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        return matrix.nbytes / median_seconds(lambda: np.dot(matrix, vector), repeats)


def read_bandwidths(threads: int) -> dict[str, float]:
    """Bytes/s read by: NumPy's BLAS matrix-vector product of a 4096 x 16384 float32 matrix on `threads`
    threads, minifm's two matvec kernels on the same matrix (matvec: any few rows; decode_step: the one-token
    decoding step's), and np.sum over a 1 GB float32 array (one thread)."""
    from threadpoolctl import threadpool_limits

    from minifm.kernels import decode_step, matvec

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((4096, 16384), dtype=np.float32)  # 268 MB
    vector = rng.standard_normal(16384, dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        blas = matrix.nbytes / median_seconds(lambda: np.dot(matrix, vector), 7)
    rows = vector[None, :]  # (1, 16384)
    kernel = matrix.nbytes / median_seconds(lambda: matvec.matvec(rows, matrix), 7)
    streaming = matrix.nbytes / median_seconds(lambda: decode_step.matvec(vector, matrix), 7)
    del matrix
    block = np.ones(256 * 1024 * 1024, dtype=np.float32)  # 1 GiB
    summed = block.nbytes / median_seconds(lambda: block.sum(), 5)
    return {"BLAS matvec 4096x16384": blas, "minifm matvec kernel 4096x16384": kernel,
            "minifm decode_step.matvec 4096x16384": streaming, "np.sum over 1 GiB": summed}


# ------------------------------------------------------------------------------------------ the models
def random_transformers_model():
    """transformers' LlamaForCausalLM of SmolLM2-135M's shape with random weights (float32, eval mode)."""
    config = transformers.LlamaConfig(**smollm2_llama_config(), bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float().eval()


def minifm_name(hf_name: str) -> str | None:
    """minifm's parameter name for a transformers Llama parameter (None for the tied lm_head)."""
    if hf_name == "lm_head.weight":
        return None
    fixed = {"model.embed_tokens.weight": "wte.weight", "model.norm.weight": "norm_f.weight"}
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.N.<rest>
    renames = {"self_attn.": "attn.", "input_layernorm.": "norm1.", "post_attention_layernorm.": "norm2.",
               "mlp.": "mlp."}
    for theirs, ours in renames.items():
        if rest.startswith(theirs):
            return f"blocks.{layer}.{ours}{rest[len(theirs):]}"
    raise KeyError(f"no minifm name for transformers parameter {hf_name!r}")


def minifm_copy_of(hf_model) -> GPT:
    """A minifm GPT of SmolLM2-135M's config holding the transformers model's weights."""
    model = GPT(GPTConfig(**SMOLLM2_CONFIG))
    state = {}
    for name, tensor in hf_model.state_dict().items():
        ours = minifm_name(name)
        if ours is not None:
            state[ours] = tensor.detach().numpy()
    model.load_state_dict(state)
    return model.eval()


def load_gguf_models(dtype: str):
    """(minifm GPT, transformers model, minifm load seconds, transformers load seconds) from the real GGUF;
    minifm's in `dtype` ("float32", or "stored": the file's own block formats), transformers' in float32."""
    from minifm.pretrained.registry import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    started = time.perf_counter()
    ours = GPT.from_pretrained(path, dtype=None if dtype == "stored" else dtype).eval()
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    theirs_seconds = time.perf_counter() - started
    return ours, theirs, ours_seconds, theirs_seconds


def logits_gap(ours: GPT, theirs, prompt: np.ndarray) -> float:
    """max |logit difference| / max |logit| on one prompt (1, T)."""
    with minifm.no_grad():
        our_logits = ours(prompt).data  # (1, T, V)
    with torch.no_grad():
        their_logits = theirs(torch.tensor(prompt)).logits.numpy()  # (1, T, V)
    return float(np.abs(our_logits - their_logits).max() / np.abs(their_logits).max())


# ------------------------------------------------------------------------------------------ the timed work
def minifm_prefill(model: GPT, prompt: np.ndarray, last_only: bool) -> None:
    with minifm.no_grad():
        model(prompt, logits_to_keep=1 if last_only else 0)


def transformers_prefill(model, prompt: np.ndarray, last_only: bool) -> None:
    with torch.no_grad():
        model(torch.tensor(prompt), logits_to_keep=1 if last_only else 0)


def minifm_decode(model: GPT, prompt: np.ndarray, steps: int) -> tuple[float, list[int]]:
    """Seconds of `steps` greedy KV-cached one-token forwards after the prompt's forward, and the tokens."""
    with minifm.no_grad():
        cache = model.make_cache(1, prompt.shape[1] + steps + 1)
        logits = model(prompt, cache=cache).data[:, -1]  # (1, V)
        started, cpu_started = time.perf_counter(), time.process_time()
        tokens = []
        for _ in range(steps):
            token = logits.argmax(axis=-1)[:, None]  # (1, 1)
            tokens.append(int(token[0, 0]))
            logits = model(token, cache=cache).data[:, -1]
        CPU_SECONDS["minifm"].append((time.process_time() - cpu_started) / steps)
        return time.perf_counter() - started, tokens


def transformers_decode(model, prompt: np.ndarray, steps: int) -> tuple[float, list[int]]:
    """The same loop in transformers: a forward with the model's KV cache object per token (its argument is
    `cache` from transformers 5.2x on, `past_key_values` before)."""
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        output = model(torch.tensor(prompt), use_cache=True)
        past, logits = getattr(output, cache_name), output.logits[:, -1]  # (1, V)
        started, cpu_started = time.perf_counter(), time.process_time()
        tokens = []
        for _ in range(steps):
            token = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
            tokens.append(int(token[0, 0]))
            output = model(token, use_cache=True, **{cache_name: past})
            past, logits = getattr(output, cache_name), output.logits[:, -1]
        CPU_SECONDS["transformers"].append((time.process_time() - cpu_started) / steps)
        return time.perf_counter() - started, tokens


def minifm_generate_call(model: GPT, prompt: np.ndarray, steps: int) -> None:
    minifm_generate(model, prompt, steps)


def transformers_generate_call(model, prompt: np.ndarray, steps: int) -> None:
    ids = torch.tensor(prompt)
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                       do_sample=False, pad_token_id=0)


def profile_generate(model: GPT, prompt: np.ndarray, steps: int) -> str:
    """cProfile of minifm's generate: the top functions by own time."""
    return profile_report(lambda: minifm_generate(model, prompt, steps), lines=18)


# ------------------------------------------------------------------------------------------ the report
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", action="store_true", help="load the real SmolLM2-135M-Instruct GGUF in both")
    parser.add_argument("--dtype", choices=("float32", "stored"), default="float32",
                        help="with --gguf: minifm's weights in float32 or in the file's own quantized blocks")
    parser.add_argument("--threads", type=int, default=None, help="threads for both libraries (default: usable cores)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=512, help="prompt tokens of the prefill figure")
    parser.add_argument("--decode", type=int, default=128, help="greedy tokens of the decode and generate figures")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 128-token prefill, 32 decode steps")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of minifm's generate")
    parser.add_argument("--skip-bandwidth", action="store_true", help="do not measure the read bandwidth")
    parser.add_argument("--decode-only", action="store_true", help="time decode only (no prefill, no generate)")
    args = parser.parse_args()
    if args.dtype != "float32" and not args.gguf:
        parser.error("--dtype stored needs --gguf (the random model has no stored blocks)")
    if args.quick:
        args.repeats, args.prefill, args.decode = 2, 128, 32
    threads = args.threads or minifm_threads.usable_cores()
    torch.set_num_threads(threads)
    minifm_threads.set_num_threads(threads)

    print(f"machine: {machine_description()}")
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}")
    print(f"threads: torch {torch.get_num_threads()}, minifm kernels {minifm_threads.num_threads()} "
          f"(BLAS {minifm_threads.blas_threads()}); torch {torch.__version__}, transformers {transformers.__version__}, "
          f"numpy {np.__version__}; {minifm.kernels.backend_info()}")

    if args.gguf:
        ours, theirs, ours_load, theirs_load = load_gguf_models(args.dtype)
        print(f"load (GGUF file -> model ready; minifm {args.dtype}, transformers float32): minifm {ours_load:.1f} s, "
              f"transformers {theirs_load:.1f} s")
    else:
        theirs = random_transformers_model()
        ours = minifm_copy_of(theirs)
    weight_bytes = sum(array.nbytes for array in ours.state_dict().values())
    rng = np.random.default_rng(0)
    check_prompt = rng.integers(0, ours.config.vocab_size, size=(1, CHECK_PROMPT))
    gap = logits_gap(ours, theirs, check_prompt)
    print(f"logits agree: max |difference| / max |logit| = {gap:.1e} on a {CHECK_PROMPT}-token prompt")
    if not gap <= 1e-4:
        raise SystemExit("the two models disagree: not timing them")

    if not args.skip_bandwidth:
        bandwidths = read_bandwidths(threads)
        bound_bandwidth = bandwidths["BLAS matvec 4096x16384"]
        for name, value in bandwidths.items():
            print(f"read bandwidth, {name}: {value / 1e9:.1f} GB/s")
        print(f"weights read per decoded token: {weight_bytes / 1e6:.0f} MB -> bandwidth bound "
              f"{bound_bandwidth / weight_bytes:.1f} tokens/s (BLAS matvec), "
              f"{max(bandwidths.values()) / weight_bytes:.1f} tokens/s (best of the four)")

    prefill_prompt = rng.integers(0, ours.config.vocab_size, size=(1, args.prefill))
    decode_prompt = rng.integers(0, ours.config.vocab_size, size=(1, DECODE_PROMPT))
    keys = ("decode",) if args.decode_only else ("prefill all logits", "prefill last logits", "decode", "generate")
    figures = {key: ([], []) for key in keys}
    agreement, bounds_beside = [], []  # the bound (tokens/s) measured right after each repeat's decode
    probe = None if args.skip_bandwidth else rng.standard_normal((4096, 16384), dtype=np.float32)  # 268 MB
    for repeat in range(args.repeats):
        for last_only, key in ((False, "prefill all logits"), (True, "prefill last logits")):
            if args.decode_only:
                break
            figures[key][0].append(args.prefill / median_seconds(lambda: minifm_prefill(ours, prefill_prompt, last_only), 1))
            figures[key][1].append(args.prefill / median_seconds(
                lambda: transformers_prefill(theirs, prefill_prompt, last_only), 1))
        our_seconds, our_tokens = minifm_decode(ours, decode_prompt, args.decode)
        their_seconds, their_tokens = transformers_decode(theirs, decode_prompt, args.decode)
        figures["decode"][0].append(args.decode / our_seconds)
        figures["decode"][1].append(args.decode / their_seconds)
        agreement.append(next((i for i, (a, b) in enumerate(zip(our_tokens, their_tokens)) if a != b), args.decode))
        if probe is not None:
            bounds_beside.append(blas_matvec_bandwidth(probe, probe[0], threads, 3) / weight_bytes)
        if args.decode_only:
            print(f"repeat {repeat + 1}: decode {args.decode / our_seconds:.1f} / {args.decode / their_seconds:.1f} "
                  f"tok/s (minifm / transformers)" + (f", bound beside {bounds_beside[-1]:.1f} tok/s" if probe is not None
                                                     else "") + f", load {os.getloadavg()[0]:.1f}", flush=True)
            continue
        figures["generate"][0].append(args.decode / median_seconds(
            lambda: minifm_generate_call(ours, decode_prompt, args.decode), 1))
        figures["generate"][1].append(args.decode / median_seconds(
            lambda: transformers_generate_call(theirs, decode_prompt, args.decode), 1))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{key} {mine[-1]:.1f} / {hf[-1]:.1f}"
                                                   for key, (mine, hf) in figures.items())
              + f" tok/s (minifm / transformers), load {os.getloadavg()[0]:.1f}", flush=True)

    print(f"\nmedians of {args.repeats}; tokens/s (higher is better); prefill {args.prefill} tokens, decode and "
          f"generate {args.decode} tokens after {DECODE_PROMPT}")
    header = f"{'figure':<22} {'minifm':>9} {'transformers':>13} {'x HF':>6}   minifm runs"
    print(header)
    print("-" * len(header))
    for key, (mine, hf) in figures.items():
        ratio = statistics.median(mine) / statistics.median(hf)
        runs = " ".join(f"{value:.1f}" for value in mine)
        print(f"{key:<22} {statistics.median(mine):>9.1f} {statistics.median(hf):>13.1f} {ratio:>5.2f}x   {runs}")
    if not args.skip_bandwidth:
        bound = bound_bandwidth / weight_bytes  # tokens/s
        print(f"decode vs the BLAS-matvec bandwidth bound ({bound:.1f} tokens/s): "
              f"minifm {statistics.median(figures['decode'][0]) / bound:.0%}, "
              f"transformers {statistics.median(figures['decode'][1]) / bound:.0%}")
        fractions = [mine / beside for mine, beside in zip(figures["decode"][0], bounds_beside)]
        print(f"minifm decode over the bound measured right after it, per repeat: "
              f"{' '.join(f'{value:.0%}' for value in fractions)} (median {statistics.median(fractions):.0%}; "
              f"bounds {' '.join(f'{value:.1f}' for value in bounds_beside)} tokens/s)")
    print(f"decode CPU time per token (process, all threads; medians): minifm "
          f"{statistics.median(CPU_SECONDS['minifm']) * 1e3:.1f} ms, transformers "
          f"{statistics.median(CPU_SECONDS['transformers']) * 1e3:.1f} ms")
    print(f"greedy tokens equal to transformers' for the first {min(agreement)}-{max(agreement)} of {args.decode} steps")
    print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")
    if args.profile:
        print("\ncProfile of minifm generate (prompt 16, greedy):")
        print(profile_generate(ours, decode_prompt, args.decode))


if __name__ == "__main__":
    main()
