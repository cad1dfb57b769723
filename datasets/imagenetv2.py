import os
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from .imagenet_variant import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """Class folders are named `0`..`999`; folder `i` is the i-th line of `classnames.txt`."""

    dataset_dir = "imagenetv2"
    image_dir_name = "imagenetv2-matched-frequency-format-val"

    def read_data(self, classnames: Dict[str, str], text_file: str) -> List[Datum]:
        names = list(classnames.values())
        items = []
        # The class count is fixed by the dataset (PROTOCOL.md §8 item 24), not read from the folder.
        for label in range(1000):
            class_dir = os.path.join(self.image_dir, str(label))
            items.extend(
                Datum(impath=os.path.join(class_dir, imname), label=label, classname=names[label])
                for imname in listdir_nohidden(class_dir)
            )
        return items
