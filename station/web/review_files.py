"""Files of the review pages: dataset zips in and out, temporary folders, thumbnails.

Nothing here takes a path from a client. Uploads are written under a work folder
next to the image store (``<store.images_dir>/../.web-tmp``, so exports can
hard-link images), unpacked only after every entry name was checked (no
absolute names, no ``..``, no links: "zip slip"), and read back only from
inside that folder. Exports are built in the same work folder and removed once
sent.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import cv2
import numpy as np
import yaml

log = logging.getLogger(__name__)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
RESERVE_BYTES = 256 * 2**20  # free space an import must leave for the recorder
STALE_S = 6 * 3600  # work folders older than this are left over from a crash: removed
_STORED_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".zip", ".gz"}  # already compressed: store, do not deflate


class UploadError(ValueError):
    """A refused upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Upload limits (from WebConfig)."""

    max_bytes: int
    max_unpacked_bytes: int
    max_files: int


# -- work folders -------------------------------------------------------------------
def work_root(images_dir: Path) -> Path:
    """The folder for temporary export and import files: next to the image store (same file system)."""
    root = Path(images_dir).resolve().parent / ".web-tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def new_work_dir(images_dir: Path, prefix: str) -> Path:
    """A fresh private folder under :func:`work_root`; stale folders of earlier runs are removed first."""
    root = work_root(images_dir)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # raced with another request removing it
            continue
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def remove_tree(path: Path) -> None:
    """Remove a work folder (after its response was sent)."""
    shutil.rmtree(path, ignore_errors=True)


# -- uploads ------------------------------------------------------------------------------
async def save_upload(chunks: AsyncIterator[bytes], dest: Path, limits: Limits) -> int:
    """Write the request body to ``dest``, refusing (413) as soon as it exceeds ``limits.max_bytes``.

    The first bytes must be a zip signature (else 415), so a wrong file type is refused
    before it is stored. Returns the number of bytes written.
    """
    n = 0
    head = b""
    with open(dest, "wb") as f:
        async for chunk in chunks:
            if not chunk:
                continue
            n += len(chunk)
            if n > limits.max_bytes:
                raise UploadError(413, f"upload larger than web.max_upload_mb ({limits.max_bytes / 2**20:g} MB)")
            if len(head) < 4:
                head = (head + chunk)[:4]
                if len(head) == 4 and head not in ZIP_MAGIC:
                    raise UploadError(
                        415, "the upload is not a zip file (no zip signature): send the dataset as a .zip"
                    )
            await anyio.to_thread.run_sync(f.write, chunk)  # large uploads must not stall the event loop
    if n == 0:
        raise UploadError(422, "the upload is empty: send the dataset zip as the request body")
    if head not in ZIP_MAGIC:
        raise UploadError(415, "the upload is not a zip file (no zip signature): send the dataset as a .zip")
    return n


def _check_name(name: str) -> PurePosixPath:
    """A zip entry name as a safe relative path, else UploadError 400 (zip slip)."""
    if not name or "\x00" in name:
        raise UploadError(400, f"zip entry with an empty or invalid name {name!r}: refused")
    if "\\" in name:
        raise UploadError(
            400, f"zip entry {name!r} uses backslashes: refused (only '/' separated relative names are accepted)"
        )
    p = PurePosixPath(name)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UploadError(400, f"zip entry {name!r} has an absolute name: refused (zip slip)")
    if any(part == ".." for part in p.parts):
        raise UploadError(400, f"zip entry {name!r} contains '..': refused (zip slip)")
    return p


def unpack(zip_path: Path, dest: Path, limits: Limits) -> list[Path]:
    """Unpack a checked zip into ``dest``; returns the files written.

    400 for an unsafe entry (absolute name, ``..``, backslash, symbolic link), 413 for too
    many entries or too many unpacked bytes, 422 for a damaged zip. Every name is checked
    before anything is written.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(422, f"the zip file is damaged and cannot be read ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise UploadError(
                413, f"the zip holds {len(infos)} entries; at most web.max_upload_files = {limits.max_files}"
            )
        total = 0
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UploadError(400, f"zip entry {info.filename!r} is a symbolic link: refused")
            total += info.file_size
        if total > limits.max_unpacked_bytes:
            raise UploadError(
                413,
                f"the zip unpacks to {total / 2**20:.0f} MB; at most web.max_upload_unpacked_mb = "
                f"{limits.max_unpacked_bytes / 2**20:g} MB",
            )
        if not disk_free_ok(dest, total + RESERVE_BYTES):  # the recorder writes images on this file system too
            raise UploadError(
                507, f"not enough free disk space to unpack {total / 2**20:.0f} MB next to the image store"
            )
        root = dest.resolve()
        written: list[Path] = []
        budget = limits.max_unpacked_bytes
        for info in infos:
            target = (root / _check_name(info.filename)).resolve()
            if root not in target.parents and target != root:  # defence in depth
                raise UploadError(400, f"zip entry {info.filename!r} would land outside the upload folder: refused")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        budget -= len(block)
                        if budget < 0:  # sizes in the directory lied
                            raise UploadError(
                                413,
                                "the zip unpacks to more than web.max_upload_unpacked_mb = "
                                f"{limits.max_unpacked_bytes / 2**20:g} MB",
                            )
                        out.write(block)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise UploadError(422, f"zip entry {info.filename!r} cannot be unpacked ({exc})") from None
            written.append(target)
    return written


