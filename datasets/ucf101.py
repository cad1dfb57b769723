import os
import re
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum

from . import splits
from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    dataset_dir = "ucf101"
    image_dir_name = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    required = ("UCF-101-midframes",)
    raw_files = ("ucfTrainTestlist/classInd.txt", "ucfTrainTestlist/trainlist01.txt", "ucfTrainTestlist/testlist01.txt")

    def build_split(self):
        cname2lab = {}
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", "classInd.txt")) as f:
            for line in f:
                label, classname = line.strip().split(" ")
                cname2lab[classname] = int(label) - 1
        trainval = self.read_data(cname2lab, "trainlist01.txt")
        test = self.read_data(cname2lab, "testlist01.txt")
        train, val = splits.split_trainval(trainval)
        return train, val, test

    def read_data(self, cname2lab: Dict[str, int], text_file: str) -> List[Datum]:
        """Lines `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi [label]`; the middle frame lives at
        `Apply_Eye_Makeup/v_ApplyEyeMakeup_g08_c01.jpg` and the class name is `Apply_Eye_Makeup`."""
        items = []
        with open(os.path.join(self.dataset_dir, "ucfTrainTestlist", text_file)) as f:
            for line in f:
                action, filename = line.strip().split(" ")[0].split("/")
                renamed_action = "_".join(re.findall("[A-Z][^A-Z]*", action))
                impath = os.path.join(self.image_dir, renamed_action, filename.replace(".avi", ".jpg"))
                items.append(Datum(impath=impath, label=cname2lab[action], classname=renamed_action))
        return items
