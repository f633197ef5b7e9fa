"""download_ham10000 against a local fake Dataverse: listing, checksums, unzip, then a real load."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from PIL import Image

from robench.errors import DataError
from robench_plugins.datasets.ham10000 import CLASSES as HAM10000_CLASSES
from robench_plugins.datasets.ham10000 import HAM10000
from robench_plugins.datasets.ham10000.download import download_ham10000

DOI = "doi:10.5072/FK2/TEST"
IMAGE_IDS = [f"ISIC_00243{number:02d}" for number in range(8)]
DXS = ["nv", "nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
METADATA_CSV = "lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "".join(
    f"HAM_{number // 2:07d},{image_id},{dx},histo,50.0,male,back\n"
    for number, (image_id, dx) in enumerate(zip(IMAGE_IDS, DXS))
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path / "cache"))


def jpeg_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 15), (shade, 100, 50)).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(image_ids: list[str], folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, image_id in enumerate(image_ids):
            archive.writestr(f"{folder}{image_id}.jpg", jpeg_bytes(30 * number))
    return buffer.getvalue()


class FakeDataverse:
    """The two Dataverse endpoints download_ham10000 uses, served from memory on 127.0.0.1."""

    def __init__(self):
        # The first zip holds its JPEGs at the top, the second inside a folder: both occur in the wild.
        self.files = {
            101: ("HAM10000_images_part_1.zip", zip_bytes(IMAGE_IDS[:4])),
            102: ("HAM10000_images_part_2.zip", zip_bytes(IMAGE_IDS[4:], folder="HAM10000_images_part_2/")),
            103: ("HAM10000_metadata.tab", METADATA_CSV.encode()),  # ingested: the CSV is the original
        }
        self.checksums = {file_id: hashlib.md5(content).hexdigest() for file_id, (_, content) in self.files.items()}
        self.requests: list[str] = []

    def listing(self) -> bytes:
        entries = [{"label": name, "dataFile": {"id": file_id, "filename": name, "md5": self.checksums[file_id]}}
                   for file_id, (name, _) in self.files.items()]
        entries[0]["dataFile"]["checksum"] = {"type": "MD5", "value": self.checksums[101]}  # newer servers add it
        entries[2]["dataFile"].update(originalFileFormat="text/csv", originalFileName="HAM10000_metadata.csv")
        return json.dumps({"status": "OK", "data": {"latestVersion": {"files": entries}}}).encode()

    def respond(self, url: str) -> bytes | None:
        self.requests.append(url)
        parts = urlsplit(url)
        if parts.path == "/api/datasets/:persistentId/" and parts.query == f"persistentId={DOI}":
            return self.listing()
        if parts.path.startswith("/api/access/datafile/"):
            name, content = self.files.get(int(parts.path.rsplit("/", 1)[1]), (None, None))
            if name and name.endswith(".tab") and parts.query != "format=original":
                return content.replace(b",", b"\t")  # the archival form Dataverse serves by default
            return content
        return None


@pytest.fixture
def dataverse():
    fake = FakeDataverse()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = fake.respond(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def test_download_gives_the_layout_load_reads_and_skips_files_already_there(tmp_path, dataverse):
    target = download_ham10000(tmp_path / "ham", server=dataverse.url, doi=DOI, progressbar=False)

    assert (target / "HAM10000_metadata.csv").read_text() == METADATA_CSV
    assert sorted(path.stem for path in (target / "HAM10000_images_part_1").glob("*.jpg")) == IMAGE_IDS[:4]
    data = HAM10000().load(target, image_size=32)
    assert data.ids == tuple(IMAGE_IDS) and [HAM10000_CLASSES[label] for label in data.labels] == DXS
    assert data.images.shape == (8, 3, 32, 32)

    fetched = len(dataverse.requests)
    download_ham10000(target, server=dataverse.url, doi=DOI, progressbar=False)
    assert len(dataverse.requests) == fetched + 1  # only the listing: every file was intact


def test_a_checksum_mismatch_is_a_data_error(tmp_path, dataverse):
    dataverse.checksums[102] = "0" * 32
    with pytest.raises(DataError) as excinfo:
        download_ham10000(tmp_path, server=dataverse.url, doi=DOI, progressbar=False)
    message = str(excinfo.value)
    assert "\n" not in message and "HAM10000_images_part_2.zip" in message and "does not match" in message
    assert not (tmp_path / "HAM10000_images_part_2.zip").exists()


def test_an_unreachable_server_is_a_data_error(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError) as excinfo:
        download_ham10000(tmp_path, server=f"http://127.0.0.1:{port}", doi=DOI, progressbar=False)
    assert "cannot list" in str(excinfo.value) and "\n" not in str(excinfo.value)
