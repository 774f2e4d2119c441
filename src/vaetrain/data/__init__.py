"""Images in, [-1, 1] tensors out: sources, transforms, the resumable stream and the LightningDataModule."""

from vaetrain.data.datamodule import ImageDataModule
from vaetrain.data.folder import IMAGE_EXTENSIONS, ImageFileDataset, list_images, sample_images_dir, split_train_val
from vaetrain.data.stream import ResumableImageStream
from vaetrain.data.transforms import image_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataModule",
    "ImageFileDataset",
    "ResumableImageStream",
    "image_transform",
    "list_images",
    "sample_images_dir",
    "split_train_val",
]
