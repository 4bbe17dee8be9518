"""The correct zoo: backends that compute the contract *correctly* by another algorithm than
the reference's naive equations (the dual of tests/mutants/). The suite must pass every one at
every dtype it supports: a failure is a false alarm of the tolerance model.

Each member is the torch backend (or the NumPy backend) with the smallest pieces overridden,
registered with the ops whose algorithm it changes and the dtypes it supports (ValueError,
i.e. *unsupported*, for the others); ``tests.correct.catalog:NAME`` loads it::

    python -m conformance run --backend tests.correct.catalog:flash_attention --dtype float32

Members (catalog.py; the arithmetic in summation.py and flash.py):

arithmetic.py
    ``sum_sequential``, ``sum_reversed``, ``sum_pairwise`` (float64, float32): every matmul,
    softmax sum and layer-norm sum left to right, right to left, or pairwise;
    ``sum_blocked_split_k`` (float64, float32): split-K matmuls, blocked reductions;
    ``fma_float64_products`` (float32, float16, bfloat16): FMA-like matmuls, products exact
    in float64, one rounding per step into a float32 accumulator;
    ``half_storage_float32_compute`` (float16, bfloat16): every kernel in float32, rounded
    once to the storage dtype (what GPU kernels do);
    ``torch_threads_1``, ``torch_threads_2`` (float64, float32, bfloat16): the torch backend
    with 1 or 2 intra-op threads;
    ``numpy_rounded_once`` (float32, float16, bfloat16): the float64 reference rounded once
    per op (correctly rounded results).
algorithms.py
    ``scale_queries_first``: (Q / sqrt(d_k)) K^T;
    ``flash_attention`` (every dtype): online softmax over key blocks with running max/sum
    rescaling, exp2 with log2(e) folded into the scale, weights recomputed from the
    log-sum-exp, as FlashAttention does;
    ``layer_norm_welford``, ``layer_norm_two_pass``, ``layer_norm_rsqrt``: Welford's or the
    two-pass variance, rsqrt-then-multiply instead of a divide;
    ``gelu_torch_erf``, ``gelu_math_erf``, ``gelu_scipy_erf``: erf from torch, the C library
    (math.erf) or SciPy;
    ``pe_exp_log``: the positional encoding's frequencies as exp(-2i ln(10000) / d_model);
    each at float64, float32 and bfloat16 unless said otherwise.
openblas.py
    NumPy under each OpenBLAS kernel (``OPENBLAS_CORETYPE``: Haswell, SkylakeX, Sandybridge,
    Nehalem, Prescott), a gate run in a process with that variable; a kernel the CPU lacks
    is skipped with the kernel OpenBLAS would run instead.

tests/test_correct_zoo.py runs them all through the gate (ci profile, the changed ops plus
the lowest model-level op using them); benchmarks/correct_zoo.py is the thorough benchmark
(every op, worst error/tolerance ratio per op).
"""
