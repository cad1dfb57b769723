from dassl.data.datasets import DATASET_REGISTRY

from . import splits
from .benchmark import BenchmarkDataset

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    dataset_dir = "eurosat"
    image_dir_name = "2750"
    split_file = "split_zhou_EuroSAT.json"
    required = ("2750",)

    def build_split(self):
        return splits.read_and_split_data(self.image_dir, new_cnames=NEW_CNAMES)
