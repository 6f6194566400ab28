"""A DICOMweb server (a PACS such as Orthanc) as `segment`'s source and the store of its SEGs.

``dicomweb://HOST[:PORT]/PATH?study=UID`` (``dicomwebs://`` for HTTPS; optional
``&series=UID``) names a study on the server whose DICOMweb root is ``http://HOST:PORT/PATH``.
:func:`pull_study` fetches its image series (QIDO-RS to list them, WADO-RS to retrieve them)
into a folder per series, which `segment` then reads as any series folder;
:func:`store_instances` sends SEG files back (STOW-RS).

Credentials never come from the command line: the environment (``EDGESEG_DICOMWEB_TOKEN``,
or ``EDGESEG_DICOMWEB_USER`` and ``EDGESEG_DICOMWEB_PASSWORD``) wins over the ``[dicomweb]``
table of ``edgeseg.toml`` (``user``, ``password``, or ``token``; see
:data:`edgeseg.config.TABLES`). Errors are one line and never carry a password.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgeseg.dicom.read import series_label
from edgeseg.errors import DataError
from edgeseg.optional import require

__all__ = [
    "SCHEMES",
    "Credentials",
    "DicomwebStudy",
    "credentials",
    "is_dicomweb",
    "parse_dicomweb",
    "pull_study",
    "store_instances",
]

SCHEMES = ("dicomweb", "dicomwebs")
ENV_USER, ENV_PASSWORD, ENV_TOKEN = (
    "EDGESEG_DICOMWEB_USER",
    "EDGESEG_DICOMWEB_PASSWORD",
    "EDGESEG_DICOMWEB_TOKEN",
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class DicomwebStudy:
    """A study on a DICOMweb server: ``url`` (the DICOMweb root, http or https), ``study``
    UID, optionally one ``series`` UID; ``uri`` as given (without credentials)."""

    url: str
    study: str
    series: str | None
    uri: str


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (``user``, ``password``) or a bearer ``token``; ``origin`` says where they
    came from (for messages, never the secret)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    origin: str = "none"

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(user={self.user!r}, origin={self.origin!r})"


def is_dicomweb(text: str) -> bool:
    return str(text).lower().startswith(tuple(f"{s}://" for s in SCHEMES))


def parse_dicomweb(text: str) -> DicomwebStudy:
    """``dicomweb://host:8042/dicom-web?study=1.2.3`` → a :class:`DicomwebStudy`.

    Raises:
        DataError: another scheme, credentials in the URI, no host, no or a malformed study.
    """
    parts = urlsplit(str(text))
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise DataError(f"not a DICOMweb URI: {text} (dicomweb://HOST/PATH?study=UID)")
    if parts.username or parts.password:
        raise DataError(
            "give DICOMweb credentials in the dicomweb table of edgeseg.toml or the environment "
            f"({ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}), not in the URI"
        )
    if not parts.hostname:
        raise DataError(f"{scheme}:// needs a host: {scheme}://HOST[:PORT]/PATH?study=UID")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"study", "series"})
    if unknown:
        raise DataError(
            f"unknown DICOMweb URI parameter(s) {', '.join(unknown)}: use study, series"
        )
    study = (query.get("study") or [""])[0].strip()
    series = (query.get("series") or [""])[0].strip() or None
    if not study:
        raise DataError(f"{text}: name the study: ?study=UID")
    for what, uid in (("study", study), ("series", series)):
        if uid is not None and (not _UID.match(uid) or len(uid) > 64):
            raise DataError(f"{text}: {what} {uid!r} is not a DICOM UID")
    http = "https" if scheme == "dicomwebs" else "http"
    url = f"{http}://{parts.netloc}{parts.path.rstrip('/')}"
    shown = f"{scheme}://{parts.netloc}{parts.path}?study={study}"
    return DicomwebStudy(url, study, series, shown + (f"&series={series}" if series else ""))


def credentials(config: Path | None = None) -> Credentials:
    """The credentials to use: the environment, else ``[dicomweb]`` of the config files."""
    env = os.environ
    if env.get(ENV_TOKEN):
        return Credentials(token=env[ENV_TOKEN], origin=f"${ENV_TOKEN}")
    if env.get(ENV_USER) or env.get(ENV_PASSWORD):
        return Credentials(
            user=env.get(ENV_USER), password=env.get(ENV_PASSWORD), origin=f"${ENV_USER}"
        )
    from edgeseg.config import load_table

    table = load_table("dicomweb", config)
    values = table.values()
    where = ", ".join(str(p) for p in table.files) or "none"
    if values.get("token"):
        return Credentials(token=values["token"], origin=f"{where}")
    if values.get("user") or values.get("password"):
        return Credentials(
            user=values.get("user"), password=values.get("password"), origin=f"{where}"
        )
    return Credentials()


def _client(study: DicomwebStudy, creds: Credentials) -> Any:
    dicomweb_client = require("dicomweb_client")
    requests = require("requests")
    session = requests.Session()
    if creds.token:
        session.headers["Authorization"] = f"Bearer {creds.token}"
    elif creds.user or creds.password:
        session.auth = (creds.user or "", creds.password or "")
    return dicomweb_client.DICOMwebClient(study.url, session=session, timeout=60)


def _failed(exc: BaseException, study: DicomwebStudy, creds: Credentials, doing: str) -> DataError:
    """A one-line error of a failed request (status and what it means; no secret)."""
    requests = require("requests")
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        how = (
            f"check the credentials from {creds.origin}"
            if creds.origin != "none"
            else f"no credentials given (the dicomweb table of edgeseg.toml, or {ENV_USER} "
            f"and {ENV_PASSWORD})"
        )
        return DataError(f"{study.url} refused {doing} (HTTP {status}): {how}")
    if status == 404:
        return DataError(f"{doing}: not found on {study.url} (HTTP 404): study {study.study}")
    if status is not None:
        return DataError(f"{doing} on {study.url} failed: HTTP {status}")
    if isinstance(exc, requests.exceptions.RequestException):
        return DataError(f"cannot reach DICOMweb server {study.url}: {type(exc).__name__}")
    return DataError(f"{doing} on {study.url} failed: {type(exc).__name__}: {exc}")


def pull_study(study: DicomwebStudy, folder: Path, creds: Credentials) -> list[Path]:
    """Fetch the study's image series (or the one named) into ``folder/<label>/`` (one file
    per instance), replacing what an earlier pull left; the series folders, by label.

    Raises:
        DataError: refused credentials, an unknown study or series, no image series, a
            server that cannot be reached.
    """
    pydicom = require("pydicom")
    client = _client(study, creds)
    try:
        found = client.search_for_series(study_instance_uid=study.study)
    except Exception as exc:  # requests' HTTPError, connection errors
        raise _failed(exc, study, creds, f"searching study {study.study}") from exc
    series = []
    for item in found:
        ds = pydicom.Dataset.from_json(item)
        modality = str(ds.get("Modality", ""))
        if modality in ("SEG", "SR", "RTSTRUCT", "PR", "KO"):
            continue  # not images (an earlier run's SEG among them)
        if study.series and ds.get("SeriesInstanceUID") != study.series:
            continue
        series.append(ds)
    if not found:
        raise DataError(f"study {study.study} not found on {study.url}")
    if not series:
        what = f"series {study.series}" if study.series else "image series"
        raise DataError(f"study {study.study} on {study.url} has no {what}")
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out: list[Path] = []
    used: set[str] = set()
    for ds in series:
        uid = str(ds.SeriesInstanceUID)
        try:
            instances = client.retrieve_series(study.study, uid)
        except Exception as exc:
            raise _failed(exc, study, creds, f"retrieving a series of study {study.study}") from exc
        label, n = series_label(ds), 1
        name = label
        while name in used:
            n += 1
            name = f"{label}-{n}"
        used.add(name)
        target = folder / name
        target.mkdir()
        for i, inst in enumerate(instances):
            inst.save_as(str(target / f"{i:05d}.dcm"), enforce_file_format=True)
        out.append(target)
    return out


def store_instances(study: DicomwebStudy, files: Sequence[Path], creds: Credentials) -> int:
    """Send DICOM files (SEGs) to the server's STOW-RS endpoint, into ``study``; how many.

    Raises:
        DataError: refused credentials, a server that cannot be reached or refuses them.
    """
    if not files:
        return 0
    pydicom = require("pydicom")
    client = _client(study, creds)
    datasets = [pydicom.dcmread(str(f)) for f in files]
    try:
        client.store_instances(datasets, study_instance_uid=study.study)
    except Exception as exc:
        raise _failed(exc, study, creds, f"storing {len(datasets)} SEG(s)") from exc
    return len(datasets)
