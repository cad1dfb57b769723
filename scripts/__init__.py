"""Helpers behind the protocol shell scripts: log reading, result tables, the sweep queue.

Run the command-line tools from the repository root as modules (``python3 -m scripts.sweep``) so that
this package and the top-level ``parse_test_res`` import as the project's own.
"""
