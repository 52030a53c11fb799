"""Quantized decoding: minifm vs llama.cpp on the same GGUF file, threads and host, side by side.

The file: SmolLM2-135M-Instruct.Q4_1.gguf (minifm's short name smollm2-135m-instruct; Q4_1 Linear
weights, a Q8_0 token embedding that is also the tied output head). Both libraries run it as stored:
  minifm     GPT.from_pretrained(file): the blocks kept packed (minifm/nn/quantized.py), two modes
               fused     the float32 input times each block widened to float32 in registers (exact)
               int8 act  the input rounded to int8 per block of 32 first (GPT.use_int8_activations),
                         llama.cpp's own method for these formats
             and GPT.from_pretrained(file, dtype="float32"), the weights dequantized (unless --no-float32)
  llama.cpp  llama_cpp.Llama(file) through llama-cpp-python, a benchmark-only dependency that compiles
             llama.cpp. On AVX2 hosts without AVX-512 or AMX build it with
               CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \\
                 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" pip install --no-deps llama-cpp-python
             (a native build may pick instructions the VM refuses: illegal instruction)

Figures, medians of --repeats runs, the libraries alternating inside every repeat so both see the same
background load:
  load      seconds from the file to a model ready to run (first repeat only: the page cache is warm after it)
  prefill   tokens/s of one forward over a --prefill-token prompt (512), only the last position's logits
            (llama.cpp's default; minifm's logits_to_keep=1), in one batch (llama.cpp n_batch = the prompt)
  decode    tokens/s of --decode (128) greedy steps after a chat prompt (DECODE_MESSAGES in SmolLM2's
            template, 43 tokens with its default system turn): one-token forwards with the KV cache and an argmax over the logits
            (the prompt's forward is not timed); also the process CPU time per token (all threads), which a
            busy host inflates less than the wall time
  resident  RSS of a child process that loads the model and decodes 8 tokens, against the file's size
            (each library measured in its own child, so neither sees the other's allocations)
Also printed: the machine, load averages before and after, the threads (both --threads; minifm's kernel
threads forced, not following the load), and how many of the greedy tokens agree with llama.cpp's.

Run: python benchmarks/bench_llama_cpp.py [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import minifm
from minifm.kernels import threads as minifm_threads
from minifm.models import GPT
from minifm.pretrained.registry import resolve_model_path
from minifm.tokenizer import from_pretrained as tokenizer_from_pretrained

from bench_common import machine_description  # a sibling script

INSTALL_LINE = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF '
                '-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" pip install --no-deps llama-cpp-python')
RSS_DECODE = 8
# decoding starts from a real chat prompt (greedy continuations of random tokens hinge on near-ties, so
# their agreement would say little); the prefill prompt is random tokens, only its length matters
DECODE_MESSAGES = [{"role": "user", "content": "Name three rivers in Europe and the sea each one flows into."}]


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise SystemExit(f"llama.cpp is not installed; build it with: {INSTALL_LINE}") from None
    return llama_cpp


def resident_bytes() -> int:
    """This process's resident set size (VmRSS), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


# ------------------------------------------------------------------------------------------ the two libraries
def load_minifm(path) -> tuple[GPT, float]:
    started = time.perf_counter()
    model = GPT.from_pretrained(path)  # the file's own Q4_1 / Q8_0 blocks
    return model, time.perf_counter() - started


def load_llama(path, threads: int, context: int):
    llama_cpp = import_llama_cpp()
    started = time.perf_counter()
    model = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=context,
                            n_batch=context, n_ubatch=context, logits_all=False, verbose=False)
    return model, time.perf_counter() - started


def minifm_prefill(model: GPT, prompt: np.ndarray) -> None:
    with minifm.no_grad():
        model(prompt[None, :], logits_to_keep=1)  # (1, 1, V)


def llama_prefill(model, prompt: np.ndarray) -> None:
    model.reset()
    model.eval(prompt.tolist())


