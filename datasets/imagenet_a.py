from dassl.data.datasets import DATASET_REGISTRY

from .imagenet_variant import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    image_dir_name = "imagenet-a"
    ignored = ("README.txt",)
