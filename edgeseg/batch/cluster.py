"""The Dask client `edgeseg segment` works with: a local cluster, or an existing scheduler.

The local cluster has one worker process per core (each its own interpreter, ``threads``
threads of LiteRT inside) and binds its scheduler, workers and dashboard to ``host``
(loopback unless told otherwise). An existing cluster (``scheduler`` address) must have
edgeseg installed on its workers and see the model, inputs and OUT at the same paths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgeseg.batch.deps import need
from edgeseg.errors import DataError

__all__ = ["ClusterInfo", "batch_config", "open_client"]


@dataclass(frozen=True)
class ClusterInfo:
    """What runs the work: ``where`` (one line), the workers, the dashboard or None."""

    where: str
    workers: int
    threads: int
    dashboard: str | None


def _info(client: Any, where: str) -> ClusterInfo:
    workers = client.scheduler_info().get("workers", {})
    threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
    services = client.scheduler_info().get("services", {})
    dashboard = client.dashboard_link if "dashboard" in services else None
    return ClusterInfo(where=where, workers=len(workers), threads=threads, dashboard=dashboard)


def batch_config(dashboard: bool) -> dict[str, Any]:
    """Dask settings of the local cluster: a batch cluster needs no sub-second diagnostics.

    Dask's defaults suit an interactive cluster: every server checks its event loop every
    20 ms, every nanny a worker's memory every 100 ms, every worker samples its own stack
    every 10 ms for the dashboard's profile. Idle, that is about a tenth of a core on a
    2-worker cluster (measured here: 2.1 s of CPU in 20 s; 0.25 s with these settings),
    taken from the workers when every core segments. The memory limit still holds (checked
    every second). Without a dashboard, its profile and system monitor are off too.
    """
    config: dict[str, Any] = {
        "distributed.admin.tick.interval": "1s",
        "distributed.worker.memory.monitor-interval": "1s",
    }
    if not dashboard:
        config["distributed.worker.profile.enabled"] = False
        config["distributed.admin.system-monitor.interval"] = "5s"
    return config


@contextlib.contextmanager
def open_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    host: str = "127.0.0.1",
    client: Any = None,
) -> Iterator[tuple[Any, ClusterInfo]]:
    """A Dask client and what it runs on; closed (and a local cluster stopped) on exit.

    ``client``: use this one as it is (tests, a notebook); ``scheduler``: connect to it;
    otherwise start a local cluster of ``workers`` processes (default: one per core), one
    task at a time each.
    """
    distributed = need("distributed")
    if client is not None:
        yield client, _info(client, f"the given client's scheduler {client.scheduler.address}")
        return
    if scheduler is not None:
        try:
            remote = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise DataError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        try:
            yield remote, _info(remote, f"scheduler {scheduler}")
        finally:
            remote.close()
        return
    n = workers or os.cpu_count() or 1
    dashboard = f"{host}:0" if importlib.util.find_spec("bokeh") else None
    import dask

    with dask.config.set(batch_config(dashboard is not None)):
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host=host,
            dashboard_address=dashboard,
            silence_logs=40,  # logging.ERROR: no start-up chatter on the console
        )
    try:
        local = distributed.Client(cluster)
        try:
            where = f"local cluster on {host}: {n} worker process(es) x 1 task"
            yield local, _info(local, where)
        finally:
            local.close()
    finally:
        cluster.close()
