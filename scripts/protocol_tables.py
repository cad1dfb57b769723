"""The tables of the all-class protocols from an output tree: cross-dataset transfer (`xd`, MaPLe's Table 2),
domain generalisation (`dg`, its Table 3) and few-shot learning (`fewshot`, CoOp's curves), as Markdown,
CSV and a PNG.

Tree read (the scripts' layout, PROTOCOL.md §5.2-5.3):

- training runs on all classes: `<root>/<dataset>/<trainer>/<config>_<K>shots[/<variant>]/seed<S>/` (the
  few-shot runs and the cross-dataset sources; `<variant>` is CoOp's `nctx<N>_csc<C>_ctp<P>`);
- evaluations of a source model on a target: `<root>/evaluation/<trainer>/<config>_<K>shots[/<variant>]/<target>/seed<S>/`;
- evaluation-only few-shot runs of released weights: `<root>/few_shot/<dataset>/<trainer>/<config>_<K>shots/seed<S>/`;
- zero-shot CLIP, which has no seed: `<root>/ZeroshotCLIP/<config>/<dataset>/`.

A cell is the mean ± population std over the seeds of its method. The seeds a method is expected to have are
all the seeds it has anywhere in the table; a cell lacking one of them is shown missing ("-"), never averaged
over fewer seeds, and every missing run is named (`Table.missing`, printed on stderr by parse_test_res.py).
Averages (over the targets, over the datasets) need every cell they average.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence

from scripts import protocols
from scripts.logs import mean, newest_result, spread, visible_subdirs
from scripts.methods import transfers_to_unseen_classes
from scripts.tables import Stat, dataset_sort_key, paper_order_key, write_atomic

# Folders of an output root that are not datasets.
RESERVED = {"evaluation", "base2new", "ZeroshotCLIP", "few_shot", "results", "sweep_logs"}
EXPERIMENT = re.compile(r"^(?P<config>.+)_(?P<shots>\d+)shots$")
SEED = re.compile(r"^seed(?P<seed>\d+)$")
ZERO_SHOT = "ZeroshotCLIP"

Runs = dict  # seed -> accuracy; zero-shot CLIP's single run has the seed ""


@dataclass(frozen=True)
class Method:
    """A series of runs: a trainer, its config and CoOp's variant folder (\"\" for the others)."""

    trainer: str
    config: str
    variant: str = ""


def method_sort_key(item) -> tuple:
    method, shots = item if isinstance(item, tuple) else (item, 0)
    return (*paper_order_key(protocols.METHOD_ORDER, method.trainer), method.config, method.variant, shots)


def parse_methods(spec: str) -> list[tuple[str, Optional[str]]]:
    """`TRAINER` or `TRAINER:CONFIG` entries, comma or space separated (the sweep's TRAINERS)."""
    entries = []
    for item in spec.replace(",", " ").split():
        trainer, _, config = item.partition(":")
        entries.append((trainer, config or None))
    return entries


def selected(method: Method, wanted: Optional[list]) -> bool:
    return wanted is None or any(method.trainer == t and (c is None or method.config == c) for t, c in wanted)


# --------------------------------------------------------------------------------------------------------
# Reading


def seed_runs(experiment_dir: str, test_log: bool) -> Runs:
    """{seed: accuracy} of the finished `seed<S>` runs in `experiment_dir`."""
    runs = {}
    for name in visible_subdirs(experiment_dir):
        match = SEED.match(name)
        if match:
            result = newest_result(os.path.join(experiment_dir, name), test_log=test_log)
            if result is not None:
                runs[match["seed"]] = result.value
    return runs


def has_seed_dirs(path: str) -> bool:
    return os.path.isdir(path) and any(SEED.match(name) for name in visible_subdirs(path))


def experiment_dirs(trainer_dir: str) -> Iterator[tuple[str, int, str, str]]:
    """(config, shots, variant, folder) of every `<config>_<K>shots[/<variant>]` experiment in `trainer_dir`
    whose folder holds seed runs (`children` False) or target folders of seed runs (evaluation trees)."""
    for name in visible_subdirs(trainer_dir):
        match = EXPERIMENT.match(name)
        if not match:
            continue
        folder = os.path.join(trainer_dir, name)
        yield match["config"], int(match["shots"]), "", folder
        for variant in visible_subdirs(folder):
            if not SEED.match(variant):
                yield match["config"], int(match["shots"]), variant, os.path.join(folder, variant)


