"""Image sources for shard preparation: LSUN LMDB, a folder, a zip, the synthetic generator.

A source is an ordered list of ids plus `read(id) -> bytes`; the order is deterministic, so
shard k always holds the same ids whichever task writes it. `fingerprint()` identifies the
source's content cheaply (names, sizes, modification times) for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from hpcgen.config import ConfigError
from hpcgen.data.choices import DATA_SOURCES
from hpcgen.data.synthetic import toy_bedroom

# open_source's three branches (folder: a folder or a zip): a source added to DATA_SOURCES fails
# to unpack here until it has one
SYNTHETIC, LSUN_BEDROOM, FOLDER = DATA_SOURCES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class FolderSource:
    """Every image file under a folder, recursively, by sorted relative path."""

    kind = "folder"

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise ConfigError(f"data.source={path} does not exist or is not a folder of images")
        self.path = path
        self.ids = sorted(
            str(p.relative_to(path))
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.ids:
            raise ConfigError(
                f"data.source={path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    def read(self, image_id: str) -> bytes:
        return (self.path / image_id).read_bytes()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for image_id in self.ids:
            st = (self.path / image_id).stat()
            h.update(f"{image_id}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


class ZipSource:
    """Every image member of a zip archive, by sorted member name."""

    kind = "zip"

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"data.source={path} does not exist")
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise ConfigError(f"data.source={path} is not a readable zip ({err})") from err
        self.path = path
        self.ids = sorted(
            i.filename
            for i in self._zip.infolist()
            if not i.is_dir() and Path(i.filename).suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.ids:
            raise ConfigError(f"data.source={path} holds no images")

    def read(self, image_id: str) -> bytes:
        return self._zip.read(image_id)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for info in sorted(self._zip.infolist(), key=lambda i: i.filename):
            h.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
        return h.hexdigest()


class LMDBSource:
    """The official LSUN export: an LMDB whose keys are image ids and values encoded images."""

    kind = "lmdb"

    def __init__(self, path: Path) -> None:
        import lmdb

        if not (path / "data.mdb").is_file():
            raise ConfigError(
                f"data.source={path} is not an LMDB directory (no data.mdb): point it at e.g. "
                "bedroom_train_lmdb from the LSUN download"
            )
        self.path = path
        self._env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, max_readers=64)
        with self._env.begin(write=False) as txn:
            self.ids = sorted(key.decode() for key in txn.cursor().iternext(values=False))
        if not self.ids:
            raise ConfigError(f"data.source={path} is an empty LMDB")

    def read(self, image_id: str) -> bytes:
        with self._env.begin(write=False) as txn:
            value = txn.get(image_id.encode())
        if value is None:
            raise KeyError(f"key {image_id} vanished from {self.path}")
        return bytes(value)

    def fingerprint(self) -> str:
        st = (self.path / "data.mdb").stat()
        h = hashlib.sha256(f"{len(self.ids)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        for image_id in self.ids[:1000]:
            h.update(image_id.encode())
        return h.hexdigest()


class SyntheticSource:
    """The procedural toy bedrooms, rendered at the target resolution (PNG bytes)."""

    kind = "synthetic"

    def __init__(self, num_samples: int, resolution: int, seed: int = 0) -> None:
        self.ids = [f"toy-{i:08d}" for i in range(num_samples)]
        self.resolution, self.seed = resolution, seed

    def read(self, image_id: str) -> bytes:
        buf = io.BytesIO()
        toy_bedroom(int(image_id[4:]), self.resolution, self.seed).save(buf, format="PNG")
        return buf.getvalue()

    def fingerprint(self) -> str:
        return f"synthetic-v1-seed{self.seed}-n{len(self.ids)}-r{self.resolution}"


def open_source(name: str, source: str | None, num_samples: int, resolution: int):
    """The source named by data.name / data.source."""
    if name == SYNTHETIC:
        return SyntheticSource(num_samples, resolution)
    if not source:
        raise ConfigError(f"data={name} needs data.source=<path of the images to prepare>")
    path = Path(source).expanduser().resolve()
    if name == LSUN_BEDROOM or (path / "data.mdb").is_file():
        return LMDBSource(path)
    if path.suffix.lower() == ".zip":
        return ZipSource(path)
    return FolderSource(path)
