"""The ImageNet test-only variants (ImageNetV2, -Sketch, -A, -R): every image is both train_x and test, with
no val, no few-shot sampling and no class subsampling (DATASET.SUBSAMPLE_CLASSES is ignored), as officially.
Each needs a copy of ImageNet's `classnames.txt` in its folder."""
import os
from typing import Dict, List

from dassl.data.datasets import Datum, DatasetBase
from dassl.utils import listdir_nohidden

from .layout import DatasetLayout, missing_paths
from .imagenet import classname_of, read_classnames


class ImageNetVariant(DatasetLayout, DatasetBase):
    image_dir_name = ""  # image folder inside it
    ignored: tuple = ()  # entries of the image folder that are not classes

    def __init__(self, cfg):
        dataset_dir = self.locate(cfg)
        self.require_layout(dataset_dir)
        self.dataset_dir = dataset_dir
        self.image_dir = os.path.join(dataset_dir, self.image_dir_name)
        text_file = os.path.join(dataset_dir, "classnames.txt")
        data = self.read_data(read_classnames(text_file), text_file)
        super().__init__(train_x=data, test=data)

    @classmethod
    def missing_pieces(cls, dataset_dir: str) -> List[str]:
        if not os.path.isdir(dataset_dir):
            return [f"dataset folder {dataset_dir}"]
        return missing_paths(dataset_dir, (cls.image_dir_name, "classnames.txt"))

    def read_data(self, classnames: Dict[str, str], text_file: str) -> List[Datum]:
        """Label = index of the class folder among the sorted folders (minus `ignored`)."""
        folders = [f for f in listdir_nohidden(self.image_dir, sort=True) if f not in self.ignored]
        items = []
        for label, folder in enumerate(folders):
            classname = classname_of(classnames, folder, text_file)
            folder_dir = os.path.join(self.image_dir, folder)
            items.extend(
                Datum(impath=os.path.join(folder_dir, imname), label=label, classname=classname)
                for imname in listdir_nohidden(folder_dir)
            )
        return items