def all_class_runs(base: str, datasets: Optional[Iterable[str]], test_log: bool) -> dict:
    """{(dataset, Method, shots): Runs} of the `<base>/<dataset>/<trainer>/<config>_<K>shots[/<variant>]/seed<S>`
    runs (every dataset folder of `base` but the reserved ones, unless `datasets` names them)."""
    found = {}
    names = datasets if datasets is not None else [d for d in _subdirs(base) if d not in RESERVED]
    for dataset in names:
        for trainer in _subdirs(os.path.join(base, dataset)):
            for config, shots, variant, folder in experiment_dirs(os.path.join(base, dataset, trainer)):
                runs = seed_runs(folder, test_log=test_log)
                if runs:
                    found[(dataset, Method(trainer, config, variant), shots)] = runs
    return found


def training_runs(root: str, datasets: Optional[Iterable[str]] = None) -> dict:
    """The all-class training runs (few-shot, cross-dataset sources)."""
    return all_class_runs(root, datasets, test_log=False)


def evaluation_only_fewshot_runs(root: str) -> dict:
    """The `reproduce.sh` few-shot evaluations (`<root>/few_shot/...`)."""
    return all_class_runs(os.path.join(root, "few_shot"), None, test_log=True)


def evaluation_runs(root: str) -> dict:
    """{(target, Method, shots): Runs} of the evaluations of source models on targets."""
    base = os.path.join(root, "evaluation")
    found = {}
    for trainer in _subdirs(base):
        for config, shots, variant, folder in experiment_dirs(os.path.join(base, trainer)):
            for target in _subdirs(folder):
                runs = seed_runs(os.path.join(folder, target), test_log=True) \
                    if has_seed_dirs(os.path.join(folder, target)) else {}
                if runs:
                    found[(target, Method(trainer, config, variant), shots)] = runs
    return found


def zero_shot_runs(root: str) -> dict:
    """{(dataset, Method): Runs} of zero-shot CLIP (`<root>/ZeroshotCLIP/<config>/<dataset>/`, one run)."""
    base = os.path.join(root, ZERO_SHOT)
    found = {}
    for config in _subdirs(base):
        for dataset in _subdirs(os.path.join(base, config)):
            result = newest_result(os.path.join(base, config, dataset), test_log=True)
            if result is not None:
                found[(dataset, Method(ZERO_SHOT, config))] = {"": result.value}
    return found


def _subdirs(path: str) -> list[str]:
    return visible_subdirs(path) if os.path.isdir(path) else []


# --------------------------------------------------------------------------------------------------------
# Cells


@dataclass
class Cell:
    """The runs of one method in one column, judged against the seeds the method is expected to have."""

    runs: Runs
    expected: frozenset

    @property
    def missing_seeds(self) -> list[str]:
        return sorted(self.expected - set(self.runs), key=lambda s: int(s) if s else -1)

    @property
    def stat(self) -> Optional[Stat]:
        if self.missing_seeds or not self.runs:
            return None
        values = [self.runs[seed] for seed in sorted(self.expected)]
        return Stat(mean(values), spread(values), len(values))


def average_stat(cells: Sequence[Cell]) -> Optional[Stat]:
    """The mean over `cells` (all complete, same seeds), with the spread over seeds of the per-seed means."""
    if not cells or any(cell.stat is None for cell in cells):
        return None
    seeds = sorted(cells[0].expected)
    per_seed = [mean([cell.runs[seed] for cell in cells]) for seed in seeds]
    return Stat(mean(per_seed), spread(per_seed), len(per_seed))


def _seed_label(seed: str) -> str:
    return f"seed{seed}" if seed else "its run"


def _fmt(stat: Optional[Stat]) -> str:
    return "-" if stat is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


def _label(method: Method, shots: Optional[int], methods: Sequence, multi_shots: bool) -> str:
    same_trainer = {m for m in methods if m.trainer == method.trainer}
    label = method.trainer
    if len({m.config for m in same_trainer}) > 1:
        label += f"/{method.config}"
    if len({m.variant for m in same_trainer}) > 1 and method.variant:
        label += f"/{method.variant}"
    if multi_shots and shots:
        label += f" ({shots} shots)"
    return label


# --------------------------------------------------------------------------------------------------------
# Cross-dataset transfer and domain generalisation