def minifm_decode(model: GPT, prompt: np.ndarray, steps: int) -> tuple[float, float, list[int]]:
    """Seconds (wall, process CPU) of `steps` greedy KV-cached one-token forwards after the prompt's forward,
    and the tokens."""
    with minifm.no_grad():
        cache = model.make_cache(1, prompt.size + steps + 1)
        logits = model(prompt[None, :], cache=cache, logits_to_keep=1).data[0, -1]  # (V,)
        started, cpu_started = time.perf_counter(), time.process_time()
        tokens = []
        for _ in range(steps):
            token = int(logits.argmax())
            tokens.append(token)
            logits = model(np.array([[token]]), cache=cache).data[0, -1]  # (V,)
        return time.perf_counter() - started, time.process_time() - cpu_started, tokens


def llama_last_logits(model) -> np.ndarray:
    """The logits llama.cpp computed for the last token evaluated (V,), a view of its buffer. (With
    logits_all=False llama-cpp-python keeps no copy in `scores`; the context holds this one row.)"""
    return np.ctypeslib.as_array(model._ctx.get_logits(), shape=(model.n_vocab(),))


def llama_decode(model, prompt: np.ndarray, steps: int) -> tuple[float, float, list[int]]:
    """The same loop in llama.cpp: eval() of one token at a time, then an argmax over its logits."""
    model.reset()
    model.eval(prompt.tolist())
    started, cpu_started = time.perf_counter(), time.process_time()
    tokens = []
    for _ in range(steps):
        token = int(np.argmax(llama_last_logits(model)))
        tokens.append(token)
        model.eval([token])
    return time.perf_counter() - started, time.process_time() - cpu_started, tokens


def child_resident(library: str, path, threads: int) -> dict:
    """Run in a child process: load, decode RSS_DECODE tokens, report RSS (before, after loading, after decoding)."""
    before = resident_bytes()
    prompt = np.arange(1, 17)  # 16 tokens
    if library == "llama.cpp":
        model, _ = load_llama(path, threads, 512)
        loaded = resident_bytes()
        llama_decode(model, prompt, RSS_DECODE)
    else:
        model, _ = load_minifm(path)
        if library == "minifm int8 act":
            model.use_int8_activations(True)
        loaded = resident_bytes()
        minifm_decode(model, prompt, RSS_DECODE)
    return {"before": before, "loaded": loaded, "decoded": resident_bytes()}


