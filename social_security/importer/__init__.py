"""Bulk import of the social-security bureau's CSV exports (``onecard social-security import``).

``formats`` defines and parses the two file formats (enrolments, contributions), ``run``
loads a file in resumable, idempotent chunks, ``generate`` writes synthetic files for tests and
the benchmark, ``cli`` is the command. The format is documented for the bureau in
``docs/social-security-import.md``.
"""
