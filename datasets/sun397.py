import os
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class SUN397(BenchmarkDataset):
    dataset_dir = "sun397"
    image_dir_name = "SUN397"
    split_file = "split_zhou_SUN397.json"
    required = ("SUN397",)
    raw_files = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")

    def build_split(self):
        with open(os.path.join(self.dataset_dir, "ClassName.txt")) as f:
            classnames = [line.strip()[1:] for line in f]  # lines start with "/"
        cname2lab = {c: i for i, c in enumerate(classnames)}
        trainval = self.read_data(cname2lab, "Training_01.txt")
        test = self.read_data(cname2lab, "Testing_01.txt")
        train, val = splits.split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab: Dict[str, int], text_file: str) -> List[Datum]:
        """Lines `/a/apartment_building/outdoor/sun_x.jpg`; the class name drops the letter folder and reverses
        the rest ("outdoor apartment_building")."""
        items = []
        with open(os.path.join(self.dataset_dir, text_file)) as f:
            for line in f:
                imname = line.strip()[1:]
                folder = os.path.dirname(imname)
                classname = " ".join(folder.split("/")[1:][::-1])
                impath = os.path.join(self.image_dir, imname)
                items.append(Datum(impath=impath, label=cname2lab[folder], classname=classname))
        return items
