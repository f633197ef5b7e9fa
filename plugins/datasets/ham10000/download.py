"""Fetch the HAM10000 release from Harvard Dataverse into the layout `ham10000.py` reads.

The file list and checksums come from Dataverse's native API, so a new version of the dataset
needs no change here. pooch verifies each file's checksum, skips files already present and intact,
and unzips each image archive into a folder of the same name.
"""

from __future__ import annotations

from pathlib import Path

import pooch
import requests

from robench.errors import DataError

SERVER = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
IMAGE_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
METADATA = "HAM10000_metadata"  # uploaded as CSV; Dataverse ingests it and lists it as .tab
_RETRY = "check the network and run `robench data download ham10000` again (finished files are kept)"


def download_ham10000(to: Path | str, *, server: str = SERVER, doi: str = DOI, progressbar: bool = True) -> Path:
    """Download and unpack the images and metadata into `to`; return `to`."""
    to = Path(to)
    files = _list_files(server, doi)
    for part in IMAGE_PARTS:
        _fetch(server, _datafile(files, part, doi), to / f"{part}.zip", progressbar, pooch.Unzip(extract_dir=part))
    _fetch(server, _datafile(files, METADATA, doi), to / f"{METADATA}.csv", progressbar)
    return to


def _list_files(server: str, doi: str) -> dict[str, dict]:
    """The latest version's files, keyed by name without extension (`HAM10000_metadata.tab` -> `HAM10000_metadata`)."""
    url = f"{server}/api/datasets/:persistentId/?persistentId={doi}"
    try:
        response = requests.get(url, timeout=60)
        response.raise_for_status()
    except requests.RequestException as error:
        raise DataError(f"cannot list {doi} at {server} ({_one_line(error)}): {_RETRY}") from None
    try:
        files = response.json()["data"]["latestVersion"]["files"]
        return {Path(entry["dataFile"]["filename"]).stem: entry["dataFile"] for entry in files}
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"unexpected file listing from {url} ({_one_line(error)}): is {server} a Dataverse server?"
        ) from None


def _datafile(files: dict[str, dict], name: str, doi: str) -> dict:
    if name not in files:
        raise DataError(f"{doi} lists no file {name} (it has {', '.join(sorted(files))}): update robench")
    return files[name]


def _fetch(server: str, datafile: dict, target: Path, progressbar: bool, processor: pooch.Unzip | None = None) -> None:
    """One listed file, checksum-verified, saved as `target`; an ingested table is fetched as uploaded."""
    # An ingested table's checksum is that of the original upload, which `format=original` returns.
    original = "?format=original" if "originalFileFormat" in datafile else ""
    checksum = datafile.get("checksum") or {"type": "MD5", "value": datafile["md5"]}
    try:
        pooch.retrieve(
            f"{server}/api/access/datafile/{datafile['id']}{original}",
            known_hash=f"{checksum['type'].replace('-', '').lower()}:{checksum['value']}",
            fname=target.name, path=target.parent, processor=processor, progressbar=progressbar,
        )
    except (OSError, ValueError) as error:  # requests' errors are OSErrors; pooch: ValueError on a bad checksum
        raise DataError(f"downloading {target.name} from {server} failed ({_one_line(error)}): {_RETRY}") from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
