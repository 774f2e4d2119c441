"""Where images come from: a `SourceSpec` (`spec`) names a collection; `RecordImages` (`record_images`:
folders and file lists from `folders`, Hugging Face datasets, read through `records`) and `ShardImages`
(`shard_images`: WebDataset tar shards) read it behind the one `SampleSource` interface."""
