"""Mean ± spread of a metric over the seed runs of an experiment, and protocol tables.

Official usage (same output format as the CoOp / MaPLe / PromptSRC parser)::

    python parse_test_res.py output/base2new/train_base/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx
    python parse_test_res.py output/base2new/test_new/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx --test-log
    python parse_test_res.py output/evaluation/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots --test-log --multi-exp

Protocol views (Markdown + CSV + PNG; mean ± std over seeds, methods in the papers' order)::

    python parse_test_res.py --protocol base2new output/base2new --out results/   # Table 1: base / novel / HM
    python parse_test_res.py --protocol xd output --out results/        # Table 2: source, 10 targets, average
    python parse_test_res.py --protocol dg output --out results/        # Table 3: source, 4 ImageNet variants
    python parse_test_res.py --protocol fewshot output --out results/   # accuracy against 1-16 shots

The xd, dg and fewshot views read the whole output root (scripts/protocol_tables.py says which folders);
`--source` names the source dataset of xd/dg (default imagenet; the demo's is demo), `--targets` their columns,
`--methods` (TRAINER or TRAINER:CONFIG, comma separated) and `--datasets` restrict rows and few-shot datasets.
Every missing run is named on stderr and its cell shown as '-'.

Differences from the official parser (PROTOCOL.md §8 items 1 and 8): both ``Finish training`` and
``Finished training`` end a training log, and a re-run's newest log (``log.txt-<timestamp>``) that holds a
result is read instead of always the first ``log.txt``.
"""
from __future__ import annotations

import argparse
import os
import sys

from scripts.logs import collect_runs, mean, spread, visible_subdirs
from scripts.protocols import DEFAULT_SOURCE, PROTOCOLS
from scripts.tables import Base2NewTable, to_markdown, write_csv, write_plot


class NothingFound(Exception):
    pass


def summarize_directory(directory: str, keyword: str = "accuracy", test_log: bool = False, ci95: bool = False) -> float:
    """Print each seed's result and their mean ± spread (official format); return the mean."""
    print(f"Parsing files in {directory}")
    runs = collect_runs(directory, keyword, test_log)
    if not runs:
        hint = "" if test_log else " (evaluation-only runs need --test-log)"
        raise NothingFound(f"Nothing found in {directory}{hint}")
    for run in runs:
        print(f"file: {run.log_path}. {keyword}: {run.value:.2f}%. ")
    values = [run.value for run in runs]
    print("===")
    print(f"Summary of directory: {directory}")
    print(f"* {keyword}: {mean(values):.2f}% +- {spread(values, ci95):.2f}%")
    print("===")
    return mean(values)


def summarize_experiments(directory: str, keyword: str, test_log: bool, ci95: bool) -> float:
    """``--multi-exp``: summarise every experiment folder under ``directory``, then the mean of their means."""
    means = [summarize_directory(os.path.join(directory, name), keyword, test_log, ci95)
             for name in visible_subdirs(directory)]
    if not means:
        raise NothingFound(f"No experiment folders in {directory}")
    print("Average performance")
    print(f"* {keyword}: {mean(means):.2f}%")
    return mean(means)


def report_base2new(root: str, out_dir: str | None, keyword: str, plot: bool) -> Base2NewTable:
    """Print the base-to-novel table; with ``out_dir``, also write base2new.{md,csv,png} there."""
    table = Base2NewTable.from_tree(root, keyword)
    markdown = to_markdown(table)
    print(markdown, end="")
    if out_dir:
        # imported only to write files: `dassl` pulls in torch, which printing the table does not need
        from dassl.utils.atomic import write_text_atomic

        write_text_atomic(os.path.join(out_dir, "base2new.md"), markdown)
        write_csv(table, os.path.join(out_dir, "base2new.csv"))
        print(f"Wrote {os.path.join(out_dir, 'base2new.md')} and base2new.csv")
        if plot:
            write_plot(table, os.path.join(out_dir, "base2new.png"))
            print(f"Wrote {os.path.join(out_dir, 'base2new.png')}")
    return table


def report_protocol(protocol: str, root: str, out_dir: str | None, plot: bool, source: str = DEFAULT_SOURCE,
                    targets: list[str] | None = None, methods: str | None = None, datasets: list[str] | None = None):
    """Print the xd / dg / fewshot table, name its missing runs on stderr; with ``out_dir``, also write
    <protocol>.{md,csv,png} there."""
    # imported here: the tables ask the trainers' classes what they can do, which imports torch
    from scripts import protocol_tables

    wanted = protocol_tables.parse_methods(methods) if methods else None
    if protocol == "fewshot":
        table = protocol_tables.FewShotTable.from_tree(root, datasets, wanted)
    else:
        table = protocol_tables.TransferTable.from_tree(root, protocol, source, targets, wanted)
    markdown = table.to_markdown()
    print(markdown, end="")
    if table.missing:
        print(f"parse_test_res.py: {len(table.missing)} missing run(s), shown as '-':", file=sys.stderr)
        for line in table.missing:
            print(f"  {line}", file=sys.stderr)
    if out_dir:
        from dassl.utils.atomic import write_text_atomic

        write_text_atomic(os.path.join(out_dir, f"{protocol}.md"), markdown)
        protocol_tables.write_csv(table, os.path.join(out_dir, f"{protocol}.csv"))
        print(f"Wrote {os.path.join(out_dir, protocol + '.md')} and {protocol}.csv")
        if plot:
            table.write_plot(os.path.join(out_dir, f"{protocol}.png"))
            print(f"Wrote {os.path.join(out_dir, protocol + '.png')}")
    return table


def _names(value: str | None) -> list[str] | None:
    return [item for item in value.replace(",", " ").split() if item] if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="experiment folder holding seed*/ runs (or the protocol root with --protocol)")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence half-width instead of the std")
    parser.add_argument("--test-log", action="store_true", help="read evaluation-only logs (result after '=> result')")
    parser.add_argument("--multi-exp", action="store_true", help="directory holds several experiment folders")
    parser.add_argument("--keyword", default="accuracy", help="metric name in '* <keyword>: X%%' lines")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="table view of a whole protocol output tree")
    parser.add_argument("--out", help="with --protocol: folder for the Markdown, CSV and PNG files")
    parser.add_argument("--no-plot", action="store_true", help="with --protocol --out: skip the PNG")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="xd/dg: the source dataset (default imagenet)")
    parser.add_argument("--targets", help="xd/dg: the target columns, comma separated (default: the source's)")
    parser.add_argument("--methods", help="xd/dg/fewshot: only these TRAINER or TRAINER:CONFIG, comma separated "
                                          "(a listed method without runs gets a row of missing cells)")
    parser.add_argument("--datasets", help="fewshot: these datasets, comma separated (default: all found)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.protocol == "base2new":
            report_base2new(args.directory, args.out, args.keyword, plot=not args.no_plot)
        elif args.protocol:
            report_protocol(args.protocol, args.directory, args.out, not args.no_plot, args.source,
                            _names(args.targets), args.methods, _names(args.datasets))
        elif args.multi_exp:
            summarize_experiments(args.directory, args.keyword, args.test_log, args.ci95)
        else:
            summarize_directory(args.directory, args.keyword, args.test_log, args.ci95)
    except (NothingFound, FileNotFoundError, RuntimeError) as error:
        print(f"parse_test_res.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
