"""Greedy decoding properties: starts with bos, respects max_len, eos is absorbing, is
deterministic, and each token is the argmax of forward() on the prefix before it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_equal, assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import budget, padding_masks, sizes
from properties import tolerances
from properties.plumbing import held
from properties.strategies import MODEL_SHARE, models

pytestmark = pytest.mark.op("greedy_decode")


@st.composite
def decodings(draw: st.DrawFn, *, min_batch: int = 1, max_batch: int = 2, min_layers: int = 0,
              min_max_len: int = 1, max_max_len: int = 5) -> dict:
    """A model, a source batch with its padding mask, max_len, bos and eos ids."""
    case = draw(models(min_batch=min_batch, max_batch=max_batch, min_layers=min_layers))
    vocab = case["config"]["tgt_vocab_size"]
    case.update(src_mask=draw(padding_masks(*case["src"].shape)), max_len=draw(sizes(min_max_len, max_max_len)),
                bos=draw(st.integers(0, vocab - 1)), eos=draw(st.integers(0, vocab - 1)))
    return case


def greedy(backend, case: dict) -> np.ndarray:
    return call_op(backend, "greedy_decode", case["src"], held(backend, case["params"]), case["config"],
                   case["max_len"], case["bos"], case["eos"], src_mask=case["src_mask"])


def emitted_eos_before(tokens: np.ndarray, eos: int) -> np.ndarray:
    """(B, L) bool: row b emitted eos at some step 1 <= s < t (column 0 is bos, not an emission)."""
    emitted = tokens == eos
    emitted[:, 0] = False
    seen = np.logical_or.accumulate(emitted, axis=1)
    return np.concatenate([np.zeros((tokens.shape[0], 1), bool), seen[:, :-1]], axis=1)


def early_stopping_token(tokens: np.ndarray, default: int) -> int:
    """A token that row 0 generates, then moves away from, and that no other row generates
    (in a first run), so that with it as eos row 0 stops early while the others go on; else
    ``default``."""
    if tokens.ndim != 2 or tokens.shape[0] < 2:
        return default
    row, others = tokens[0, 1:], tokens[1:, 1:]
    candidates = [t for t, after in zip(row[:-1], row[1:]) if after != t and t not in others]
    return int(candidates[0]) if candidates else default


def _length(tokens: np.ndarray) -> np.ndarray:
    return np.array(tokens.shape[1] if tokens.ndim == 2 else -1)


@budget(MODEL_SHARE)
@given(case=decodings())
def test_first_column_is_bos(backend, case):
    """tokens[:, 0] = bos_id: decoding starts from bos, which is part of the output."""
    tokens = greedy(backend, case)
    length = _length(tokens)
    assert_true(length >= 1, values=length, backend=backend, op="greedy_decode", what="at least the bos column")
    assert_true(tokens[:, :1] == case["bos"], values=tokens[:, :1], backend=backend, op="greedy_decode",
                what=f"column 0 is bos = {case['bos']}")


@budget(MODEL_SHARE)
@given(case=decodings())
def test_length_is_at_most_max_len(backend, case):
    """1 <= L <= max_len (bos counts), and L < max_len only when every row has emitted eos."""
    tokens = greedy(backend, case)
    length = _length(tokens)
    assert_true((1 <= length) & (length <= case["max_len"]), values=length, backend=backend, op="greedy_decode",
                what=f"1 <= L <= max_len = {case['max_len']}")
    finished = (tokens[:, 1:] == case["eos"]).any(axis=1)
    assert_true(finished | (length == case["max_len"]), values=finished, backend=backend, op="greedy_decode",
                what="stopping before max_len only when every row has emitted eos (value: row emitted eos)")


@budget(MODEL_SHARE)
@given(case=decodings(min_batch=2, max_batch=3, min_layers=1, min_max_len=3, max_max_len=6))
def test_rows_stay_at_eos_after_emitting_it(backend, case):
    """tokens[b, t] = eos for every t after the first step s >= 1 with tokens[b, s] = eos.

    To exercise it (a correct backend passes trivially unless some row stops while another goes
    on), the batch has 2-3 sources, max_len >= 3, and eos is a token that row 0 generates and
    then moves away from while no other row generates it (read from a first run), if any."""
    case = {**case, "eos": early_stopping_token(greedy(backend, case), case["eos"])}
    tokens = greedy(backend, case)
    assert_true(~emitted_eos_before(tokens, case["eos"]) | (tokens == case["eos"]), values=tokens, backend=backend,
                op="greedy_decode", what=f"eos = {case['eos']} is absorbing")


@budget(MODEL_SHARE)
@given(case=decodings())
def test_deterministic(backend, case):
    """Two calls with the same inputs return the same tokens."""
    first, second = greedy(backend, case), greedy(backend, case)
    assert_equal(second, first, backend=backend, op="greedy_decode", what="two calls return the same tokens")


@budget(MODEL_SHARE)
@given(case=decodings())
def test_each_token_is_an_argmax_of_forward_on_its_prefix(backend, case):
    """tokens[:, t] maximises forward(src, tokens[:, :t])[:, t - 1] for every row still running
    at step t: its logit is within rounding of the largest (a near-tie may go either way when
    greedy_decode and forward round differently, e.g. with a key-value cache)."""
    tokens = greedy(backend, case)
    config, p = case["config"], held(backend, case["params"])
    running = ~emitted_eos_before(tokens, case["eos"])
    for t in range(1, tokens.shape[1]):
        every = call_op(backend, "forward", case["src"], tokens[:, :t], p, config, src_mask=case["src_mask"],
                        shape=(tokens.shape[0], t, config["tgt_vocab_size"]))          # (B, t, V)
        logits = every[:, -1]                                                            # (B, V)
        err = tolerances.conditioned_error(backend.dtype, tolerances.forward_length(config, case["src"].shape[1], t),
                                           every, "forward", case["src"], tokens[:, :t], p, config,
                                           src_mask=case["src_mask"])[:, -1]             # (B, 1)
        chosen = np.take_along_axis(logits, tokens[:, t:t + 1], axis=1)                  # (B, 1)
        gap = logits.max(axis=1, keepdims=True) - chosen
        assert_true(~running[:, t:t + 1] | (gap <= tolerances.difference(err, err)), values=gap, backend=backend,
                    op="greedy_decode", name="logit_gap",
                    what=f"token at step {t} is an argmax of forward (logit_gap[b, 0] = max logit - the chosen "
                         f"token's logit, batch row b)")
