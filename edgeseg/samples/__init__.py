"""Synthetic fluorescence microscopy with exact ground truth, as stills, data sets or a stream.

Light to import: OpenCV and tifffile are imported when images are made.
"""

from edgeseg.samples.synthetic import (
    SynthConfig,
    SyntheticStream,
    generate,
    generate_labelled,
    generate_labelled_sample,
    generate_sample,
    write_dataset,
)

__all__ = [
    "SynthConfig",
    "SyntheticStream",
    "generate",
    "generate_labelled",
    "generate_labelled_sample",
    "generate_sample",
    "write_dataset",
]
