"""Permutation properties: without a positional encoding, attention, multi-head attention and
the encoder layer treat a sequence as a set (permuting the positions permutes the outputs);
attention is a function of the set of (key, value) pairs; with the positional encoding, order
matters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.kit.assertions import assert_close, assert_true
from conformance.kit.harness import call_op
from conformance.kit.strategies import (
    arrays,
    attention_masks,
    attention_params,
    budget,
    configs,
    params,
    sizes,
    token_ids,
)
from properties import tolerances
from properties.plumbing import held, permute_square, take
from properties.strategies import (
    LAYER_SHARE,
    MODEL_CAPS,
    MODEL_SHARE,
    OP_SHARE,
    attention_inputs,
    multi_head_cases,
    permutations,
)


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs(self_attention=True), data=st.data())
def test_self_attention_is_permutation_equivariant(backend, case, data):
    """Attention(PX, PX, PX, P M P^T) = P Attention(X, X, X, M) for a permutation matrix P of
    the positions: scores become P S P^T, the row softmax commutes with permuting rows and
    columns, and P^T P = I."""
    x = held(backend, case["q"])
    order = data.draw(permutations(x.shape[-2]), label="order")
    mask = data.draw(attention_masks(x.shape[:-1] + (x.shape[-2],)), label="mask")
    out = call_op(backend, "attention", x, x, x, mask=mask, shape=x.shape)
    px = take(x, order, -2)
    permuted = call_op(backend, "attention", px, px, px, mask=permute_square(mask, order), shape=x.shape)
    err = tolerances.attention_output_error(backend.dtype, x, x, x)
    assert_close(permuted, take(out, order, -2), tol=tolerances.difference(err, take(err, order, -2)),
                 backend=backend, op="attention", what="attention(PX) = P attention(X)")


@pytest.mark.op("attention")
@budget(OP_SHARE)
@given(case=attention_inputs(), data=st.data())
def test_attention_is_invariant_to_permuting_keys_and_values_together(backend, case, data):
    """Attention(Q, PK, PV, M P^T) = Attention(Q, K, V, M): the output sum_j A_ij V_j runs over
    the (key, value) pairs in any order."""
    q, k, v = (held(backend, case[name]) for name in "qkv")
    order = data.draw(permutations(k.shape[-2]), label="order")
    mask = data.draw(attention_masks(q.shape[:-1] + (k.shape[-2],)), label="mask")
    shape = q.shape[:-1] + (v.shape[-1],)
    out = call_op(backend, "attention", q, k, v, mask=mask, shape=shape)
    permuted = call_op(backend, "attention", q, take(k, order, -2), take(v, order, -2), mask=take(mask, order, -1),
                       shape=shape)
    err = tolerances.attention_output_error(backend.dtype, q, k, v)
    assert_close(permuted, out, tol=tolerances.difference(err, err), backend=backend, op="attention",
                 what="attention(Q, PK, PV) = attention(Q, K, V)")


@pytest.mark.op("multi_head_attention")
@budget(LAYER_SHARE)
@given(case=multi_head_cases(self_attention=True), data=st.data())
def test_multi_head_self_attention_is_permutation_equivariant(backend, case, data):
    """MultiHead(PX, PX, P M P^T) = P MultiHead(X, X, M): the projections act row by row and
    every head is permutation-equivariant attention."""
    x, num_heads = held(backend, case["x_q"]), case["num_heads"]
    p = held(backend, data.draw(attention_params(case["d_model"]), label="p"))
    order = data.draw(permutations(x.shape[-2]), label="order")
    mask = data.draw(attention_masks(x.shape[:-1] + (x.shape[-2],)), label="mask")
    out = call_op(backend, "multi_head_attention", x, x, p, num_heads, mask=mask, shape=x.shape)
    px = take(x, order, -2)
    permuted = call_op(backend, "multi_head_attention", px, px, p, num_heads, mask=permute_square(mask, order),
                       shape=x.shape)
    length = tolerances.attention_length(case["d_model"], num_heads, x.shape[-2])
    tol = tolerances.chain_difference(backend.dtype, length, out, permuted)
    assert_close(permuted, take(out, order, -2), tol=tol, backend=backend, op="multi_head_attention",
                 what="MHA(PX) = P MHA(X)")


@st.composite
def encoder_layer_cases(draw: st.DrawFn) -> dict:
    """{config, p (one encoder layer), x (B, S, d_model) at unit scale}."""
    config = draw(configs(**MODEL_CAPS, min_layers=1))
    batch, seq_len = draw(sizes(1, 2)), draw(sizes(1, 4))
    return {"config": config, "p": draw(params(config))["encoder"][0],
            "x": draw(arrays((batch, seq_len, config["d_model"]), scales=(1.0,)))}


@pytest.mark.op("encoder_layer")
@budget(LAYER_SHARE)
@given(case=encoder_layer_cases(), data=st.data())
def test_encoder_layer_is_permutation_equivariant(backend, case, data):
    """EncoderLayer(PX, P M P^T) = P EncoderLayer(X, M) (no positional encoding inside a layer):
    self-attention is equivariant, and the residuals, layer norms and FFN act row by row."""
    config, x = case["config"], held(backend, case["x"])
    p = held(backend, case["p"])
    order = data.draw(permutations(x.shape[-2]), label="order")
    mask = data.draw(attention_masks(x.shape[:-1] + (x.shape[-2],)), label="mask")
    out = call_op(backend, "encoder_layer", x, p, config, mask=mask, shape=x.shape)
    permuted = call_op(backend, "encoder_layer", take(x, order, -2), p, config, mask=permute_square(mask, order),
                       shape=x.shape)
    length = tolerances.encoder_layer_length(config, x.shape[-2])
    err = tolerances.conditioned_error(backend.dtype, length, out, "encoder_layer", x, p, config, mask=mask)
    err_permuted = tolerances.conditioned_error(backend.dtype, length, permuted, "encoder_layer", take(x, order, -2), p,
                                                config, mask=permute_square(mask, order))
    assert_close(permuted, take(out, order, -2), tol=tolerances.difference(err_permuted, take(err, order, -2)),
                 backend=backend, op="encoder_layer", what="EncoderLayer(PX) = P EncoderLayer(X)")


@st.composite
def embedding_only_models(draw: st.DrawFn) -> dict:
    """A model without encoder layers or final norm, so that encode(src) = E[src] s + PE, and a
    (B, S) batch of source ids with 2 <= S <= MAX_ORDER_LENGTH."""
    config = draw(configs(**MODEL_CAPS))
    config.update(num_encoder_layers=0, norm_first=False, final_norm=False)
    seq_len = draw(sizes(2, tolerances.MAX_ORDER_LENGTH))
    return {"config": config, "params": draw(params(config)),
            "src": draw(token_ids(draw(sizes(1, 2)), seq_len, config["src_vocab_size"]))}


@pytest.mark.op("encode")
@budget(MODEL_SHARE)
@given(case=embedding_only_models(), data=st.data())
def test_positional_encoding_makes_order_matter(backend, case, data):
    """encode(src P) != P encode(src) at every position the permutation moves: position p of
    both holds the same token, src[order[p]], but at positions p and order[p], so the two
    differ by PE[p] - PE[order[p]], at least ``PE_MIN_SEPARATION`` in max-norm (the PE really
    is applied). Without encoder layers encode is E[src] sqrt(d_model) + PE[:S], which
    isolates the PE; the layers' own equivariance is tested above."""
    config, p, src = case["config"], held(backend, case["params"]), case["src"]
    identity = np.arange(src.shape[-1])
    order = data.draw(permutations(src.shape[-1]).filter(lambda o: (o != identity).any()), label="order")
    moved = order != identity
    shape = src.shape + (config["d_model"],)
    out = call_op(backend, "encode", src, p, config, shape=shape)
    permuted = call_op(backend, "encode", take(src, order, -1), p, config, shape=shape)
    distance = np.max(np.abs(permuted - take(out, order, -2)), axis=-1)           # (B, S)
    assert_true(distance[:, moved] > tolerances.order_signal_threshold(), values=distance[:, moved],
                backend=backend, op="encode",
                what="encode(src P) differs from P encode(src) at moved positions (value: max |difference|)")
