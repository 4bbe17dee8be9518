"""Differential tests: every contract op compared with the float64 reference under the
tolerance model of conformance/tolerance/TOLERANCES.md, on Hypothesis-generated small cases (edge cases
included) and on fixed seeded cases at realistic sizes."""
