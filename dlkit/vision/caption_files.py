"""Readers for image-caption datasets: they return file paths and caption strings, never pixels.

Formats users have (``format="auto"`` tells them apart by name and content):

* ``csv`` / ``tsv``: a header ``image,caption`` (or tab-separated), one caption per row, several rows per image
  (e.g. Flickr8k as ``captions.csv`` + ``images/``). Images are looked up beside the file, then in ``images/``;
  split lists ``splits/{train,dev,test}.txt`` beside it (one file name per line) are used when present.
* ``flickr8k``: ``Flickr8k.token.txt`` lines ``<file>#<n>\\t<caption>`` with an image folder and optional
  split files (``Flickr_8k.trainImages.txt``...: one file name per line).
* ``karpathy``: Karpathy's split JSON (``dataset_flickr8k.json``, ``dataset_coco.json``): ``images`` with
  ``filename`` (+ ``filepath`` for COCO), ``split`` (train/restval/val/test) and ``sentences[].raw``.
* ``coco``: COCO's ``annotations/captions_*.json``: ``images[].{id,file_name}`` and
  ``annotations[].{image_id,caption}``.

Imports no torch. Every problem a user can cause is a one-line :class:`DataError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from dlkit.core.errors import DataError
from dlkit.core.io import is_stream, read_text

FORMATS = ("auto", "csv", "tsv", "flickr8k", "karpathy", "coco")
_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file", "path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "sentence")


@dataclass
class CaptionData:
    """Images with their captions (one entry per image, in file order) and the splits a file names."""

    images: list[Path]
    captions: list[list[str]]
    splits: dict[str, list[int]] = field(default_factory=dict)  # split name -> image indices (when the file has them)
    source: str = ""
    format: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    def subset(self, idx: list[int]) -> "CaptionData":
        return CaptionData([self.images[i] for i in idx], [self.captions[i] for i in idx], {}, self.source, self.format)

    def missing(self) -> list[Path]:
        """Images named by the caption file that are not there."""
        return [p for p in self.images if not p.is_file()]

    def drop(self, paths: list[Path]) -> "CaptionData":
        """Without the given images (splits re-indexed)."""
        gone = set(paths)
        keep = [i for i, p in enumerate(self.images) if p not in gone]
        new_index = {old: new for new, old in enumerate(keep)}
        splits = {k: [new_index[i] for i in v if i in new_index] for k, v in self.splits.items()}
        out = self.subset(keep)
        out.splits = splits
        return out


def load_captions(path: str | os.PathLike, images: str | os.PathLike | None = None, format: str = "auto",
                  splits: dict[str, str | os.PathLike] | None = None) -> CaptionData:
    """Read a caption file in any supported format (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"caption file '{path}' does not exist", exit_code=2)
    if is_stream(path):  # a FIFO or <(...): read once here, the readers below see that text
        if images is None:
            raise DataError(f"caption file '{path}' is a stream: give --images FOLDER (no folder sits beside it)",
                            exit_code=2)
        _STREAMED[str(path)] = read_text(path, "caption file")
        try:
            return _load(path, images, format, splits)
        finally:
            _STREAMED.pop(str(path), None)
    if path.is_dir():
        found = _find_in_folder(path)
        if found is None:
            raise DataError(f"folder '{path}' holds no caption file (captions.txt/.csv/.tsv, Flickr8k.token.txt, "
                            "dataset_*.json or captions_*.json)")
        path = found
    if path.stat().st_size == 0:
        raise DataError(f"caption file '{path}' is empty")
    return _load(path, images, format, splits)


def _load(path: Path, images, format: str, splits) -> CaptionData:
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS[1:]:
        raise DataError(f"caption format '{format}': expected one of {', '.join(FORMATS)}")
    image_dir = Path(images) if images is not None else None
    if image_dir is not None and not image_dir.is_dir():
        raise DataError(f"image folder '{image_dir}' does not exist")
    if fmt in ("csv", "tsv"):
        data = read_csv(path, image_dir, delimiter="\t" if fmt == "tsv" else ",")
        data = _apply_split_files(data, splits if splits is not None else _split_folder(path))
    elif fmt == "flickr8k":
        data = read_flickr8k(path, image_dir, splits)
    elif fmt == "karpathy":
        data = read_karpathy(path, image_dir)
    else:
        data = read_coco(path, image_dir)
    if not data.images:
        raise DataError(f"caption file '{path}' names no images")
    return data


