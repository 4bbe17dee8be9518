"""One comparison for every differential test: round the inputs to the backend's dtype, run the
op on the backend and on the reference, and assert closeness under conformance/tolerance/model.py;
and greedy decoding compared token by token, stopping (with a note) at a legitimate near-tie.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

import reference
from conformance.kit import record
from conformance.kit.assertions import ToleranceExceeded, assert_close, assert_equal, assert_no_systematic_error
from conformance.kit.harness import call_op, label
from conformance.tolerance import diagnosis
from conformance.tolerance.model import expected, margin_tolerance, reference_value, rounded_inputs, terms

REALISTIC: dict[str, Any] = {
    "d_model": 512, "num_heads": 8, "d_ff": 2048, "num_encoder_layers": 1, "num_decoder_layers": 1,
    "src_vocab_size": 1000, "tgt_vocab_size": 1000,
}
"""The fixed realistic-size config: the paper's base model widths, one layer per stack (deep
stacks are measured by benchmarks/bench_tolerances.py, kept out of the always-run cases for
time)."""


@functools.lru_cache(maxsize=8)
def realistic_params(seed: int, **variant: Any) -> dict[str, Any]:
    """``reference.init_params`` of REALISTIC updated with ``variant``, cached (it takes a
    quarter of a second and every target reuses it; nothing changes it in place, which the
    harness checks)."""
    return reference.init_params({**REALISTIC, **variant}, seed)


OP_SHARE, LAYER_SHARE, MODEL_SHARE = 0.5, 0.2, 0.1
"""Shares of the profile's max_examples (``conformance.kit.strategies.budget``): elementary ops,
one layer or multi-head attention (a dozen ops per call), and the whole model (encode, decode,
forward, greedy decoding): ci 50 / 20 / 10, thorough 500 / 200 / 100. An elementary op's example
costs ~4 ms (most of it Hypothesis generating it), a model-level one ~40 ms (the reference, the
backend and the harness' checks)."""


def compare(backend: Any, op: str, *args: Any, where: np.ndarray | None = None, what: str = "",
            **kwargs: Any) -> float:
    """``backend.<op>(*args, **kwargs)`` is within tolerance of ``reference.<op>`` on the same
    (dtype-rounded) inputs, at the positions where ``where`` is True (all when None): every
    element within its bound, and the whole tensor free of a systematic error
    (conformance/tolerance/model.py). Returns the worst error/tolerance ratio.
    """
    __tracebackhide__ = True
    args, kwargs = rounded_inputs(list(args), backend.dtype), rounded_inputs(kwargs, backend.dtype)
    value = reference_value(op, args, kwargs)
    got = call_op(backend, op, *args, shape=value.shape, **kwargs)
    want = expected(op, args, kwargs, dtype=backend.dtype, value=value)
    try:
        worst = assert_close(got, want.value, tol=want.tol, backend=backend, op=op, what=what, where=where)
        assert_no_systematic_error(got, want.value, tol=want.tol, backend=backend, op=op, what=what, where=where)
    except AssertionError as exc:  # name the convention the backend follows, if one explains it
        record.note_diagnosis(functools.partial(diagnosis.diagnose, op, args, kwargs, got, want,
                                                dtype=backend.dtype, where=where))
        if isinstance(exc, ToleranceExceeded):  # and what set the worst element's tolerance
            record.note_tolerance(functools.partial(terms, op, args, kwargs, dtype=backend.dtype, index=exc.index))
        raise
    return worst


def compare_greedy(backend: Any, src_ids: np.ndarray, params: Mapping[str, Any], config: Mapping[str, Any],
                   max_len: int, bos_id: int, eos_id: int, src_mask: np.ndarray | None = None) -> list[str]:
    """Greedy decoding agrees with the reference token by token.

    Row by row, the first token where the two differ is accepted only if the reference's
    logit of the backend's token is within the margin tolerance of the reference's top logit
    at that step (a near-tie: a correct backend may pick either, and the sequences may
    legitimately diverge from there); that row is then compared no further, and a note says
    so. Rows that never diverge must match exactly, and when no row diverged the lengths must
    match too. Returns the notes.
    """
    __tracebackhide__ = True
    params = rounded_inputs(params, backend.dtype)
    got = call_op(backend, "greedy_decode", src_ids, params, config, max_len, bos_id, eos_id, src_mask=src_mask)
    want = reference.greedy_decode(src_ids, params, config, max_len, bos_id, eos_id, src_mask=src_mask)
    if got.ndim != 2 or got.shape[0] != want.shape[0] or not 1 <= got.shape[1] <= max_len:
        raise AssertionError(f"{label(backend, 'greedy_decode')}: expected shape ({want.shape[0]}, L) with "
                             f"1 <= L <= {max_len}, got {got.shape}")
    notes, compared = [], np.ones(want.shape[0], dtype=bool)
    length = min(got.shape[1], want.shape[1])
    for b in range(want.shape[0]):
        differs = np.flatnonzero(got[b, :length] != want[b, :length])
        if differs.size and differs[0] > 0:
            step = int(differs[0])
            note = _near_tie(backend, b, step, int(got[b, step]), want, src_ids, params, config, src_mask,
                             eos_id)
            notes.append(note)
            record.note(note)
            compared[b] = False
    if compared.all():
        assert_equal(got, want, backend=backend, op="greedy_decode", what="token ids")
    else:
        rows = compared[:, None] & np.ones((1, length), dtype=bool)
        assert_equal(got[:, :length], want[:, :length], backend=backend, op="greedy_decode",
                     what="token ids of the rows that did not diverge", where=rows)
    return notes


def _near_tie(backend: Any, row: int, step: int, token: int, want: np.ndarray, src_ids: np.ndarray,
              params: Mapping[str, Any], config: Mapping[str, Any], src_mask: np.ndarray | None,
              eos_id: int) -> str:
    """The note for a legitimate divergence of ``row`` at ``step``; AssertionError otherwise."""
    __tracebackhide__ = True
    expected_token = int(want[row, step])
    where = f"{label(backend, 'greedy_decode')}: row {row} step {step}"
    if (want[row, 1:step] == eos_id).any():                                 # column 0 is bos
        raise AssertionError(f"{where}: token {token} but should be {expected_token}: the row emitted "
                             f"eos ({eos_id}) earlier and must be filled with it [token ids]")
    prefix = want[row:row + 1, :step]                                         # (1, step)
    mask = None if src_mask is None else src_mask[row:row + 1]
    logits = expected("forward", [src_ids[row:row + 1], prefix, params, config], {"src_mask": mask},
                      dtype=backend.dtype)
    last, last_tol = logits.value[0, -1], logits.tol[0, -1]                   # (V,)
    margin, allowed = float(last[expected_token] - last[token]), margin_tolerance(last_tol)
    if margin > allowed:
        raise AssertionError(
            f"{where}: token {token} but should be {expected_token} (reference logits: "
            f"{last[expected_token]!r} for {expected_token}, {last[token]!r} for {token}; margin {margin:.3g} "
            f"exceeds the near-tie tolerance {allowed:.3g}) [token ids]")
    return (f"greedy: row {row} diverged at a near-tie at step {step} (reference margin {margin:.3g} "
            f"<= tolerance {allowed:.3g}); compared up to there")
