"""`edgeseg segment`: archives (image folders, TIFF stacks, Zarr arrays) segmented on Dask.

The same converted model and the same :class:`~edgeseg.core.segmenter.Segmenter` as
`edgeseg run`, spread over a Dask cluster (a local one by default). Modules:

- :mod:`~edgeseg.batch.inputs`: what the INPUT arguments name (files and their frames, Zarr
  arrays and their axes, from OME metadata or ``--axes``);
- :mod:`~edgeseg.batch.chunks`: the block plan of an array (cores, overlapping halos), the
  links between objects of neighbouring blocks, union-find, object measurements merged
  across blocks; pure numpy;
- :mod:`~edgeseg.batch.store`: output files, atomic writes, the restart ledger, the tables;
- :mod:`~edgeseg.batch.tasks`: what runs on a worker (each worker opens its own backend once);
- :mod:`~edgeseg.batch.cluster`: a local cluster on loopback, or an existing scheduler;
- :mod:`~edgeseg.batch.run`: the orchestration, progress and summary.

Needs the ``batch`` extra (``dask[distributed]``, ``zarr``, ``pyarrow``); the device runtime
does not.
"""

from __future__ import annotations

__all__: list[str] = []
