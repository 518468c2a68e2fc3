"""Simulated devices for demos and tests: the virtual citizen card (``card``)."""
