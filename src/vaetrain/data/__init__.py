"""Images in, [-1, 1] tensors out: sources (`SourceSpec`, `open_source`: folders, file lists, Hugging Face
datasets, WebDataset shards), robust decoding, transforms, the resumable training stream, the
LightningDataModule, and `evaluation_samples` for commands that only read images.

May import: `vaetrain.errors` and third-party packages only (never models, losses, checkpoints, evaluation,
training, export or the command line).
"""

from vaetrain.data.datamodule import SampleDataModule
from vaetrain.data.decoding.decode import BadImage, decode_image
from vaetrain.data.decoding.samples import DecodeOptions, SampleDecoder, build_decoder
from vaetrain.data.decoding.transforms import image_transform
from vaetrain.data.quality import BadFileTracker, TooManyBadFiles
from vaetrain.data.sample_sets import SampleSet, evaluation_samples, open_source, pixels_of, sample_loader
from vaetrain.data.sources.folders import IMAGE_EXTENSIONS, list_images, sample_images_dir, split_train_val
from vaetrain.data.sources.records import FileRecords, HuggingFaceRecords, folder_files, load_hf_records
from vaetrain.data.sources.spec import SampleSource, SourceSpec, StreamLayout
from vaetrain.data.streams.decoded import DecodedImages, collate_samples
from vaetrain.data.streams.resumable import ResumableImageStream
from vaetrain.data.streams.webdataset import WebDatasetStream, expand_shards

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadFileTracker",
    "BadImage",
    "DecodeOptions",
    "DecodedImages",
    "FileRecords",
    "HuggingFaceRecords",
    "ResumableImageStream",
    "SampleDataModule",
    "SampleDecoder",
    "SampleSet",
    "SampleSource",
    "SourceSpec",
    "StreamLayout",
    "TooManyBadFiles",
    "WebDatasetStream",
    "build_decoder",
    "collate_samples",
    "decode_image",
    "evaluation_samples",
    "expand_shards",
    "folder_files",
    "image_transform",
    "list_images",
    "load_hf_records",
    "open_source",
    "pixels_of",
    "sample_images_dir",
    "sample_loader",
    "split_train_val",
]
