"""Hot kernels: each family has a readable NumPy reference and a Cython twin in csrc/.

    softmax.py        <-> csrc/softmax.pyx        softmax / log-softmax over the last axis, forward
                                                   and backward
    cross_entropy.py  <-> csrc/cross_entropy.pyx  fused per-row loss + d loss / d logits (ignore_index,
                                                   label smoothing), no probability array
    attention.py      <-> csrc/attention.pyx      flash-style scaled dot-product attention (causal with
                                                   a query offset, key-padding mask, GQA), forward and
                                                   backward; saves only the log-sum-exp per row
    sampling.py       <-> csrc/sampling.pyx       top-k / top-p / min-p / typical-p filters by partial
                                                   selection, inverse-CDF draw, greedy
    bpe.py            <-> csrc/bpe.pyx            BPE merge training (incremental pair counts) and
                                                   piece encoding by merge rank
    activations.py    <-> csrc/activations.pyx    exact (erf) GELU forward and backward in one pass each
                                                   (float32 computed in float32: csrc/_gelu.h)
    normalization.py  <-> csrc/normalization.pyx  LayerNorm over the last axis, forward and backward,
                                                   one pass per row with sums in double
    adam.py           <-> csrc/adam.pyx           one Adam / AdamW parameter update in one pass
    matvec.py         <-> csrc/matvec.pyx         few-row products x @ W^T with row-major weights
                                                   (decoding's Linear layers), several weights per
                                                   parallel region, same bits on any thread count
    gemm.py           <-> csrc/gemm.pyx           a @ b in blocks of output rows, each one single-threaded
                                                   call of NumPy's BLAS, blocks shared among the OpenMP
                                                   threads (training's mid-sized products), same bits
                                                   however many threads take the blocks
    rotary.py         <-> csrc/rotary.pyx         RoPE's rotation of (B, heads, T, D) rows, one pass,
                                                   transposed views read and written in place
    quantized.py      <-> csrc/quantized.pyx      x @ W^T with W in GGUF blocks (Q8_0, Q4_0, Q4_1):
                                                   fused dequantize-and-dot for a few rows, a
                                                   dequantized tile per sgemm for many
    decode_step.py    <-> csrc/decode_step.pyx    one KV-cached decoding step of a Llama block (batch 1,
                                                   float32) in one call; its matrix-vector products
                                                   stream the weights 4 rows a pass (AVX2), rows split
                                                   across threads, same bits on any thread count
    fewrows.py        <-> csrc/matvec.pyx         x @ W^T for a few float32 rows (<= 16) with cache-
                                                   resident weights: a weight row loaded once for up
                                                   to 4 inputs (a small model's decoding output head);
                                                   matvec's fewrows_many, tiles in csrc/_fewrows.h
    embedding.py      <-> csrc/embedding.pyx      an embedding lookup's gradient: each row added into
                                                   its table row, in order (np.add.at's bits)
    gpt2_step.py      <-> csrc/gpt2_step.pyx      one KV-cached decoding step of a GPT-2-style block
                                                   (LayerNorm, GELU, biases) for 1-16 sequences in one
                                                   call (float32), products on csrc/_fewrows.h
    threads.py                                     thread counts: the kernels' OpenMP loops follow the
                                                   load, BLAS products a fixed count (threadpoolctl);
                                                   MINIFM_NUM_THREADS=N fixes both
    csrc/_common.pxd.tp                            shared vectorised primitives (exp, max, sums), one
                                                   template for float and double, expanded by setup.py
    csrc/_blas.pxd                                 the row-major BLAS product attention's and the
                                                   quantized prefill's tiles call (scipy's BLAS)

`backend_info()` says which path runs. MINIFM_KERNELS=reference forces NumPy everywhere;
`use_reference(True)` does the same at run time.
"""
from minifm.kernels._backend import backend_info, check_required, use_reference

check_required()

__all__ = ["backend_info", "use_reference"]
