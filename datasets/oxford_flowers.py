import os
import random
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import read_json
from scipy.io import loadmat

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    dataset_dir = "oxford_flowers"
    image_dir_name = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    required = ("jpg",)
    raw_files = ("imagelabels.mat", "cat_to_name.json")

    def build_split(self):
        """`imagelabels.mat` labels (1-based; image i is image_{i+1:05d}.jpg), 50/20/30 per label in label
        first-appearance order; names from `cat_to_name.json` keyed by the 1-based label."""
        tracker = defaultdict(list)
        for i, label in enumerate(loadmat(os.path.join(self.dataset_dir, "imagelabels.mat"))["labels"][0]):
            tracker[int(label)].append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))

        print("Splitting data into 50% train, 20% val, and 30% test")
        lab2cname = read_json(os.path.join(self.dataset_dir, "cat_to_name.json"))
        train, val, test = [], [], []
        for label, impaths in tracker.items():
            random.shuffle(impaths)
            n_train, n_val, n_test = splits.split_counts(len(impaths), 0.5, 0.2)
            if min(n_train, n_val, n_test) <= 0:
                raise ValueError(f"OxfordFlowers label {label} has too few images ({len(impaths)}) to split 50/20/30.")
            cname = lab2cname[str(label)]
            parts = ((train, impaths[:n_train]), (val, impaths[n_train:n_train + n_val]), (test, impaths[n_train + n_val:]))
            for part, ims in parts:
                part.extend(Datum(impath=im, label=label - 1, classname=cname) for im in ims)
        return train, val, test
