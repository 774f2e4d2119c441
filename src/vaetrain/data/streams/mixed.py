"""Joint image + video training (`data.image_ratio`): a fraction of the micro-batches hold images, read as
one-frame clips (B, C, 1, H, W: what a causal video VAE makes of a clip's first frame), the others clips.

Which micro-batches hold images depends on the batch's number alone: batch n of all processes is an image
batch when floor((n + 1) r) > floor(n r), so images come evenly spread, r of all batches, and before batch
n there were exactly floor(n r) image batches. Each kind's stream position follows in closed form, so a run
resumed anywhere reads exactly what an uninterrupted run read, with any number of loader workers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from vaetrain.data.sources.spec import StreamLayout
from vaetrain.data.streams.resumable import ResumableImageStream


def is_image_batch(number: int, ratio: float) -> bool:
    return math.floor((number + 1) * ratio) > math.floor(number * ratio)


def image_batches_before(number: int, ratio: float) -> int:
    return math.floor(number * ratio)


class MixedStream(IterableDataset):
    """Whole micro-batches (lists of samples; the DataLoader runs with batch_size=None) of this rank from
    `clips` and `images` (both `ResumableImageStream`s read by global position), starting after
    `layout.start_sample` samples of all processes together."""

    def __init__(self, clips: ResumableImageStream, images: ResumableImageStream, ratio: float, layout: StreamLayout) -> None:
        super().__init__()
        self.clips, self.images, self.ratio = clips, images, ratio
        self.micro_batch, self.rank, self.world_size = layout.batch_size, layout.rank, layout.world_size
        self.start_batch = layout.start_sample // (layout.world_size * layout.batch_size)

    def __iter__(self) -> Iterator[list[dict]]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for number in itertools.count(self.start_batch + worker_id, num_workers):
            yield self.batch(number)

    def batch(self, number: int) -> list[dict]:
        """Micro-batch `number` of this rank."""
        images = is_image_batch(number, self.ratio)
        before = image_batches_before(number, self.ratio)
        stream, index = (self.images, before) if images else (self.clips, number - before)
        base = index * self.world_size * self.micro_batch
        samples = [stream.sample_at_global(base + i * self.world_size + self.rank) for i in range(self.micro_batch)]
        return [_one_frame(sample) for sample in samples] if images else samples


def _one_frame(sample: dict) -> dict:
    image = sample.get("pixels")
    return sample | {"pixels": image.unsqueeze(1)} if image is not None else sample
