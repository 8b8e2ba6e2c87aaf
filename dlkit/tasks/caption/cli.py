"""`dlkit caption` and `dlkit caption-train`: thin commands over dlkit.tasks.caption (no torch at import)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (opt as _opt, Device, Json, MaxTime, Out, Overwrite, Precision, Quiet, Resume, SaveDtype, Seed,
                                Threads)

app = typer.Typer()
DEFAULT_MODELS = ("flickr8k-attention", "flickr8k-nic")


class Arch(str, Enum):
    nic = "nic"
    attention = "attention"


class Preset(str, Enum):
    small = "small"
    tiny = "tiny"


class Format(str, Enum):
    auto = "auto"
    csv = "csv"
    tsv = "tsv"
    flickr8k = "flickr8k"
    karpathy = "karpathy"
    coco = "coco"


class OnMissing(str, Enum):
    skip = "skip"
    stop = "stop"



@app.command("caption-train")
def caption_train(
    data: Annotated[Path, _opt("--data", help="Caption file (CSV/TSV image,caption; Flickr8k.token.txt; Karpathy "
                                                "dataset_*.json; COCO captions_*.json) or a folder holding one.")],
    images: Annotated[Optional[Path], _opt("--images", help="Image folder (default: found beside the caption file).")] = None,
    format: Annotated[Format, _opt("--format", help="Caption file format.")] = Format.auto,
    out: Out = Path("runs/caption"),
    arch: Annotated[Arch, _opt("--arch", help="nic (Show and Tell) or attention (Show, Attend and Tell).")] = Arch.attention,
    preset: Annotated[Preset, _opt("--preset", help="Decoder size.")] = Preset.small,
    embed: Annotated[Optional[int], _opt("--embed", min=8, help="Word embedding size (default: the preset's).")] = None,
    hidden: Annotated[Optional[int], _opt("--hidden", min=8, help="LSTM size (default: the preset's).")] = None,
    dropout: Annotated[Optional[float], _opt("--dropout", min=0.0, max=0.9, help="Dropout (default: the preset's).")] = None,
    encoder: Annotated[str, _opt("--encoder", help="efficientnet-lite0 (ImageNet weights, offline), "
                                                   "torchvision:NAME (e.g. torchvision:resnet50) or tiny-cnn.",
                                 panel="Encoder")] = "efficientnet-lite0",
    pretrained: Annotated[Optional[bool], _opt("--pretrained/--no-pretrained", help="ImageNet weights for the encoder "
                                               "(torchvision: only when already on this machine).", panel="Encoder")] = None,
    encoder_weights: Annotated[Optional[Path], _opt("--encoder-weights", help="Local encoder state_dict (.pth/.safetensors).",
                                                    panel="Encoder")] = None,
    finetune_encoder: Annotated[bool, _opt("--finetune-encoder", help="Train the encoder too (default: frozen, "
                                           "features cached once).", panel="Encoder")] = False,
    encoder_lr: Annotated[float, _opt("--encoder-lr", min=0.0, help="Learning rate of a fine-tuned encoder.",
                                      panel="Encoder")] = 1e-4,
    image_size: Annotated[Optional[int], _opt("--image-size", min=16, help="Encoder input side (default: the encoder's).",
                                              panel="Encoder")] = None,
    feature_cache: Annotated[Optional[Path], _opt("--feature-cache", help="Folder for cached image features "
                                                  "(default: $DLKIT_HOME/cache/caption-features).", panel="Encoder")] = None,
    no_feature_cache: Annotated[bool, _opt("--no-feature-cache", help="Keep features in memory only.", panel="Encoder")] = False,
    min_count: Annotated[int, _opt("--min-count", min=1, help="Vocabulary: words seen at least this often.")] = 5,
    max_len: Annotated[int, _opt("--max-len", min=2, help="Longest caption in words.")] = 25,
    val_images: Annotated[float, _opt("--val-images", min=0.0, help="Validation images (count, or fraction < 1) when the "
                                      "file has no splits; split by image.")] = 0.1,
    test_images: Annotated[float, _opt("--test-images", min=0.0, help="Test images held out and scored once at the end.")] = 0,
    on_missing: Annotated[OnMissing, _opt("--on-missing", help="Images named by the captions but absent: skip them "
                                          "(reported) or stop.")] = OnMissing.skip,
    epochs: Annotated[int, _opt("--epochs", min=1, help="Epochs (early stopping may end sooner).", panel="Training")] = 30,
    batch_size: Annotated[int, _opt("--batch-size", min=1, help="Captions per step per process.", panel="Training")] = 32,
    lr: Annotated[float, _opt("--lr", min=0.0, help="Decoder learning rate (Adam, cosine decay).", panel="Training")] = 4e-4,
    clip: Annotated[float, _opt("--clip", min=0.0, help="Gradient-norm clipping (0: off).", panel="Training")] = 5.0,
    attention_reg: Annotated[float, _opt("--attention-reg", min=0.0, help="Doubly stochastic regularisation weight "
                                         "(attention).", panel="Training")] = 1.0,
    patience: Annotated[int, _opt("--patience", min=1, help="Stop after N epochs without a better validation CIDEr-D.",
                                  panel="Training")] = 6,
    val_beam: Annotated[int, _opt("--val-beam", min=1, help="Beam size for the validation captions.", panel="Training")] = 3,
    pretrain_text: Annotated[Optional[Path], _opt("--pretrain-text", help="Sentences (one per line, .gz ok) to pretrain "
                                                  "the decoder on as a caption language model.", panel="Training")] = None,
    pretrain_epochs: Annotated[int, _opt("--pretrain-epochs", min=1, help="Epochs over --pretrain-text.",
                                         panel="Training")] = 2,
    pretrain_batch_size: Annotated[int, _opt("--pretrain-batch-size", min=1, help="Sentences per pretraining step.",
                                             panel="Training")] = 128,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    seed: Seed = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train an image captioner (Show and Tell or Show, Attend and Tell) on captioned photos.

    Validation each epoch: corpus BLEU-1..4 against all references and CIDEr-D; the best model by CIDEr-D goes
    to OUT/model.safetensors (decoder, vocabulary, encoder name and preprocessing); OUT/model.state.pt lets
    --resume continue. Ctrl-C saves the state and exits with code 130.

    Examples:

      dlkit caption-train --data flickr8k-1k/captions.txt --val-images 50 --test-images 100 --out runs/cap

      dlkit caption-train --data Flickr8k.token.txt --images Flicker8k_Dataset --arch nic --out runs/nic

      dlkit caption-train --data dataset_coco.json --images coco/ --pretrain-text extra.en.gz --out runs/coco
    """
    if save_dtype not in ("fp32", "fp16"):
        raise UsageError(f"--save-dtype must be fp32 or fp16 (got {save_dtype})")
    if val_images <= 0:
        raise UsageError("--val-images must be positive (a count, or a fraction below 1)")
    if not data.exists():
        raise UsageError(f"--data '{data}' does not exist")
    if pretrain_text is not None and not pretrain_text.is_file():
        raise UsageError(f"--pretrain-text '{pretrain_text}' does not exist")

    from dlkit.core.training import run_training
    from dlkit.tasks.caption.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), images=str(images) if images else None, format=format.value, out=str(out), arch=arch.value,
        preset=preset.value, embed=embed, hidden=hidden, dropout=dropout, encoder=encoder, pretrained=pretrained,
        encoder_weights=str(encoder_weights) if encoder_weights else None, finetune_encoder=finetune_encoder,
        encoder_lr=encoder_lr, image_size=image_size, min_count=min_count, max_len=max_len, val_images=val_images,
        test_images=test_images, epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr / 10, clip=clip,
        alpha_c=attention_reg, patience=patience, val_beam=val_beam,
        pretrain_text=str(pretrain_text) if pretrain_text else None, pretrain_epochs=pretrain_epochs,
        pretrain_batch_size=pretrain_batch_size,
        on_missing=on_missing.value, feature_cache="" if no_feature_cache else (str(feature_cache) if feature_cache else None),
        max_time=max_time * 60 if max_time else None, seed=seed, save_dtype=save_dtype, resume=resume,
    )

    def render(result, report) -> None:
        report.event("result", model=result.model_path, epochs=result.epochs, best=result.best, test=result.test,
                     seconds=result.seconds, stopped=result.stopped)
        best = result.best or {}
        line = (f"best val (epoch {best.get('epoch')}): BLEU-1 {best.get('bleu1', 0):.3f} BLEU-4 {best.get('bleu4', 0):.3f} "
                f"CIDEr-D {best.get('cider_d', 0):.3f}") if best else "no validation yet"
        if result.test:
            line += f"; test BLEU-1 {result.test['bleu1']:.3f} BLEU-4 {result.test['bleu4']:.3f} CIDEr-D {result.test['cider_d']:.3f}"
        report.info(f"{line}; {result.seconds:.0f} s; model: {result.model_path}")
        if not json_out:
            report.result(result.model_path)

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=render)


