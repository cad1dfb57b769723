import os
from typing import List

from dassl.data.datasets import DATASET_REGISTRY, Datum
from scipy.io import loadmat

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    dataset_dir = "stanford_cars"
    image_dir_name = ""  # split paths are relative to the dataset folder: cars_train/..., cars_test/...
    split_file = "split_zhou_StanfordCars.json"
    required = ("cars_train", "cars_test")
    raw_files = ("devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat", "devkit/cars_meta.mat")

    def build_split(self):
        meta_file = os.path.join(self.dataset_dir, "devkit", "cars_meta.mat")
        trainval = self.read_data("cars_train", os.path.join(self.dataset_dir, "devkit", "cars_train_annos.mat"), meta_file)
        test = self.read_data("cars_test", os.path.join(self.dataset_dir, "cars_test_annos_withlabels.mat"), meta_file)
        train, val = splits.split_trainval(trainval)
        return train, val, test

    def read_data(self, image_dir: str, anno_file: str, meta_file: str) -> List[Datum]:
        """Annotations `fname` + 1-based `class`; class names from the devkit with the year moved to the front."""
        annotations = loadmat(anno_file)["annotations"][0]
        class_names = loadmat(meta_file)["class_names"][0]
        items = []
        for anno in annotations:
            impath = os.path.join(self.dataset_dir, image_dir, anno["fname"][0])
            label = int(anno["class"][0, 0]) - 1
            words = class_names[label][0].split(" ")
            classname = " ".join([words[-1]] + words[:-1])
            items.append(Datum(impath=impath, label=label, classname=classname))
        return items
