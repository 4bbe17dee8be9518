"""Every property of the property suite catches a deliberately broken backend.

For each property (a test in ``properties/``) ``CATCHES`` names a mutant of the catalog
(``tests/mutants/catalog.py``: ``zoo.py`` and ``model.py``) with one realistic bug that
violates it. A pytest subprocess runs each property against its mutant at float64 (the
``thorough`` example budget with a fixed seed, stopping at the first failure without shrinking:
only the verdict matters); a second one runs each property against the unbroken torch backend
(``ci``) as a control. The tests below assert that every property FAILED on its mutant with a
message from the suite's assertion helpers or harness (it names the mutant), and PASSED on the
control.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("torch")

from backends.registry import load_backend  # noqa: E402
from conformance.kit.strategies import NO_SHRINK_VARIABLE  # noqa: E402
from tests.mutants import catalog  # noqa: E402
from tests.mutants.zoo import MUTANTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPE = "float64"
CONTROL = "torch"
SEED = 0
"""Hypothesis seed of the mutant run: with it the run is deterministic."""

CATCHES: dict[str, str] = {
    "properties/test_softmax.py::test_rows_sum_to_one": "softmax_wrong_axis",
    "properties/test_softmax.py::test_entries_in_unit_interval": "softmax_returns_log_softmax",
    "properties/test_softmax.py::test_invariant_to_a_constant_per_row": "softmax_without_max_subtraction",
    "properties/test_softmax.py::test_order_preserving": "softmax_wrong_axis",
    "properties/test_softmax.py::test_neg_inf_entries_get_exactly_zero": "softmax_nan_on_all_neg_inf_rows",
    "properties/test_softmax.py::test_large_inputs_stay_finite": "softmax_without_max_subtraction",
    "properties/test_masking.py::test_masked_keys_get_exactly_zero_weight": "mask_inverted",
    "properties/test_masking.py::test_keys_and_values_at_masked_positions_do_not_matter": "mask_inverted",
    "properties/test_masking.py::test_fully_masked_query_row_gives_zeros": "mask_fill_finfo_min",
    "properties/test_masking.py::test_all_true_mask_equals_no_mask": "mask_inverted",
    "properties/test_masking.py::test_multi_head_attention_ignores_masked_keys_and_values": "mask_inverted",
    "properties/test_permutation.py::test_self_attention_is_permutation_equivariant": "attention_always_causal",
    "properties/test_permutation.py::test_attention_is_invariant_to_permuting_keys_and_values_together":
        "attention_always_causal",
    "properties/test_permutation.py::test_multi_head_self_attention_is_permutation_equivariant":
        "split_heads_without_transpose",
    "properties/test_permutation.py::test_encoder_layer_is_permutation_equivariant": "split_heads_without_transpose",
    "properties/test_permutation.py::test_positional_encoding_makes_order_matter": "no_positional_encoding",
    "properties/test_causality.py::test_decoder_output_at_t_ignores_later_targets": "causal_mask_includes_next",
    "properties/test_causality.py::test_forward_logits_at_t_ignore_later_targets": "causal_mask_includes_next",
    "properties/test_independence.py::test_encode_batch_items_are_independent": "norm_over_batch",
    "properties/test_independence.py::test_decode_batch_items_are_independent": "norm_over_batch",
    "properties/test_independence.py::test_encode_ignores_appended_padding": "key_padding_mask_ignored",
    "properties/test_independence.py::test_decode_ignores_appended_target_padding": "norm_over_sequence",
    "properties/test_independence.py::test_cross_attention_ignores_appended_memory_padding":
        "cross_attention_unmasked",
    "properties/test_layer_norm.py::test_normalised_rows_have_mean_zero_and_variance_var_over_var_plus_eps":
        "layer_norm_eps_outside_sqrt",
    "properties/test_layer_norm.py::test_invariant_to_positive_affine_maps_per_row": "layer_norm_without_centering",
    "properties/test_layer_norm.py::test_gamma_and_beta_act_per_feature": "layer_norm_gamma_beta_swapped",
    "properties/test_positional_encoding.py::test_deterministic": "pe_dropout_left_on",
    "properties/test_positional_encoding.py::test_longer_sequence_starts_with_the_shorter_one":
        "pe_positions_normalised",
    "properties/test_positional_encoding.py::test_values_in_unit_interval": "pe_scaled_by_sqrt_d_model",
    "properties/test_positional_encoding.py::test_sin_cos_pairs_lie_on_the_unit_circle": "pe_concatenated_halves",
    "properties/test_positional_encoding.py::test_position_zero_is_zero_one_alternating": "pe_sin_cos_swapped",
    "properties/test_positional_encoding.py::test_offset_acts_as_a_fixed_rotation_per_frequency_pair":
        "pe_positions_start_at_one",
    "properties/test_attention_scale.py::test_invariant_to_scaling_queries_up_and_keys_down": "scores_query_query",
    "properties/test_attention_scale.py::test_weights_depend_on_d_k_through_inverse_sqrt": "scale_by_d_k",
    "properties/test_self_attention.py::test_diagonal_weight_is_the_row_maximum_for_equal_norm_rows":
        "keys_rolled_by_one",
    "properties/test_multi_head.py::test_one_head_equals_single_head_attention": "key_projection_uses_w_v",
    "properties/test_multi_head.py::test_heads_are_contiguous_column_blocks": "split_heads_without_transpose",
    "properties/test_multi_head.py::test_permuting_heads_consistently_leaves_output_unchanged":
        "split_heads_without_transpose",
    "properties/test_embedding.py::test_embedding_equals_one_hot_times_table": "embedding_scaled",
    "properties/test_feed_forward.py::test_relu_ffn_without_biases_is_positively_homogeneous":
        "activation_always_gelu",
    "properties/test_greedy.py::test_first_column_is_bos": "greedy_drops_bos",
    "properties/test_greedy.py::test_length_is_at_most_max_len": "greedy_max_len_excludes_bos",
    "properties/test_greedy.py::test_rows_stay_at_eos_after_emitting_it": "greedy_continues_after_eos",
    "properties/test_greedy.py::test_deterministic": "greedy_samples",
    "properties/test_greedy.py::test_each_token_is_an_argmax_of_forward_on_its_prefix": "greedy_uses_first_position",
    "properties/test_feed_forward.py::test_negating_the_second_layer_negates_the_output": "ffn_activation_on_output",
    "properties/test_feed_forward.py::test_identity_weights_give_the_activation_itself": "gelu_tanh_approximation",
    "properties/test_attention_scale.py::test_acts_on_the_columns_of_v_one_at_a_time": "attention_scaled_by_sqrt_d_v",
    "properties/test_composition.py::test_encoder_layer_is_its_sublayers_composed": "sublayer_always_post_ln",
    "properties/test_composition.py::test_decoder_layer_is_its_sublayers_composed":
        "cross_attention_uses_self_attn_params",
    "properties/test_composition.py::test_encode_is_embedding_then_encoder_layers_then_final_norm":
        "embedding_scale_ignores_config",
    "properties/test_composition.py::test_decode_is_embedding_then_decoder_layers_then_final_norm":
        "target_padding_mask_ignored",
    "properties/test_composition.py::test_forward_is_decode_then_generator": "generator_tied_to_embedding",
    "properties/test_composition.py::test_batched_tokens_are_argmaxes_of_forward_with_padded_sources":
        "next_token_argmax_flattened",
    "properties/test_composition.py::test_stops_only_when_every_row_has_emitted_eos_or_at_max_len":
        "greedy_stops_when_any_row_finishes",
}
"""property (test node id without parameters) -> the mutant that must make it fail."""


def node(test: str, target: str) -> str:
    """The node id of ``test`` run against ``target`` (a mutant name or the control)."""
    return f"{test}[{target}-{DTYPE}]"


def property_tests() -> list[str]:
    """Every ``test_*`` function in properties/test_*.py, as a node id without parameters."""
    found = []
    for path in sorted((ROOT / "properties").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        found += [f"properties/{path.name}::{fn.name}" for fn in tree.body
                  if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")]
    return found


def _outcome(case: ET.Element) -> tuple[str, str]:
    """(passed | failed | error | skipped, message) of a junit testcase."""
    for tag in ("failure", "error", "skipped"):
        element = case.find(tag)
        if element is not None:
            return {"failure": "failed"}.get(tag, tag), f"{element.get('message', '')}\n{element.text or ''}"
    return "passed", ""


def _node_of(case: ET.Element) -> str:
    module = case.get("classname", "").replace(".", "/") + ".py"
    return f"{module}::{case.get('name')}"


def _run(nodes: list[str], backends: list[str], profile: str, junit: Path, *extra: str) -> dict[str, tuple[str, str]]:
    """Run ``nodes`` in a pytest subprocess; node id -> (outcome, message)."""
    command = [sys.executable, "-m", "pytest", *nodes, *(f"--backend={b}" for b in backends), f"--dtype={DTYPE}",
               f"--hypothesis-profile={profile}", *extra, "-p", "no:cacheprovider", "-q", "--no-header",
               f"--junitxml={junit}"]
    env = {**os.environ, NO_SHRINK_VARIABLE: "1"}  # only the verdict matters here
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if not junit.exists():
        pytest.fail(f"the run wrote no report (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return {_node_of(case): _outcome(case) for case in ET.parse(junit).iter("testcase")}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Each property against its mutant (the ``thorough`` budget with a fixed seed, stopping at
    the first failure) and against the control (``ci``); node id -> (outcome, message)."""
    folder = tmp_path_factory.mktemp("mutants")
    mutants = sorted(set(CATCHES.values()))
    caught = _run([node(test, mutant) for test, mutant in CATCHES.items()], [catalog.spec(m) for m in mutants],
                  "thorough", folder / "mutants.xml", f"--hypothesis-seed={SEED}")
    control = _run([node(test, CONTROL) for test in CATCHES], [CONTROL], "ci", folder / "control.xml")
    return {**caught, **control}


