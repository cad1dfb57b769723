import argparse
import sys

import datasets  # noqa: F401  (registers every dataset)
from dassl.utils.errors import run_command
from datasets.check import default_root, format_status, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.check",
        description="Report, for each dataset, whether it is in place under the data root and how many images "
        "each split has (see docs/DATASETS.md). Exit status 1 when any dataset is missing or broken.",
    )
    parser.add_argument("--root", default=default_root(), help="data root (default: $DATA, else ./data)")
    parser.add_argument(
        "names", nargs="*", help="config names (oxford_pets) or registry names (OxfordPets); default: all 15 benchmarks"
    )
    args = parser.parse_args(argv)
    return run_command(parser.prog, lambda: report(args.root, args.names))


def report(root: str, names) -> int:
    statuses = run(root, names)
    for status in statuses:
        print(format_status(status))
    return 0 if all(status.found for status in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
