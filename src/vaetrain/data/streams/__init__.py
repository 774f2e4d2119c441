"""Samples in order: the resumable training stream (`resumable`), aspect-ratio buckets (`buckets`),
progressive-resolution phases (`schedule`), WebDataset streams (`webdataset`), decoded datasets and
batching (`decoded`), and the one seeding rule they share (`seeding`)."""