@dataclass
class TransferTable:
    """One row per method (and shot count): the source, each target and the average over the targets."""

    protocol: str  # "xd" or "dg"
    source: str
    targets: list[str]
    rows: list[tuple[Method, int]]  # (method, shots); zero-shot CLIP has shots 0
    cells: dict  # (row, column) -> Cell
    missing: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [self.source, *self.targets]

    @classmethod
    def from_tree(cls, root: str, protocol: str, source: str = protocols.DEFAULT_SOURCE,
                  targets: Optional[Sequence[str]] = None, methods: Optional[list] = None) -> "TransferTable":
        if targets is None:
            targets = list(protocols.targets(protocol, source))
            if protocol == "xd":  # targets evaluated beyond the known ones are cross-dataset targets too
                known = set(targets) | set(protocols.targets("dg", source)) | {source}
                extra = {target for target, _, _ in evaluation_runs(root)} - known
                targets += sorted(extra, key=dataset_sort_key)
        if not targets:
            raise FileNotFoundError(f"no {protocol} targets known for the source {source!r}: name them (--targets)")
        columns = [source, *targets]
        evaluated = {key: runs for key, runs in evaluation_runs(root).items() if key[0] in targets}
        sources = training_runs(root, [source])
        runs = {((method, shots), target): r for (target, method, shots), r in evaluated.items()}
        rows = {row for row, _ in runs}
        for (_, method, shots), r in sources.items():
            if (method, shots) in rows:
                runs[((method, shots), source)] = r
        for (dataset, method), r in zero_shot_runs(root).items():
            if dataset in columns:
                runs[((method, 0), dataset)] = r
                rows.add((method, 0))
        table = cls(protocol, source, list(targets), [], {})
        for row in sorted(rows, key=method_sort_key):
            if not selected(row[0], methods):
                continue
            if protocol == "xd" and not transfers_to_unseen_classes(row[0].trainer):
                table.not_applicable.append(row[0].trainer)
                continue
            table.rows.append(row)
        table._add_absent(methods)
        for row in table.rows:
            expected = frozenset(seed for column in columns for seed in runs.get((row, column), {}))
            if not expected:
                table.missing.append(f"{table.label(row)}: no finished run at all ({', '.join(columns)})")
            for column in columns:
                cell = Cell(runs.get((row, column), {}), expected)
                table.cells[(row, column)] = cell
                table.missing += [f"{table.label(row)}: {column} {_seed_label(seed)}" for seed in cell.missing_seeds]
        if not table.rows:
            raise FileNotFoundError(
                f"No finished {protocol} run under {root} for the source {source} and the targets {', '.join(targets)} "
                "(expected evaluation/<trainer>/<config>_<K>shots/<target>/seed<S>/ or ZeroshotCLIP/<config>/<dataset>/)")
        return table

    def _add_absent(self, methods: Optional[list]) -> None:
        """A method asked for (`--methods`, the sweep's TRAINERS) without a single run gets a row of missing cells."""
        for trainer, config in methods or []:
            if self.protocol == "xd" and not transfers_to_unseen_classes(trainer):
                if trainer not in self.not_applicable:
                    self.not_applicable.append(trainer)
                continue
            if not any(row[0].trainer == trainer and (config is None or row[0].config == config) for row in self.rows):
                self.rows.append((Method(trainer, config or "?"), 0))
        self.rows.sort(key=method_sort_key)

    def label(self, row: tuple[Method, int]) -> str:
        return _label(row[0], row[1], [r[0] for r in self.rows], len({r[1] for r in self.rows if r[1]}) > 1)

    def average(self, row) -> Optional[Stat]:
        return average_stat([self.cells[(row, target)] for target in self.targets])

    def published(self, row) -> Optional[tuple[float, ...]]:
        method, shots = row
        if shots not in (0, 16) or method.variant not in ("", "nctx16_cscFalse_ctpend"):
            return None
        numbers = protocols.published(self.protocol, self.source, method.trainer, method.config)
        return numbers if numbers and len(numbers) == len(self.columns) + 1 else None

    def to_markdown(self) -> str:
        title = {"xd": "Cross-dataset transfer", "dg": "Domain generalisation"}[self.protocol]
        header = ["Method", f"{self.source} (source)", *self.targets, "Average"]
        lines = [f"**{title}** (trained on {self.source}; mean ± std over seeds)", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [_fmt(self.cells[(row, column)].stat) for column in self.columns]
            lines.append("| " + " | ".join([self.label(row), *cells, _fmt(self.average(row))]) + " |")
            numbers = self.published(row)
            if numbers:
                source = protocols.PUBLISHED_SOURCES[self.protocol]
                lines.append("| " + " | ".join([f"{self.label(row)}, published ({source})",
                                                 *(f"{v:.2f}" for v in numbers)]) + " |")
        lines += ["", "Average: the mean over the targets (the source excluded), as in the papers; its spread is over "
                      "the seeds' averages. A cell '-' lacks a run (named on stderr) and is never averaged over fewer "
                      "seeds."]
        if self.not_applicable:
            lines.append(f"Not applicable: {', '.join(sorted(set(self.not_applicable)))} (scores only the classes "
                         "it was trained on; no cross-dataset row).")
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> Iterator[dict]:
        for row in self.rows:
            method, shots = row
            for column in [*self.columns, "average"]:
                stat = self.average(row) if column == "average" else self.cells[(row, column)].stat
                role = "source" if column == self.source else ("average" if column == "average" else "target")
                yield _csv_row(column, role, method, shots, stat)

    def write_plot(self, path: str) -> None:
        """Grouped bars: one group per column (source, targets, average), one bar per method, std as error bars."""
        plt = _pyplot()
        columns = [*self.columns, "average"]
        figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(columns) + 2), 4.5))
        width = 0.8 / max(1, len(self.rows))
        for i, row in enumerate(self.rows):
            stats = [self.average(row) if c == "average" else self.cells[(row, c)].stat for c in columns]
            xs = [j + (i - (len(self.rows) - 1) / 2) * width for j in range(len(columns))]
            axes.bar([x for x, s in zip(xs, stats) if s], [s.mean for s in stats if s], width,
                     yerr=[s.std for s in stats if s], capsize=2, label=self.label(row))
        axes.set_xticks(range(len(columns)))
        axes.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
        axes.set_ylabel("accuracy (%)")
        axes.set_title({"xd": "Cross-dataset transfer", "dg": "Domain generalisation"}[self.protocol]
                       + f" (source: {self.source})")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8)
        _save(figure, plt, path)


