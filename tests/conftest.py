"""Shared pytest set-up: the repository root on sys.path so `clip`, `dassl`, `datasets`, `trainers` import
as the project's own packages (ours shadow the `openai-clip` reference package, which the parity tests
import by file location)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
