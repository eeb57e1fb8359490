"""Reading webdataset tar shards: members in order, grouped into samples by key."""

from __future__ import annotations

from collections.abc import Iterator


def _tar_members(path: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a tar, in order: a plain 512-byte-block parser
    (about 10x faster than tarfile for small members), honouring pax and GNU long names."""
    long_name = None
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            header = f.read(512)
            if len(header) < 512 or header == b"\0" * 512:
                return
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
            data = f.read(size)
            if len(data) < size:
                raise ValueError(f"{path} is truncated")
            f.seek((-size) % 512, 1)  # members are padded to whole blocks
            kind = header[156:157]
            if kind == b"x":  # pax extended header: may carry the next member's path
                for record in data.split(b"\n"):
                    if b" path=" in record:
                        long_name = record.split(b" path=", 1)[1].decode()
            elif kind == b"L":  # GNU long name
                long_name = data.rstrip(b"\0").decode()
            elif kind in (b"0", b"\0"):
                name = (
                    long_name
                    or (
                        header[345:500].rstrip(b"\0")
                        + b"/" * bool(header[345:346].strip(b"\0"))
                        + header[0:100].rstrip(b"\0")
                    ).decode()
                )
                long_name = None
                yield name, data


def tar_samples(
    sources: Iterator[dict], handler, limits: dict[str, int] | None = None
) -> Iterator[dict]:
    """webdataset pipeline stage: shard urls -> samples grouped by key (as tarfile_to_samples);
    `limits` caps the samples read from a shard (its leading ones: data.max_images)."""
    for source in sources:
        url, sample = source["url"], None
        left = (limits or {}).get(url)
        try:
            for name, data in _tar_members(url):
                slash = name.rfind("/") + 1
                dot = name.find(".", slash)
                if dot < 0:
                    continue
                key, suffix = name[:dot], name[dot + 1 :]
                if sample is None or sample["__key__"] != key:
                    if sample is not None:
                        yield sample
                        left = None if left is None else left - 1
                        if left == 0:
                            sample = None
                            break
                    sample = {"__key__": key, "__url__": url}
                sample[suffix] = data
        except (OSError, ValueError) as err:
            handler(err)
        if sample is not None:
            yield sample