def inside(root: Path, candidate: Path) -> bool:
    """True when ``candidate`` (resolved) is ``root`` or lies below it."""
    r, c = root.resolve(), candidate.resolve()
    return c == r or r in c.parents


def _one(files: list[Path], root: Path, what: str, pick: Any) -> Path:
    found = sorted((f for f in files if pick(f)), key=lambda f: (len(f.relative_to(root).parts), str(f)))
    if not found:
        raise UploadError(422, f"the zip holds no {what}")
    shallow = [f for f in found if len(f.relative_to(root).parts) == len(found[0].relative_to(root).parts)]
    if len(shallow) > 1:
        names = ", ".join(str(f.relative_to(root)) for f in shallow[:5])
        raise UploadError(
            422, f"the zip holds several {what} files at the same level ({names}): send one dataset per zip"
        )
    return found[0]


def prepare_yolo(files: list[Path], root: Path) -> Path:
    """The dataset YAML of an unpacked YOLO zip, rewritten so it can only name files inside ``root``.

    The uploaded ``path`` key is replaced by the YAML's own folder; split entries must be
    relative names (no ``..``) of folders or ``.txt`` lists inside the upload, and every
    line of a list must be too. 422 otherwise.
    """
    src = _one(files, root, "dataset YAML (data.yaml)", lambda f: f.suffix.lower() in (".yaml", ".yml"))
    rel = src.relative_to(root)
    try:
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UploadError(422, f"{rel}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UploadError(422, f"{rel}: expected a mapping with train, val and names")
    base = src.parent
    for split in ("train", "val", "test"):
        entry = data.get(split)
        if entry is None:
            continue
        entries = entry if isinstance(entry, list) else [entry]
        for e in entries:
            if not isinstance(e, str) or not e or PurePosixPath(e).is_absolute() or ".." in PurePosixPath(e).parts:
                raise UploadError(422, f"{rel}: '{split}' must be a relative folder or list inside the zip, not {e!r}")
            target = base / e
            if not inside(root, target):
                raise UploadError(422, f"{rel}: '{split}' entry {e!r} lies outside the zip")
            if target.is_file():
                for n, line in enumerate(target.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    line = line.strip()
                    if line and (
                        PurePosixPath(line).is_absolute()
                        or ".." in PurePosixPath(line).parts
                        or not inside(root, base / line)
                    ):
                        raise UploadError(
                            422,
                            f"{target.relative_to(root)}:{n}: image {line!r} must be a relative name inside the zip",
                        )
    data["path"] = str(base)
    safe = base / ".upload-data.yaml"
    safe.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return safe


def prepare_coco(files: list[Path], root: Path) -> tuple[Path, Path]:
    """(COCO JSON, images folder) of an unpacked COCO zip; 422 unless the JSON parses and names files inside the zip.

    The images folder is ``images/`` next to the JSON when it exists, else the JSON's folder.
    """
    import json

    src = _one(files, root, "COCO JSON file (annotations.json)", lambda f: f.suffix.lower() == ".json")
    rel = src.relative_to(root)
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UploadError(422, f"{rel}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise UploadError(422, f"{rel}: not a COCO file (needs 'images', 'annotations' and 'categories' lists)")
    images_dir = src.parent / "images" if (src.parent / "images").is_dir() else src.parent
    for i, im in enumerate(doc["images"]):
        name = im.get("file_name") if isinstance(im, dict) else None
        if not isinstance(name, str) or not name:
            raise UploadError(422, f"{rel}: images[{i}] needs a file_name")
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or not inside(root, images_dir / p):
            raise UploadError(422, f"{rel}: images[{i}].file_name {name!r} must be a relative name inside the zip")
    return src, images_dir


# -- downloads -------------------------------------------------------------------------------
def zip_folder(folder: Path, dest: Path, arc_root: str) -> Path:
    """Zip every file under ``folder`` into ``dest`` below ``arc_root/`` (images stored, text deflated)."""
    with zipfile.ZipFile(dest, "w", allowZip64=True) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            method = zipfile.ZIP_STORED if f.suffix.lower() in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            zf.write(f, f"{arc_root}/{f.relative_to(folder).as_posix()}", compress_type=method)
    return dest


def portable_data_yaml(data_yaml: Path) -> None:
    """Drop the absolute ``path`` from an exported data.yaml so the unpacked zip works anywhere.

    Without ``path``, Ultralytics and :func:`labeling.importer.read_yolo` resolve the splits
    against the YAML's own folder.
    """
    text = data_yaml.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text)
    data.pop("path", None)
    data_yaml.write_text(
        header
        + "# no 'path': train and val are relative to this file's folder\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )


# -- thumbnails ------------------------------------------------------------------------------
def thumbnail_jpeg(path: Path, size: int, width: int, height: int, quality: int = 80) -> bytes:
    """A JPEG of the image file at ``path`` whose longer side is at most ``size`` pixels (never upscaled).

    Large images are decoded at a reduced scale (OpenCV's ``IMREAD_REDUCED_*``) when that
    still leaves at least ``size`` pixels, so a thumbnail of a 20 MP frame is cheap.
    """
    longest = max(width, height, 1)
    flag = cv2.IMREAD_COLOR
    for factor, reduced in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if longest / factor >= size:
            flag = reduced
            break
    data = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(data, flag)
    if img is None:
        raise ValueError(f"image file {path.name} cannot be decoded")
    h, w = img.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"image file {path.name} cannot be encoded as JPEG")
    return buf.tobytes()


def clean_message(message: str, *roots: Path) -> str:
    """An error message with the server's temporary folders replaced by ``<upload>``."""
    for r in roots:
        with contextlib.suppress(OSError):
            message = message.replace(str(r.resolve()), "<upload>")
        message = message.replace(str(r), "<upload>")
    return message


def disk_free_ok(folder: Path, need_bytes: int) -> bool:
    """True when the file system of ``folder`` has room for ``need_bytes`` more."""
    try:
        return shutil.disk_usage(folder).free > need_bytes
    except OSError:
        return True


__all__ = [
    "Limits",
    "UploadError",
    "clean_message",
    "disk_free_ok",
    "inside",
    "new_work_dir",
    "portable_data_yaml",
    "prepare_coco",
    "prepare_yolo",
    "remove_tree",
    "save_upload",
    "thumbnail_jpeg",
    "unpack",
    "work_root",
    "zip_folder",
]
