"""Print the result of one run directory, exit 1 when it has none yet.

The scripts and the sweep use it as the single definition of "this run is finished": the newest log in
the directory shows the final result (``Finish training`` + accuracy, or ``=> result`` + accuracy for
evaluation-only runs with ``--test-log``). A directory that merely exists is not finished.

    python3 -m scripts.run_result output/base2new/train_base/demo/shots_16/MaPLe/demo/seed1
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from scripts.logs import newest_result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--test-log", action="store_true", help="evaluation-only run")
    parser.add_argument("--keyword", default="accuracy")
    args = parser.parse_args(argv)
    result = newest_result(args.run_dir, args.keyword, args.test_log)
    if result is None:
        return 1
    print(f"{result.value:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