def test_every_property_has_a_mutant():
    """Each property in properties/ is listed in CATCHES with a registered mutant."""
    missing = [test for test in property_tests() if test not in CATCHES]
    unknown = {test: m for test, m in CATCHES.items() if m not in catalog.ALL}
    stale = [test for test in CATCHES if test not in property_tests()]
    assert not missing and not unknown and not stale, f"missing: {missing}; unknown mutants: {unknown}; stale: {stale}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("test", "mutant"), list(CATCHES.items()), ids=[t.split("::")[1] for t in CATCHES])
def test_property_fails_on_its_mutant_and_passes_on_the_control(verdicts, test, mutant):
    """The property fails against the mutant with a message naming it (so the failure came from
    the suite's assertion helpers or harness, not a crash), and passes on the unbroken torch
    backend."""
    outcome, message = verdicts.get(node(test, mutant), ("not run", ""))
    assert outcome == "failed" and f"mutant:{mutant}" in message, (
        f"{test} should fail on mutant {mutant!r}, got {outcome}:\n{message[:2000]}")
    control, control_message = verdicts.get(node(test, CONTROL), ("not run", ""))
    assert control == "passed", (
        f"{test} should pass on the unbroken {CONTROL} backend, got {control}:\n{control_message[:2000]}")


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_has_a_one_line_docstring_and_loads_from_both_spec_forms(name):
    """Each mutant names its bug in one line and loads as ``tests.mutants.zoo:NAME`` and as
    ``tests/mutants/zoo.py:NAME``, at float64 by default."""
    doc = (MUTANTS[name].__doc__ or "").strip()
    assert doc and "\n" not in doc, f"mutant {name} needs a one-line docstring naming its bug, got {doc!r}"
    for spec in (f"tests.mutants.zoo:{name}", f"{ROOT / 'tests' / 'mutants' / 'zoo.py'}:{name}"):
        backend = load_backend(spec, dtype=DTYPE)
        assert (backend.name, backend.dtype) == (f"mutant:{name}", DTYPE)
