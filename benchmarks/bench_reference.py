"""Time the float64 reference ``forward`` against the torch backend at float64 on the CPU.

Base config (the paper's base model): d_model 512, 8 heads, d_ff 2048, 6 + 6 layers, batch 8,
sequence 64. Prints the median of a few runs of each and the ratio reference / torch (target
<= 1.5). A benchmark, not a test: run it by hand, `python benchmarks/bench_reference.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import reference
from backends.registry import load_backend
from conformance.kit.harness import to_native

BASE = {"d_model": 512, "num_heads": 8, "d_ff": 2048, "num_encoder_layers": 6, "num_decoder_layers": 6,
        "src_vocab_size": 1000, "tgt_vocab_size": 1000}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = reference.init_params(BASE, seed=0)
    src = rng.integers(0, 1000, (args.batch, args.seq))
    tgt = rng.integers(0, 1000, (args.batch, args.seq))
    torch64 = load_backend("torch", dtype="float64", device="cpu")
    native = to_native(torch64, {"src": src, "tgt": tgt, "params": params})
    t_ref = median_seconds(lambda: reference.forward(src, tgt, params, BASE), args.repeats)
    t_torch = median_seconds(lambda: torch64.forward(native["src"], native["tgt"], native["params"], BASE), args.repeats)
    print(f"base config, batch {args.batch}, seq {args.seq}, float64 CPU, median of {args.repeats}")
    print(f"reference.forward: {t_ref * 1e3:8.1f} ms")
    print(f"torch.forward:     {t_torch * 1e3:8.1f} ms")
    print(f"ratio reference / torch: {t_ref / t_torch:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
