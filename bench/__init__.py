"""Benchmarks (``make bench``, ``python -m bench [NAME ...]``).

Each benchmark measures what it compares side by side in one run (so machine drift hits both
sides alike) and *reports* its figures and ratios against the targets in the issues. A missed
target is a finding, not a failure: the exit code is non-zero only when a benchmark could not
measure (a server did not start, a response was not 200).
"""

from __future__ import annotations


class BenchmarkError(RuntimeError):
    """The benchmark could not produce trustworthy figures; the message says why."""
