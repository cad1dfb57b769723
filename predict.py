"""Classify images with a trained prompt-learning run (or zero-shot CLIP): top-k class names with probabilities.

Examples:
  python predict.py --model-dir output/base2new/train_base/caltech101/shots_16/PromptSRC/<cfg>/seed1 photo.jpg
  python predict.py --model-dir RUN --classnames classes.txt --topk 3 --csv predictions.csv images/
  python predict.py --zero-shot --classnames "cat,dog,bird" photo.jpg

IMAGES are image files and folders (searched recursively for image files). Class names: --classnames (a text
file with one name per line, or a comma-separated list), else the classes of --dataset-config-file, else
those of the run's own dataset (its data must then be under DATASET.ROOT; override with --root).
"""
import argparse
import csv
import io
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

from dassl.utils import write_text_atomic
from dassl.utils.errors import UsageError, run_command

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="output folder of a train.py run, or one of its checkpoint files")
    source.add_argument("--zero-shot", action="store_true", help="zero-shot CLIP (no training)")
    parser.add_argument("--classnames", help="file with one class name per line, or a comma-separated list")
    parser.add_argument("--dataset-config-file", default="",
                        help="take the class names (and, for --zero-shot, the prompt template) from this dataset")
    parser.add_argument("--root", default="", help="dataset root for --dataset-config-file or the run's dataset")
    parser.add_argument("--config-file", default="",
                        help="trainer config: for runs without config.yaml, or the zero-shot backbone "
                             "(default configs/trainers/CoOp/vit_b16.yaml)")
    parser.add_argument("--trainer", default="", help="trainer name, with --config-file for runs without config.yaml")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module the run was trained with (train.py --import): a trainer file of its own")
    parser.add_argument("--epoch", type=int, help="checkpoint epoch (default: the one saved last)")
    parser.add_argument("--topk", type=int, default=5, help="number of classes printed per image (default 5)")
    parser.add_argument("--csv", help="also write image,rank,classname,probability rows to this CSV file")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--verbose", action="store_true", help="show the model-building log")
    parser.add_argument("--opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="config override, repeatable (e.g. --opt TRAINER.PROMPTSRC.PREC fp32)")
    return parser


def read_classnames(spec: str) -> List[str]:
    """Names from a file (one per line, blank lines skipped) when `spec` is a file, else a comma-separated list."""
    if osp.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise UsageError(f"the class-name file {spec} is empty; write one class name per line")
        return names
    return [name.strip() for name in spec.split(",")]


def collect_images(paths: Sequence[str]) -> List[str]:
    """Image files in the order given; the image files of folders, sorted, recursively."""
    images = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(osp.join(folder, name) for folder, _, names in os.walk(path) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise UsageError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder {path}")
            images.extend(found)
        elif osp.isfile(path):
            images.append(path)
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")
    return images


def load_classifier(args: argparse.Namespace):
    import api

    classnames: Optional[List[str]] = read_classnames(args.classnames) if args.classnames else None
    opts = [item for pair in args.opt for item in pair]
    if args.root:
        opts += ["DATASET.ROOT", args.root]
    if args.cpu:
        opts += ["USE_CUDA", "False"]
    if args.zero_shot:
        if classnames is None and not args.dataset_config_file:
            raise UsageError("--zero-shot needs --classnames or --dataset-config-file")
        if classnames is None:
            cfg = api.build_config(args.config_file or api.ZERO_SHOT_CONFIG, args.dataset_config_file, opts)
            classnames = api.dataset_classnames(cfg, args.verbose)
        return api.zero_shot_clip(classnames, config_file=args.config_file or api.ZERO_SHOT_CONFIG,
                                  dataset_config_file=args.dataset_config_file, opts=opts, verbose=args.verbose)
    if classnames is None and args.dataset_config_file:
        cfg = api.build_config(args.config_file, args.dataset_config_file, opts)
        classnames = api.dataset_classnames(cfg, args.verbose)
    return api.load_prompted_clip(args.model_dir, classnames, epoch=args.epoch, config_file=args.config_file,
                                  dataset_config_file=args.dataset_config_file if args.config_file else "",
                                  trainer=args.trainer, opts=opts, imports=args.imports, verbose=args.verbose)


def predict(classifier, images: Sequence[str], topk: int) -> List[Tuple[str, List[Tuple[str, float]]]]:
    return list(zip(images, classifier.classify(list(images), topk=topk)))


def write_csv(path: str, results) -> None:
    """One row per (image, rank); written atomically so an interrupted run never leaves a partial table."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["image", "rank", "classname", "probability"])
    for image, ranked in results:
        for rank, (name, prob) in enumerate(ranked, start=1):
            writer.writerow([image, rank, name, f"{prob:.6f}"])
    write_text_atomic(path, buffer.getvalue())


def check_csv_path(path: str) -> None:
    """Refuse a --csv path that cannot be written before any work is done."""
    if osp.isdir(path):
        raise UsageError(f"--csv {path} is a folder; give a file name, e.g. {osp.join(path, 'predictions.csv')}")
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise UsageError(f"--csv {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--csv {path}: the folder {folder} is not writable; choose another path")


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1; got {args.topk}")
    if args.zero_shot and args.epoch is not None:
        raise UsageError("--epoch has no effect with --zero-shot (nothing was trained); drop it")
    if args.csv:
        check_csv_path(args.csv)
    images = collect_images(args.images)
    classifier = load_classifier(args)
    results = predict(classifier, images, args.topk)
    for image, ranked in results:
        print(f"{image}: " + ", ".join(f"{name} ({prob:.3f})" for name, prob in ranked))
    if args.csv:
        write_csv(args.csv, results)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit status 0; a user error ends the process with one line `predict.py: error: ...` and status 2."""
    args = build_parser().parse_args(argv)
    return run_command("predict.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