def _find_in_folder(folder: Path) -> Path | None:
    for name in ("captions.txt", "captions.csv", "captions.tsv", "Flickr8k.token.txt", "results_20130124.token"):
        if (folder / name).is_file():
            return folder / name
    for pattern in ("dataset_*.json", "annotations/captions_*.json", "captions_*.json", "*.csv", "*.tsv"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


def detect_format(path: Path) -> str:
    """csv | tsv | flickr8k | karpathy | coco, from the name and the first bytes."""
    head = _open_text(path).read(4096)
    if path.suffix.lower() == ".json" or head.lstrip().startswith("{"):
        try:
            obj = json.loads(_open_text(path).read())
        except json.JSONDecodeError as e:
            raise DataError(f"caption file '{path}' is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(obj, dict) and "annotations" in obj:
            return "coco"
        if isinstance(obj, dict) and isinstance(obj.get("images"), list):
            return "karpathy"
        raise DataError(f"'{path}': JSON that is neither COCO captions (annotations) nor Karpathy splits (images)")
    first = head.splitlines()[0] if head else ""
    if "#" in first.split("\t")[0] and "\t" in first:
        return "flickr8k"
    return "tsv" if "\t" in first else "csv"


_STREAMED: dict[str, str] = {}  # the text of a stream being loaded (a stream can be read only once)


def _open_text(path: Path):
    text = _STREAMED.get(str(path))
    if text is None:
        text = read_text(path, "caption file")
        if not text.strip():
            raise DataError(f"caption file '{path}' is empty")
    return io.StringIO(text)


def _image_dir_for(path: Path, image_dir: Path | None, first_name: str) -> Path:
    """The folder the file names are relative to: given, else beside the file, else ``images/`` or ``Images/``."""
    if image_dir is not None:
        return image_dir
    for cand in (path.parent, path.parent / "images", path.parent / "Images", path.parent / "Flicker8k_Dataset",
                 path.parent.parent / "images"):
        if (cand / first_name).exists():
            return cand
    return path.parent / "images" if (path.parent / "images").is_dir() else path.parent


def _group(path: Path, pairs: list[tuple[str, str]], image_dir: Path | None, fmt: str) -> CaptionData:
    by_image: OrderedDict[str, list[str]] = OrderedDict()
    for name, caption in pairs:
        caption = " ".join(caption.split())
        if not name or not caption:
            continue
        by_image.setdefault(name, []).append(caption)
    if not by_image:
        raise DataError(f"caption file '{path}' holds no (image, caption) rows")
    root = _image_dir_for(path, image_dir, next(iter(by_image)))
    return CaptionData([root / n for n in by_image], list(by_image.values()), {}, str(path), fmt)


def read_csv(path: Path, image_dir: Path | None = None, delimiter: str = ",") -> CaptionData:
    """``image,caption`` rows with a header (column names as in _IMAGE_COLUMNS / _CAPTION_COLUMNS) or without."""
    numbered = [(n, r) for n, r in _csv_rows(path, delimiter) if r and any(c.strip() for c in r)]
    if not numbered:
        raise DataError(f"caption file '{path}' holds no rows")
    header = [c.strip().lower() for c in numbered[0][1]]
    img_col = next((header.index(c) for c in _IMAGE_COLUMNS if c in header), None)
    cap_col = next((header.index(c) for c in _CAPTION_COLUMNS if c in header), None)
    if img_col is not None and cap_col is not None:
        numbered = numbered[1:]
    else:
        img_col, cap_col = 0, 1
    pairs = []
    for lineno, r in numbered:
        if len(r) <= max(img_col, cap_col):
            sep = "tab" if delimiter == "\t" else "comma"
            raise DataError(f"'{path}' row {lineno}: expected an image and a caption separated by a {sep}")
        # a caption holding the separator without quotes: keep the rest of the row
        caption = delimiter.join(r[cap_col:]) if cap_col == len(header) - 1 else r[cap_col]
        pairs.append((r[img_col].strip(), caption))
    return _group(path, pairs, image_dir, "tsv" if delimiter == "\t" else "csv")


def _csv_rows(path: Path, delimiter: str):
    """(line number, row) of a CSV/TSV file. A quoted field running over a line break means a quote left
    open (csv would silently swallow every later row into one caption): refused with its line, as is a
    field over csv's size limit."""
    reader = csv.reader(_open_text(path), delimiter=delimiter)
    start = 1
    try:
        for row in reader:
            if any("\n" in c or "\r" in c for c in row):
                raise DataError(f"'{path}' line {start}: a quoted caption runs on to line {reader.line_num}; "
                                "is a quote left open? (captions are one line each)")
            yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        reason = str(e)
        if "field limit" in reason:
            reason = f"a field is longer than {csv.field_size_limit():,} characters (is a quote left open?)"
        raise DataError(f"'{path}' line {reader.line_num}: {reason}") from None


def read_flickr8k(path: Path, image_dir: Path | None = None,
                  split_files: dict[str, str | os.PathLike] | None = None) -> CaptionData:
    """``Flickr8k.token.txt``; split files are found beside it (``Flickr_8k.{train,dev,test}Images.txt``)."""
    pairs = []
    for lineno, line in enumerate(_open_text(path), 1):
        line = line.rstrip("\n\r")
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"'{path}' line {lineno}: expected '<image>#<n><TAB><caption>'")
        key, caption = line.split("\t", 1)
        pairs.append((key.rsplit("#", 1)[0].strip(), caption))
    data = _group(path, pairs, image_dir, "flickr8k")
    if split_files is None:
        split_files = {}
        for split, stem in (("train", "train"), ("val", "dev"), ("test", "test")):
            cand = path.parent / f"Flickr_8k.{stem}Images.txt"
            if cand.is_file():
                split_files[split] = cand
    return _apply_split_files(data, split_files)


def _apply_split_files(data: CaptionData, split_files: dict[str, str | os.PathLike]) -> CaptionData:
    """``data.splits`` from lists of image file names (one per line); names not in ``data`` are ignored."""
    index = {p.name: i for i, p in enumerate(data.images)}
    for split, f in split_files.items():
        f = Path(f)
        if not f.is_file():
            raise DataError(f"split file '{f}' does not exist")
        names = [n.strip() for n in _open_text(f) if n.strip()]
        data.splits[split] = [index[n] for n in names if n in index]
    return data


def _split_folder(path: Path) -> dict[str, Path]:
    """``splits/{train,dev,test}.txt`` beside a CSV/TSV caption file (``dev`` or ``val`` is the validation list)."""
    found = {}
    for split, stems in (("train", ("train",)), ("val", ("dev", "val")), ("test", ("test",))):
        for stem in stems:
            cand = path.parent / "splits" / f"{stem}.txt"
            if cand.is_file():
                found[split] = cand
                break
    return found


def read_karpathy(path: Path, image_dir: Path | None = None) -> CaptionData:
    """Karpathy's split JSON; ``restval`` counts as train (as in his and most later work)."""
    obj = json.loads(_open_text(path).read())
    entries = obj.get("images") if isinstance(obj, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"'{path}' is not a Karpathy split file (no 'images' list)")
    names, caps, splits = [], [], {}
    for k, e in enumerate(entries):
        try:
            name = str(Path(e.get("filepath", "")) / e["filename"])
            sents = [s.get("raw") or " ".join(s["tokens"]) for s in e["sentences"]]
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"'{path}': image entry {k} lacks 'filename' or 'sentences'") from None
        split = {"restval": "train"}.get(e.get("split", "train"), e.get("split", "train"))
        splits.setdefault(split, []).append(len(names))
        names.append(name)
        caps.append([" ".join(s.split()) for s in sents if s and s.strip()])
    root = _image_dir_for(path, image_dir, names[0]) if names else path.parent
    return CaptionData([root / n for n in names], caps, splits, str(path), "karpathy")


