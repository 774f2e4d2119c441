"""Images in, [-1, 1] tensors out: sources, robust decoding, transforms, the resumable stream and the
LightningDataModule."""

from vaetrain.data.datamodule import ImageDataModule, images_of
from vaetrain.data.dataset import DecodedImages, DecodeOptions, SampleDecoder, collate_samples
from vaetrain.data.decode import BadImage, decode_image
from vaetrain.data.folder import IMAGE_EXTENSIONS, list_images, sample_images_dir, split_train_val
from vaetrain.data.quality import BadFileTracker, TooManyBadFiles
from vaetrain.data.records import FileRecords, HuggingFaceRecords, folder_files, load_hf_records
from vaetrain.data.stream import ResumableImageStream
from vaetrain.data.transforms import image_transform
from vaetrain.data.webdataset_stream import WebDatasetStream, expand_shards

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadFileTracker",
    "BadImage",
    "DecodeOptions",
    "DecodedImages",
    "FileRecords",
    "HuggingFaceRecords",
    "ImageDataModule",
    "ResumableImageStream",
    "SampleDecoder",
    "WebDatasetStream",
    "expand_shards",
    "TooManyBadFiles",
    "collate_samples",
    "decode_image",
    "folder_files",
    "image_transform",
    "images_of",
    "list_images",
    "load_hf_records",
    "sample_images_dir",
    "split_train_val",
]
