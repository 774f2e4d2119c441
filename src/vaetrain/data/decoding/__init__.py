"""Bytes to [-1, 1] tensors: 8-bit images (`decode`), 16-bit, TIFF, N-band and .npy arrays (`arrays`), the
pixel format and its normalisation (`pixels`), crops and flips (`transforms`), and one sample's decoder
(`samples`)."""