# --------------------------------------------------------------------------------------------------------
# Few-shot learning


@dataclass
class FewShotTable:
    """Accuracy against shots per dataset and averaged over the datasets; zero-shot CLIP at 0 shots."""

    datasets: list[str]
    methods: list[Method]
    shots: dict  # Method -> sorted shot counts
    cells: dict  # (dataset, Method, shots) -> Cell
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_tree(cls, root: str, datasets: Optional[Sequence[str]] = None,
                  methods: Optional[list] = None) -> "FewShotTable":
        runs = dict(evaluation_only_fewshot_runs(root))
        runs.update(training_runs(root))  # training logs win over evaluation-only runs of the same experiment
        for (dataset, method), r in zero_shot_runs(root).items():
            runs[(dataset, method, 0)] = r
        runs = {key: r for key, r in runs.items() if selected(key[1], methods)
                and (datasets is None or key[0] in datasets)}
        if not runs:
            raise FileNotFoundError(
                f"No finished few-shot run under {root} (expected <dataset>/<trainer>/<config>_<K>shots/seed<S>/ or "
                "ZeroshotCLIP/<config>/<dataset>/)")
        names = list(datasets) if datasets else sorted({key[0] for key in runs}, key=dataset_sort_key)
        series = sorted({key[1] for key in runs}, key=method_sort_key)
        shots = {m: sorted({key[2] for key in runs if key[1] == m}) for m in series}
        table = cls(names, series, shots, {})
        for method in series:
            expected = frozenset(seed for key, r in runs.items() if key[1] == method for seed in r)
            for dataset in names:
                for k in shots[method]:
                    cell = Cell(runs.get((dataset, method, k), {}), expected)
                    table.cells[(dataset, method, k)] = cell
                    table.missing += [f"{table.label(method)}: {dataset} {k} shots {_seed_label(seed)}"
                                      for seed in cell.missing_seeds]
        return table

    def label(self, method: Method) -> str:
        return _label(method, None, self.methods, False)

    def average(self, method: Method, shots: int) -> Optional[Stat]:
        return average_stat([self.cells[(d, method, shots)] for d in self.datasets])

    @property
    def all_shots(self) -> list[int]:
        return sorted({k for ks in self.shots.values() for k in ks})

    def _block(self, title: str, stat_of) -> list[str]:
        columns = self.all_shots
        lines = ["", title, "", "| Method | " + " | ".join(f"{k} shots" if k else "0 (zero-shot)" for k in columns)
                 + " |", "|" + "---|" * (len(columns) + 1)]
        for method in self.methods:
            cells = [_fmt(stat_of(method, k)) if k in self.shots[method] else "" for k in columns]
            lines.append("| " + " | ".join([self.label(method), *cells]) + " |")
        return lines

    def to_markdown(self) -> str:
        lines = ["**Few-shot learning** (all classes; mean ± std over seeds)"]
        if len(self.datasets) > 1:
            lines += self._block(f"**Average over {len(self.datasets)} datasets** ({', '.join(self.datasets)})",
                                 self.average)
        for dataset in self.datasets:
            lines += self._block(f"**{dataset}**", lambda m, k, d=dataset: self.cells[(d, m, k)].stat)
        lines += ["", "A cell '-' lacks a run (named on stderr); an average needs every dataset's cell."]
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> Iterator[dict]:
        for method in self.methods:
            for k in self.shots[method]:
                for dataset in self.datasets:
                    yield _csv_row(dataset, "dataset", method, k, self.cells[(dataset, method, k)].stat)
                if len(self.datasets) > 1:
                    yield _csv_row("average", "average", method, k, self.average(method, k))

    def write_plot(self, path: str) -> None:
        """CoOp's figure: accuracy against shots, one panel per dataset (plus the average); zero-shot CLIP a star
        at 0 shots with a horizontal line, the linear probe dotted, the other methods solid; std as error bars."""
        plt = _pyplot()
        panels = (["average"] if len(self.datasets) > 1 else []) + self.datasets
        cols = min(3, len(panels))
        rows = (len(panels) + cols - 1) // cols
        figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        positions = {k: i for i, k in enumerate(self.all_shots)}
        for ax, panel in zip(axes.flat, panels):
            for method in self.methods:
                stat_of = (lambda k, m=method: self.average(m, k)) if panel == "average" else \
                    (lambda k, m=method, d=panel: self.cells[(d, m, k)].stat)
                points = [(positions[k], stat_of(k)) for k in self.shots[method] if stat_of(k)]
                if not points:
                    continue
                xs, stats = [x for x, _ in points], [s for _, s in points]
                if method.trainer.startswith(ZERO_SHOT):
                    line = ax.plot(xs, [s.mean for s in stats], "*", markersize=12, label=self.label(method))[0]
                    ax.axhline(stats[0].mean, linestyle="--", linewidth=1, color=line.get_color())
                    continue
                style = ":" if method.trainer == "LinearProbeCLIP" else "-"
                ax.errorbar(xs, [s.mean for s in stats], yerr=[s.std for s in stats], fmt=style + "o", markersize=4,
                            capsize=2, label=self.label(method))
            ax.set_xticks(range(len(positions)))
            ax.set_xticklabels([str(k) for k in positions])
            ax.set_title(panel if panel != "average" else f"average over {len(self.datasets)} datasets", fontsize=10)
            ax.set_xlabel("shots per class")
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        _save(figure, plt, path)


# --------------------------------------------------------------------------------------------------------
# Output


CSV_FIELDS = ["dataset", "role", "trainer", "config", "variant", "shots", "mean", "std", "seeds"]


def _csv_row(dataset: str, role: str, method: Method, shots: int, stat: Optional[Stat]) -> dict:
    return {"dataset": dataset, "role": role, "trainer": method.trainer, "config": method.config,
            "variant": method.variant, "shots": shots,
            "mean": "" if stat is None else f"{stat.mean:.4f}", "std": "" if stat is None else f"{stat.std:.4f}",
            "seeds": "" if stat is None else stat.seeds}


def write_csv(table, path: str) -> None:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in table.csv_rows():
        writer.writerow(row)
    write_atomic(path, handle.getvalue().encode("utf-8"))


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("The plot needs matplotlib (a dev dependency): pip install -r requirements-dev.txt, "
                           "or pass --no-plot") from error
    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _save(figure, plt, path: str) -> None:
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, dpi=120, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(figure)
    write_atomic(path, image.getvalue())
