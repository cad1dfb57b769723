from dassl.data.datasets import DATASET_REGISTRY

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    dataset_dir = "dtd"
    image_dir_name = "images"
    split_file = "split_zhou_DescribableTextures.json"
    required = ("images",)

    # Reachable as `DTD.read_and_split_data(...)`, as other repositories' dataset files call it.
    read_and_split_data = staticmethod(splits.read_and_split_data)

    def build_split(self):
        return splits.read_and_split_data(self.image_dir)
