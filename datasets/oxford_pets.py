import os
from typing import List

from dassl.data.datasets import DATASET_REGISTRY, Datum

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    dataset_dir = "oxford_pets"
    image_dir_name = "images"
    split_file = "split_zhou_OxfordPets.json"
    required = ("images",)
    raw_files = ("annotations/trainval.txt", "annotations/test.txt")

    # The official code hosts the shared split helpers here; other repositories' dataset files call them
    # as `OxfordPets.read_split(...)` etc., so they stay reachable under these names.
    read_split = staticmethod(splits.read_split)
    save_split = staticmethod(splits.save_split)
    split_trainval = staticmethod(splits.split_trainval)
    subsample_classes = staticmethod(splits.subsample_classes)

    def build_split(self):
        trainval = self.read_data("trainval.txt")
        test = self.read_data("test.txt")
        train, val = splits.split_trainval(trainval)
        return train, val, test

    def read_data(self, split_file: str) -> List[Datum]:
        """Lines `<image stem> <class id, 1-based> <species> <breed id>`; the breed is the stem minus `_<n>`."""
        items = []
        with open(os.path.join(self.dataset_dir, "annotations", split_file)) as f:
            for line in f:
                imname, label, _species, _breed_id = line.strip().split(" ")
                breed = "_".join(imname.split("_")[:-1]).lower()
                impath = os.path.join(self.image_dir, imname + ".jpg")
                items.append(Datum(impath=impath, label=int(label) - 1, classname=breed))
        return items
