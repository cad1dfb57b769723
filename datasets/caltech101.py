from dassl.data.datasets import DATASET_REGISTRY

from . import splits
from .benchmark import BenchmarkDataset

IGNORED = ["BACKGROUND_Google", "Faces_easy"]
NEW_CNAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    dataset_dir = "caltech-101"
    image_dir_name = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    required = ("101_ObjectCategories",)

    def build_split(self):
        return splits.read_and_split_data(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
