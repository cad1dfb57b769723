import os
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset

SPLIT_FILES = ("images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    """The official train/val/test lists of fgvc-aircraft-2013b are the split (no JSON)."""

    dataset_dir = "fgvc_aircraft"
    image_dir_name = "images"
    required = ("images", "variants.txt") + SPLIT_FILES

    def load_splits(self):
        with open(os.path.join(self.dataset_dir, "variants.txt")) as f:
            cname2lab = {line.strip(): i for i, line in enumerate(f)}
        train, val, test = (self.read_data(cname2lab, name) for name in SPLIT_FILES)
        return train, val, test

    def read_data(self, cname2lab: Dict[str, int], split_file: str) -> List[Datum]:
        """Lines `<image id> <variant words...>`; the image is `images/<id>.jpg`, the class the variant."""
        items = []
        with open(os.path.join(self.dataset_dir, split_file)) as f:
            for line in f:
                words = line.strip().split(" ")
                classname = " ".join(words[1:])
                impath = os.path.join(self.image_dir, words[0] + ".jpg")
                items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        return items
