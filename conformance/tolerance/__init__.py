"""The differential tolerance model: how far a correct backend at a dtype may be from the
float64 reference, per element (TOLERANCES.md has the derivation and its constants).

    model.py          expected(op, args, kwargs, dtype): the reference value and its per-element
                      tolerance; the aggregate (root-mean-square) check; which term set a bound
    error_bounds.py   the first-order forward error bounds propagated through the equations
    diagnosis.py      which named convention of reference/variants.py explains a failing
                      comparison (VARIANTS.md)

A property's a-priori bound for a backend against itself is another idea, in
properties/tolerances.py. May import reference and the op records (backends/ops.py) only.
"""