def measure_resident(library: str, path, threads: int) -> dict:
    command = [sys.executable, __file__, "--child-rss", library, "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the run
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="threads for both libraries (default: usable cores)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=512, help="prompt tokens of the prefill figure")
    parser.add_argument("--decode", type=int, default=128, help="greedy tokens of the decode figure")
    parser.add_argument("--no-float32", action="store_true",
                        help="skip minifm's float32 model (the file's weights dequantized), the yardstick of the issue's "
                             "'2x float32 decoding'")
    parser.add_argument("--child-rss", choices=("minifm", "minifm int8 act", "llama.cpp"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = args.threads or minifm_threads.usable_cores()
    minifm_threads.set_num_threads(threads)
    path = resolve_model_path("smollm2-135m-instruct")
    if args.child_rss:
        print(json.dumps(child_resident(args.child_rss, path, threads)))
        return
    import_llama_cpp()

    print(f"machine: {machine_description()}")
    print(f"load average (1, 5, 15 min) before: {os.getloadavg()}")
    print(f"threads: {threads} for both (minifm kernels {minifm_threads.num_threads()}, BLAS "
          f"{minifm_threads.blas_threads()}); numpy {np.__version__}; {minifm.kernels.backend_info()}")
    print(f"file: {path.name}, {path.stat().st_size / 1e6:.1f} MB")

    ours, ours_load = load_minifm(path)
    decode_prompt = np.array(tokenizer_from_pretrained(path).apply_chat_template(DECODE_MESSAGES,
                                                                                 add_generation_prompt=True))
    theirs, theirs_load = load_llama(path, threads, max(args.prefill, decode_prompt.size + args.decode) + 8)
    print(f"load (file -> model ready, cold page cache for the first): minifm {ours_load:.2f} s, "
          f"llama.cpp {theirs_load:.2f} s")

    rng = np.random.default_rng(0)
    prefill_prompt = rng.integers(0, ours.config.vocab_size, size=args.prefill)
    modes = {"minifm fused": (ours, False), "minifm int8 act": (ours, True)}
    if not args.no_float32:
        modes["minifm float32"] = (GPT.from_pretrained(path, dtype="float32"), False)
    prefill = {name: [] for name in (*modes, "llama.cpp")}
    decode = {name: [] for name in (*modes, "llama.cpp")}
    decode_cpu = {name: [] for name in (*modes, "llama.cpp")}
    tokens = {}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up (first kernel calls, allocations)
        for name, (model, int8) in modes.items():
            if model.config.quantized:
                model.use_int8_activations(int8)
            started = time.perf_counter()
            minifm_prefill(model, prefill_prompt)
            prefill[name].append(time.perf_counter() - started)
            seconds, cpu_seconds, tokens[name] = minifm_decode(model, decode_prompt, args.decode)
            decode[name].append(seconds)
            decode_cpu[name].append(cpu_seconds)
        started = time.perf_counter()
        llama_prefill(theirs, prefill_prompt)
        prefill["llama.cpp"].append(time.perf_counter() - started)
        seconds, cpu_seconds, tokens["llama.cpp"] = llama_decode(theirs, decode_prompt, args.decode)
        decode["llama.cpp"].append(seconds)
        decode_cpu["llama.cpp"].append(cpu_seconds)

    print(f"\nmedians of {args.repeats} repeats (warm-up dropped); tokens/s, and x llama.cpp")
    reference = {"prefill": statistics.median(prefill["llama.cpp"][1:]),
                 "decode": statistics.median(decode["llama.cpp"][1:])}
    print(f"{'':18s} {'prefill ' + str(args.prefill):>14s} {'x llama':>8s} {'decode ' + str(args.decode):>12s} "
          f"{'x llama':>8s} {'CPU ms/token':>13s} {'tokens = llama.cpp':>19s}")
    for name in prefill:
        prefill_s, decode_s = statistics.median(prefill[name][1:]), statistics.median(decode[name][1:])
        agree = next((i for i, (a, b) in enumerate(zip(tokens[name], tokens["llama.cpp"])) if a != b), args.decode)
        print(f"{name:18s} {args.prefill / prefill_s:14.1f} {reference['prefill'] / prefill_s:8.2f} "
              f"{args.decode / decode_s:12.1f} {reference['decode'] / decode_s:8.2f} "
              f"{statistics.median(decode_cpu[name][1:]) / args.decode * 1e3:13.1f} "
              f"{'first ' + str(agree) + ' of ' + str(args.decode):>19s}")
    print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")

    del ours, theirs, modes
    file_bytes = path.stat().st_size
    print(f"\nresident memory (MB; each library in its own child process; file {file_bytes / 1e6:.1f} MB)")
    print(f"{'':18s} {'interpreter':>12s} {'loaded':>8s} {'decoded':>8s} {'decoded / file':>15s} "
          f"{'(decoded - interpreter) / file':>31s}")
    for library in ("minifm", "minifm int8 act", "llama.cpp"):
        rss = measure_resident(library, path, threads)
        print(f"{library:18s} {rss['before'] / 1e6:12.0f} {rss['loaded'] / 1e6:8.0f} {rss['decoded'] / 1e6:8.0f} "
              f"{rss['decoded'] / file_bytes:15.2f} {(rss['decoded'] - rss['before']) / file_bytes:31.2f}")


if __name__ == "__main__":
    main()
