"""The property suite: Hypothesis properties every backend must satisfy in its own dtype.

A property needs no reference: it is an invariant of the backend's own outputs (softmax rows
sum to 1, attention is permutation-equivariant, the decoder is causal, ...), so it also
catches bugs that a backend shares with the reference. (The layer and model properties floor
their rounding bound with the differential tolerance of the same call, which propagates error
bounds through the reference's equations in float64: magnitudes for the bound only, never the
expected value; ``properties.tolerances.conditioned_error``.) One module per component
(``test_softmax.py``, ``test_masking.py``, ...); inputs from ``properties.strategies`` (on top
of ``conformance.kit.strategies``), tolerances from ``properties.tolerances`` only, inputs rounded
to the backend's dtype by ``properties.plumbing.held``. Each property has a mutant in
``tests/mutants/zoo.py`` that it catches (``tests/test_properties_catch_mutants.py``).

    pytest properties -n auto --hypothesis-profile=ci
    pytest properties --backend torch --dtype bfloat16 --hypothesis-profile=thorough
"""
