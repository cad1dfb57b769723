from dassl.data.datasets import DATASET_REGISTRY

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    dataset_dir = "food-101"
    image_dir_name = "images"
    split_file = "split_zhou_Food101.json"
    required = ("images",)

    def build_split(self):
        return splits.read_and_split_data(self.image_dir)
