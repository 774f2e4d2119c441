"""Samples in order: the resumable training stream (`resumable`), aspect-ratio buckets (`buckets`),
progressive-resolution phases (`schedule`), mixed clip lengths (`clip_lengths`), WebDataset streams (`webdataset`), decoded datasets and
batching (`decoded`), and the one seeding rule they share (`seeding`)."""
