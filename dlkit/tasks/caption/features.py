"""Images -> encoder inputs -> feature maps, with a per-dataset cache so decoder epochs never re-run the CNN.

The cache file is keyed by the encoder (name, weights, input size, normalisation), the pooling and every
image's path, size and modification time; any change makes a new key. It lives in
``$DLKIT_HOME/cache/caption-features/`` unless the user names another folder (``--feature-cache``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.errors import DlkitError
from dlkit.tasks.caption.encoder import EncoderSpec, feature_map


def preprocess(img, size: int, mean, std, resize: str = "squash") -> torch.Tensor:
    """A PIL RGB image -> normalised float (3, size, size).

    ``squash``: the whole image resized to size x size, aspect ratio not kept (how Flickr8k's copies were made);
    ``crop``: the short side resized to ``size``, the centre square kept; ``pad``: the long side resized to
    ``size``, the rest filled with the normalisation mean (zero features' input). Square images give the
    same pixels with all three."""
    import numpy as np
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    if resize == "squash" or w == h:
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    else:
        k = size / (min(w, h) if resize == "crop" else max(w, h))
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        if resize == "crop":
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
        else:
            canvas = Image.new("RGB", (size, size), tuple(round(m * 255) for m in mean))
            canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
            img = canvas
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def load_pixels(path: Path, spec: EncoderSpec, max_pixels: int | None = None) -> torch.Tensor:
    """One image file -> normalised (3, S, S) as ``spec.resize`` says; bad files raise the image decoder's
    one-line error."""
    from dlkit.vision.image import DEFAULT_MAX_PIXELS, open_image

    img = open_image(path, "RGB", max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    return preprocess(img, spec.size, spec.mean, spec.std, spec.resize)


def cache_key(spec: EncoderSpec, paths: list[Path], pooled: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"encoder": {k: v for k, v in spec.to_meta().items() if k != "stored"},
                         "pooled": pooled, "v": 1}, sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def extract(encoder, paths: list[Path], spec: EncoderSpec, rt, batch_size: int = 32, pooled: bool = False,
            progress=None) -> torch.Tensor:
    """Features of every image, fp16 on the CPU: (N, L, C), or (N, C) when ``pooled``."""
    encoder.eval()
    out = []
    for i in range(0, len(paths), batch_size):
        x = torch.stack([load_pixels(p, spec) for p in paths[i : i + batch_size]]).to(rt.device)
        with rt.autocast():
            f = feature_map(encoder, x)  # (B, L, C)
        f = f.float().mean(1) if pooled else f
        out.append(f.half().cpu())
        if progress is not None:
            progress(len(x))
    return torch.cat(out)


def cached_features(encoder, paths: list[Path], spec: EncoderSpec, rt, report, cache_dir: Path | None,
                    batch_size: int = 32, pooled: bool = False) -> torch.Tensor:
    """:func:`extract` through the cache (``cache_dir`` None: no cache). The main rank writes it."""
    from safetensors.torch import save

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(spec, paths, pooled)}.safetensors"
        # pooled features can come from a cached feature map of the same images (an attention run before)
        for cand, pool in ((path, False), (Path(cache_dir) / f"{cache_key(spec, paths, False)}.safetensors", pooled)):
            feats = _read_cache(cand, len(paths), report)
            if feats is not None:
                report.info(f"caption-train: image features from the cache {cand}")
                return feats.float().mean(1).half() if pool else feats
    with report.progress(len(paths), "image features") as update:
        feats = extract(encoder, paths, spec, rt, batch_size, pooled, progress=update)
    if path is not None and rt.is_main:
        try:
            atomic_write_bytes(path, save({"features": feats.contiguous()}, metadata={"encoder": spec.name}))
        except DlkitError as e:
            report.warn(f"could not keep the feature cache: {e}")
    return feats


def _read_cache(path: Path, n: int, report) -> torch.Tensor | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        feats = load_file(str(path))["features"]
    except (SafetensorError, OSError, KeyError, ValueError):
        report.warn(f"feature cache '{path}' is unreadable; computing the features again")
        return None
    return feats if feats.shape[0] == n else None
