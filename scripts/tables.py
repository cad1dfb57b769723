"""Protocol views of an output tree: the base-to-novel table (Markdown, CSV) and its plot.

Tree read (the scripts' layout, PROTOCOL.md §5.1):
``<root>/{train_base,test_base,test_new}/<dataset>/shots_<K>/<trainer>/<config>/seed<S>/log.txt``.
Base accuracy comes from ``train_base`` (the final test of training), or from ``test_base`` for
experiments that were only evaluated (``reproduce.sh``, zero-shot CLIP); novel accuracy from ``test_new``.
HM is 2·B·N/(B+N) of the seed means; the average row uses the averaged B and N, as the papers do.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import Optional

from scripts.logs import collect_runs, mean, spread, visible_subdirs
from scripts.protocols import METHOD_ORDER

# The papers' dataset order; other datasets (e.g. demo) follow alphabetically.
PAPER_ORDER = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)


# 11-dataset averages (base, novel, HM) published in the MaPLe and PromptSRC READMEs (PROTOCOL.md §7),
# keyed by the (trainer, config) that produces them with these scripts.
PUBLISHED = {
    ("ZeroshotCLIP", "vit_b16"): (69.34, 74.22, 71.70),
    ("CoOp", "vit_b16"): (82.69, 63.22, 71.66),
    ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1"): (80.47, 71.69, 75.83),
    ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx"): (82.28, 75.14, 78.55),
    ("VPT", "vit_b16_c2_ep5_batch4_4"): (80.24, 73.43, 76.68),
    ("IVLP", "vit_b16_c2_ep5_batch4_4ctx_language_only"): (81.72, 73.81, 77.56),
    ("IVLP", "vit_b16_c2_ep5_batch4_2+2ctx"): (82.15, 74.07, 77.90),
    ("IVLP", "vit_b16_c2_ep20_batch4_4+4ctx"): (84.21, 71.79, 77.51),
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx"): (84.26, 76.10, 79.97),
}


@dataclass(frozen=True)
class Method:
    trainer: str
    config: str
    shots: str


@dataclass(frozen=True)
class Stat:
    """Mean and population std of one metric over the seeds that finished."""

    mean: float
    std: float
    seeds: int


@dataclass(frozen=True)
class Average:
    base: float
    novel: float
    hm: float
    datasets: int


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel > 0 else 0.0


def scan_split(split_dir: str, keyword: str, test_log: bool) -> dict[tuple[str, Method], Stat]:
    """Seed statistics of every ``<dataset>/shots_<K>/<trainer>/<config>`` experiment under ``split_dir``."""
    stats: dict[tuple[str, Method], Stat] = {}
    if not os.path.isdir(split_dir):
        return stats
    for dataset in visible_subdirs(split_dir):
        for shots_dir in visible_subdirs(os.path.join(split_dir, dataset)):
            shots = shots_dir[len("shots_"):] if shots_dir.startswith("shots_") else shots_dir
            for trainer in visible_subdirs(os.path.join(split_dir, dataset, shots_dir)):
                for config in visible_subdirs(os.path.join(split_dir, dataset, shots_dir, trainer)):
                    exp_dir = os.path.join(split_dir, dataset, shots_dir, trainer, config)
                    values = [run.value for run in collect_runs(exp_dir, keyword, test_log)]
                    if values:
                        stats[(dataset, Method(trainer, config, shots))] = Stat(mean(values), spread(values), len(values))
    return stats


def paper_order_key(order: tuple[str, ...], name: str) -> tuple[int, str]:
    """Sort key: the names of ``order`` in that order, then every other name alphabetically."""
    return (order.index(name), "") if name in order else (len(order), name)


def dataset_sort_key(name: str) -> tuple[int, str]:
    return paper_order_key(PAPER_ORDER, name)


def method_sort_key(method: Method) -> tuple[int, str, str, str]:
    return (*paper_order_key(METHOD_ORDER, method.trainer), method.config, method.shots)


class Base2NewTable:
    """Base, novel and HM per (dataset, method), plus per-method averages."""

    def __init__(self, base: dict[tuple[str, Method], Stat], novel: dict[tuple[str, Method], Stat]):
        self.base = base
        self.novel = novel
        keys = set(base) | set(novel)
        self.datasets = sorted({dataset for dataset, _ in keys}, key=dataset_sort_key)
        self.methods = sorted({method for _, method in keys}, key=method_sort_key)

    @classmethod
    def from_tree(cls, root: str, keyword: str = "accuracy") -> "Base2NewTable":
        """Read ``root`` (e.g. ``output/base2new``); raises if it holds no finished run."""
        base = scan_split(os.path.join(root, "test_base"), keyword, test_log=True)
        # Training logs win over evaluation-only base results of the same experiment.
        base.update(scan_split(os.path.join(root, "train_base"), keyword, test_log=False))
        novel = scan_split(os.path.join(root, "test_new"), keyword, test_log=True)
        if not base and not novel:
            raise FileNotFoundError(
                f"No finished base-to-novel run under {root} (expected train_base/, test_base/ or test_new/ "
                "with <dataset>/shots_<K>/<trainer>/<config>/seed<S>/log.txt)"
            )
        return cls(base, novel)

    def hm(self, dataset: str, method: Method) -> Optional[float]:
        base, novel = self.base.get((dataset, method)), self.novel.get((dataset, method))
        return harmonic_mean(base.mean, novel.mean) if base and novel else None

    def average(self, method: Method) -> Optional[Average]:
        """Averages over the datasets that have both a base and a novel result for ``method``."""
        complete = [d for d in self.datasets if (d, method) in self.base and (d, method) in self.novel]
        if not complete:
            return None
        base = mean([self.base[(d, method)].mean for d in complete])
        novel = mean([self.novel[(d, method)].mean for d in complete])
        return Average(base, novel, harmonic_mean(base, novel), len(complete))

    def label(self, method: Method) -> str:
        """The trainer name, qualified by config / shots only where the table needs them to tell methods apart."""
        label = method.trainer
        if len({m.config for m in self.methods if m.trainer == method.trainer}) > 1:
            label += f"/{method.config}"
        if len({m.shots for m in self.methods}) > 1:
            label += f" ({method.shots} shots)"
        return label


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def to_markdown(table: Base2NewTable) -> str:
    header = ["Dataset"]
    for method in table.methods:
        label = table.label(method)
        header += [f"{label} Base", f"{label} Novel", f"{label} HM"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in table.datasets:
        cells = [dataset]
        for method in table.methods:
            base, novel = table.base.get((dataset, method)), table.novel.get((dataset, method))
            cells += [_fmt(base.mean if base else None), _fmt(novel.mean if novel else None),
                      _fmt(table.hm(dataset, method))]
        lines.append("| " + " | ".join(cells) + " |")
    average_cells, published_cells = ["**Average**"], ["Published (11 datasets)"]
    for method in table.methods:
        avg = table.average(method)
        average_cells += [_fmt(avg.base), _fmt(avg.novel), _fmt(avg.hm)] if avg else ["-"] * 3
        published = PUBLISHED.get((method.trainer, method.config)) if method.shots == "16" else None
        published_cells += [_fmt(v) for v in published] if published else ["-"] * 3
    lines.append("| " + " | ".join(average_cells) + " |")
    if any(cell != "-" for cell in published_cells[1:]):
        lines.append("| " + " | ".join(published_cells) + " |")
    lines.append("")
    lines.append("Cells are means over seeds (population std and seed counts in the CSV). HM = 2·B·N/(B+N); the "
                 "average row averages B and N over the datasets with both results, then takes their HM.")
    lines += _methods_as_rows(table)
    return "\n".join(lines) + "\n"


def _stat_cell(stat: Optional[Stat]) -> str:
    return "-" if stat is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


def _methods_as_rows(table: Base2NewTable) -> list[str]:
    """The MaPLe paper's Table 1 layout: one block per dataset, one row per method (zero-shot CLIP first), with
    mean ± population std over seeds."""
    lines = []
    for dataset in table.datasets:
        lines += ["", f"**{dataset}** (mean ± std over seeds)", "", "| Method | Base | Novel | HM |", "|---|---|---|---|"]
        for method in table.methods:
            base, novel = table.base.get((dataset, method)), table.novel.get((dataset, method))
            if base is None and novel is None:
                continue
            lines.append(f"| {table.label(method)} | {_stat_cell(base)} | {_stat_cell(novel)} | "
                         f"{_fmt(table.hm(dataset, method))} |")
    return lines


CSV_FIELDS = ["dataset", "trainer", "config", "shots", "base", "base_std", "base_seeds",
              "novel", "novel_std", "novel_seeds", "hm"]


def write_atomic(path: str, data: bytes) -> None:
    # imported here: `dassl` pulls in torch, which reading logs and printing tables do not need
    from dassl.utils.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)


def write_csv(table: Base2NewTable, path: str) -> None:
    """One row per (dataset, method) and one ``average`` row per method; empty cells where a result is missing."""
    def number(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.4f}"

    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for method in table.methods:
        for dataset in table.datasets:
            base, novel = table.base.get((dataset, method)), table.novel.get((dataset, method))
            if base is None and novel is None:
                continue
            writer.writerow({
                "dataset": dataset, "trainer": method.trainer, "config": method.config, "shots": method.shots,
                "base": number(base.mean if base else None), "base_std": number(base.std if base else None),
                "base_seeds": base.seeds if base else "",
                "novel": number(novel.mean if novel else None), "novel_std": number(novel.std if novel else None),
                "novel_seeds": novel.seeds if novel else "",
                "hm": number(table.hm(dataset, method)),
            })
        avg = table.average(method)
        if avg is not None:
            writer.writerow({
                "dataset": "average", "trainer": method.trainer, "config": method.config, "shots": method.shots,
                "base": number(avg.base), "novel": number(avg.novel), "hm": number(avg.hm),
                "base_seeds": "", "novel_seeds": "", "base_std": "", "novel_std": "",
            })
    # the table is complete in memory, then replaces any previous file in one step
    write_atomic(path, handle.getvalue().encode("utf-8"))


def plot_series(table: Base2NewTable) -> list[tuple[Method, list[tuple[float, float]], Average]]:
    """What the plot draws, in drawing and legend order (the table's, zero-shot CLIP first): for each method with
    a complete dataset, its (base, novel) points per dataset and its average."""
    series = []
    for method in table.methods:
        points = [(table.base[(d, method)].mean, table.novel[(d, method)].mean) for d in table.datasets
                  if (d, method) in table.base and (d, method) in table.novel]
        if points:
            series.append((method, points, table.average(method)))
    return series


def write_plot(table: Base2NewTable, path: str) -> None:
    """Base (x) against novel (y) accuracy: one colour per method, small dots per dataset, a large marker for the average."""
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError(
            "The plot needs matplotlib (a dev dependency): pip install -r requirements-dev.txt, "
            "or pass --no-plot"
        ) from error
    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    for method, points, avg in plot_series(table):
        line = axes.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.5)
        axes.scatter([avg.base], [avg.novel], s=90, marker="D", color=line.get_facecolor()[0],
                     label=f"{table.label(method)} (HM {avg.hm:.2f})")
    axes.set_xlabel("base accuracy (%)")
    axes.set_ylabel("novel accuracy (%)")
    axes.set_title("Base-to-novel generalisation")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, dpi=120, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(figure)
    write_atomic(path, image.getvalue())