def read_coco(path: Path, image_dir: Path | None = None) -> CaptionData:
    """COCO ``captions_*.json``; the images folder defaults to ``<root>/<split>`` (e.g. ``val2014``)."""
    obj = json.loads(_open_text(path).read())
    try:
        files = {im["id"]: im["file_name"] for im in obj["images"]}
        anns = [(a["image_id"], a["caption"]) for a in obj["annotations"]]
    except (KeyError, TypeError):
        raise DataError(f"'{path}' is not a COCO captions file (images[].id/file_name, "
                        "annotations[].image_id/caption)") from None
    pairs = []
    for image_id, caption in anns:
        if image_id not in files:
            raise DataError(f"'{path}': an annotation names image id {image_id}, which is not in 'images'")
        pairs.append((files[image_id], caption))
    if image_dir is None and pairs:
        stem = path.stem.removeprefix("captions_")  # captions_val2014.json -> val2014
        for cand in (path.parent.parent / stem, path.parent / stem, path.parent.parent / "images" / stem):
            if (cand / pairs[0][0]).exists():
                image_dir = cand
                break
    return _group(path, pairs, image_dir, "coco")


def split_by_image(n: int, val: int | float, test: int | float = 0, seed: int = 0) -> dict[str, list[int]]:
    """A seeded random split of image indices (never of captions): counts, or fractions when < 1."""
    import random

    def count(x):
        return int(round(x * n)) if isinstance(x, float) and x < 1 else int(x)

    n_val, n_test = count(val), count(test)
    if n_val + n_test >= n:
        raise DataError(f"cannot hold out {n_val} validation and {n_test} test images of {n}; "
                        "at least one must remain for training")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out = {"val": sorted(order[:n_val]), "train": sorted(order[n_val + n_test:])}
    if n_test:
        out["test"] = sorted(order[n_val:n_val + n_test])
    return out
