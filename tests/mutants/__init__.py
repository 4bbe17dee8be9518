"""Deliberately broken backends ("mutants"): each has exactly one realistic bug, to show that
the property and differential suites catch it. See ``tests/mutants/zoo.py``."""