@app.command("caption")
def caption(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders, globs, or - to read paths from stdin.",
                                                show_default=False)],
    model: Annotated[Optional[str], _opt("--model", "-m", help="Bundled model NAME or .safetensors path "
                                         "(default: the bundled flickr8k model).")] = None,
    beam: Annotated[int, _opt("--beam", min=1, max=64, help="Beam size (1: greedy).")] = 3,
    greedy: Annotated[bool, _opt("--greedy", help="Greedy decoding (same as --beam 1).")] = False,
    n_best: Annotated[int, _opt("--n-best", min=1, help="Captions per image (at most --beam), best first.")] = 1,
    alpha: Annotated[float, _opt("--length-penalty", min=0.0, help="GNMT length penalty alpha (0: plain log-prob).")] = 0.0,
    no_repeat: Annotated[int, _opt("--no-repeat-ngram", min=0, help="Never repeat an n-gram of this size in a "
                                   "caption (0: off; stops 'a red jacket is wearing a red jacket ...').")] = 3,
    batch_size: Annotated[int, _opt("--batch-size", min=1, help="Images per forward pass.")] = 16,
    attention_plot: Annotated[Optional[Path], _opt("--attention-plot", help="Write Xu et al.'s figure (each word's "
                                                   "attention) per image into this folder (attention models).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Describe images in words: one line per image, in input order (`path<TAB>caption` when there are several).

    With --n-best N each image gets N lines `[path<TAB>]logprob<TAB>caption`. --json prints one object per
    image: path, caption, logprob and the n-best list.

    Unreadable files are reported one line each; the others are captioned and the exit code is 1 at the end.

    Examples:

      dlkit caption photo.jpg

      dlkit caption photos/ --beam 5 --n-best 3 --json

      find . -name '*.jpg' | dlkit caption - --attention-plot figures/
    """
    beam = 1 if greedy else beam
    if n_best > beam:
        raise UsageError(f"--n-best {n_best} cannot exceed the beam ({beam})")

    from dlkit.core.io import results
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.infer import caption_files, expand_inputs, load_captioner

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    paths = expand_inputs(inputs, report.warn)
    cap = load_captioner(model or _default_model(), rt.device)
    if attention_plot is not None and cap.cfg.arch != "attention":
        raise UsageError(f"--attention-plot needs an attention model; '{cap.meta.get('name')}' is a {cap.cfg.arch} model")
    several = len(paths) > 1

    def emit(fc) -> None:
        if json_out:
            best = fc.captions[0]
            results.line(json.dumps({"path": fc.path, "caption": best.caption, "logprob": round(best.logprob, 4),
                                     "n_best": [{"caption": c.caption, "logprob": round(c.logprob, 4)}
                                                for c in fc.captions]}))
            return
        for c in fc.captions:
            fields = ([fc.path] if several else []) + ([f"{c.logprob:.4f}"] if n_best > 1 else []) + [c.caption]
            results.line("\t".join(fields))

    outcome = caption_files(cap, paths, rt, report, beam, n_best, alpha, batch_size,
                            str(attention_plot) if attention_plot else None, emit, no_repeat=no_repeat)
    results.finish()
    outcome.raise_if_failed()


def _default_model() -> str:
    from dlkit.core.zoo import ZOO_DIR, home_dir

    for name in DEFAULT_MODELS:
        if (home_dir() / "models" / f"{name}.safetensors").exists() or (ZOO_DIR / f"{name}.safetensors").exists():
            return name
    return DEFAULT_MODELS[0]
