"""The suite's pytest options, Hypothesis profiles and report header live in one plugin."""

pytest_plugins = ["conformance.kit.pytest_plugin"]
