from dassl.data.datasets import DATASET_REGISTRY

from .imagenet_variant import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    image_dir_name = "imagenet-r"
    ignored = ("README.txt",)
