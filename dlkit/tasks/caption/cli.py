"""`dlkit caption` and `dlkit caption-train`: thin commands over dlkit.tasks.caption (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (Device, Json, Lr, MaxTime, Model, Out, Overwrite, Precision, Quiet, Resume, SaveDtype,
                                Seed, Threads, opt)

app = typer.Typer()


@app.command("caption-train")
def caption_train(
    data: Annotated[Path, opt("--data", help="Caption file (CSV/TSV image,caption; Flickr8k.token.txt; Karpathy "
                                                "dataset_*.json; COCO captions_*.json) or a folder holding one.")],
    images: Annotated[Optional[Path], opt("--images", help="Image folder (default: found beside the caption file).")] = None,
    format: Annotated[str, opt("--format", choices=("auto", "csv", "tsv", "flickr8k", "karpathy", "coco"),
                               help="Caption file format.")] = "auto",
    out: Out = Path("runs/caption"),
    arch: Annotated[str, opt("--arch", choices=("nic", "attention"), help="nic (Show and Tell) or attention (Show, "
                             "Attend and Tell).")] = "attention",
    preset: Annotated[str, opt("--preset", choices=("small", "tiny"), help="Decoder size.")] = "small",
    embed: Annotated[Optional[int], opt("--embed", min=8, help="Word embedding size (default: the preset's).")] = None,
    hidden: Annotated[Optional[int], opt("--hidden", min=8, help="LSTM size (default: the preset's).")] = None,
    dropout: Annotated[Optional[float], opt("--dropout", min=0.0, max=0.9, help="Dropout (default: the preset's).")] = None,
    encoder: Annotated[str, opt("--encoder", help="efficientnet-lite0 (ImageNet weights, offline), "
                                                   "torchvision:NAME (e.g. torchvision:resnet50) or tiny-cnn.",
                                 panel="Encoder")] = "efficientnet-lite0",
    pretrained: Annotated[Optional[bool], opt("--pretrained/--no-pretrained", help="ImageNet weights for the encoder "
                                               "(torchvision: only when already on this machine).", panel="Encoder")] = None,
    encoder_weights: Annotated[Optional[Path], opt("--encoder-weights", help="Local encoder state_dict (.pth/.safetensors).",
                                                    panel="Encoder")] = None,
    finetune_encoder: Annotated[bool, opt("--finetune-encoder", help="Train the encoder too (default: frozen, "
                                           "features cached once).", panel="Encoder")] = False,
    encoder_lr: Annotated[float, opt("--encoder-lr", min=0.0, help="Learning rate of a fine-tuned encoder.",
                                      panel="Encoder")] = 1e-4,
    image_size: Annotated[Optional[int], opt("--image-size", min=16, help="Encoder input side (default: the encoder's).",
                                              panel="Encoder")] = None,
    resize: Annotated[str, opt("--resize", choices=("squash", "crop", "pad"), help="How a photo that is not square "
                               "becomes the encoder's square input: squash it, crop its centre, or pad it (stored in "
                               "the model; `caption` uses it).", panel="Encoder")] = "squash",
    feature_cache: Annotated[Optional[Path], opt("--feature-cache", help="Folder for cached image features "
                                                  "(default: $DLKIT_HOME/cache/caption-features).", panel="Encoder")] = None,
    no_feature_cache: Annotated[bool, opt("--no-feature-cache", help="Keep features in memory only.", panel="Encoder")] = False,
    min_count: Annotated[int, opt("--min-count", min=1, help="Vocabulary: words seen at least this often.")] = 5,
    max_len: Annotated[int, opt("--max-len", min=2, help="Longest caption in words.")] = 25,
    val_images: Annotated[float, opt("--val-images", min=0.0, help="Validation images (count, or fraction < 1) when the "
                                      "file has no splits; split by image.")] = 0.1,
    test_images: Annotated[float, opt("--test-images", min=0.0, help="Test images held out and scored once at the end.")] = 0,
    on_missing: Annotated[str, opt("--on-missing", choices=("skip", "stop"), help="Images named by the captions but "
                                   "absent: skip them (reported) or stop.")] = "skip",
    epochs: Annotated[int, opt("--epochs", min=1, help="Epochs (early stopping may end sooner).", panel="Training")] = 30,
    batch_size: Annotated[int, opt("--batch-size", min=1, help="Captions per step per process.", panel="Training")] = 32,
    lr: Lr = 4e-4,
    clip: Annotated[float, opt("--clip", min=0.0, help="Gradient-norm clipping (0: off).", panel="Training")] = 5.0,
    attention_reg: Annotated[float, opt("--attention-reg", min=0.0, help="Doubly stochastic regularisation weight "
                                         "(attention).", panel="Training")] = 1.0,
    label_smoothing: Annotated[float, opt("--label-smoothing", min=0.0, max=0.5, help="Label smoothing of the "
                                           "word cross-entropy (0: off).", panel="Training")] = 0.0,
    patience: Annotated[int, opt("--patience", min=1, help="Stop after N epochs without a better validation CIDEr-D.",
                                  panel="Training")] = 6,
    val_beam: Annotated[int, opt("--val-beam", min=1, help="Beam size for the validation captions.", panel="Training")] = 3,
    pretrain_text: Annotated[Optional[Path], opt("--pretrain-text", help="Sentences (one per line, .gz ok) to pretrain "
                                                  "the decoder on as a caption language model.", panel="Training")] = None,
    pretrain_epochs: Annotated[int, opt("--pretrain-epochs", min=1, help="Epochs over --pretrain-text.",
                                         panel="Training")] = 2,
    pretrain_batch_size: Annotated[int, opt("--pretrain-batch-size", min=1, help="Sentences per pretraining step.",
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
    --resume continue. Ctrl-C saves the state and exits with code 130. --lr is the decoder's (Adam, cosine
    decay to a tenth of it); a fine-tuned encoder has its own --encoder-lr.

    Examples:

      dlkit caption-train --data flickr8k/captions.csv --feature-cache runs/cap/features --out runs/cap

      dlkit caption-train --data Flickr8k.token.txt --images Flicker8k_Dataset --arch nic --out runs/nic

      dlkit caption-train --data dataset_coco.json --images coco/ --pretrain-text extra.en.gz --out runs/coco
    """
    if val_images <= 0:
        raise UsageError("--val-images must be positive (a count, or a fraction below 1)")
    if not data.exists():
        raise UsageError(f"--data '{data}' does not exist")
    if pretrain_text is not None and not pretrain_text.exists():  # a file, a FIFO or <(...)
        raise UsageError(f"--pretrain-text '{pretrain_text}' does not exist")

    from dlkit.core.training import run_training
    from dlkit.tasks.caption.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), images=str(images) if images else None, format=format, out=str(out), arch=arch,
        preset=preset, embed=embed, hidden=hidden, dropout=dropout, encoder=encoder, pretrained=pretrained,
        encoder_weights=str(encoder_weights) if encoder_weights else None, finetune_encoder=finetune_encoder,
        encoder_lr=encoder_lr, image_size=image_size, resize=resize, min_count=min_count, max_len=max_len, val_images=val_images,
        test_images=test_images, epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr / 10, clip=clip,
        alpha_c=attention_reg, label_smoothing=label_smoothing, patience=patience, val_beam=val_beam,
        pretrain_text=str(pretrain_text) if pretrain_text else None, pretrain_epochs=pretrain_epochs,
        pretrain_batch_size=pretrain_batch_size,
        on_missing=on_missing, feature_cache="" if no_feature_cache else (str(feature_cache) if feature_cache else None),
        max_time=max_time, seed=seed, save_dtype=save_dtype, resume=resume,
    )

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=_trained)


def _trained(result, report) -> None:
    best = result.best or {}
    line = (f"best val (epoch {best.get('epoch')}): BLEU-1 {best.get('bleu1', 0):.3f} BLEU-4 {best.get('bleu4', 0):.3f} "
            f"CIDEr-D {best.get('cider_d', 0):.3f}") if best else "no validation yet"
    if result.test:
        line += (f"; test BLEU-1 {result.test['bleu1']:.3f} BLEU-4 {result.test['bleu4']:.3f} "
                 f"CIDEr-D {result.test['cider_d']:.3f}")
    report.trained(result.model_path, f"{line}; {result.seconds:.0f} s", epochs=result.epochs, best=result.best,
                   test=result.test, seconds=result.seconds, stopped=result.stopped)


@app.command("caption")
def caption(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders, globs, or - to read paths from stdin.",
                                                show_default=False)],
    model: Model = "flickr8k-attention",
    beam: Annotated[int, opt("--beam", min=1, max=64, help="Beam size (1: greedy).")] = 3,
    greedy: Annotated[bool, opt("--greedy", help="Greedy decoding (same as --beam 1).")] = False,
    n_best: Annotated[int, opt("--n-best", min=1, help="Captions per image (at most --beam), best first.")] = 1,
    alpha: Annotated[float, opt("--length-penalty", min=0.0, help="GNMT length penalty alpha (0: plain log-prob).")] = 0.0,
    no_repeat: Annotated[int, opt("--no-repeat-ngram", min=0, help="Never repeat an n-gram of this size in a "
                                   "caption (0: off; stops 'a red jacket is wearing a red jacket ...').")] = 3,
    batch_size: Annotated[int, opt("--batch-size", min=1, help="Images per forward pass.")] = 16,
    resize: Annotated[Optional[str], opt("--resize", choices=("squash", "crop", "pad"), help="How a photo that is "
                                         "not square becomes the encoder's input (default: the model's).")] = None,
    attention_plot: Annotated[Optional[Path], opt("--attention-plot", help="Write Xu et al.'s figure (each word's "
                                                   "attention) per image into this folder (attention models).")] = None,
    overwrite: Overwrite = False,
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
    from dlkit.tasks.caption.infer import DecodeSettings

    settings = DecodeSettings(beam=1 if greedy else beam, n_best=n_best, alpha=alpha, no_repeat=no_repeat,
                              batch_size=batch_size, resize=resize, plot_dir=str(attention_plot) if attention_plot else None,
                              overwrite=overwrite)

    from dlkit.core.io import results
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.jobs import CaptionJob, caption_job

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    job = CaptionJob.from_inputs(list(inputs), model, settings, report.warn)
    several = len(job.paths) > 1
    outcome = caption_job(job, rt, report, emit=lambda fc: results.line(_lines(fc, json_out, several, n_best > 1)))
    results.finish()
    outcome.raise_if_failed()


def _lines(fc, json_out: bool, several: bool, scores: bool) -> str:
    """One image's result as printed: a JSON object, or one line per caption ([path<TAB>][logprob<TAB>]caption)."""
    if json_out:
        best = fc.captions[0]
        return json.dumps({"path": fc.path, "caption": best.caption, "logprob": round(best.logprob, 4),
                           "n_best": [{"caption": c.caption, "logprob": round(c.logprob, 4)} for c in fc.captions]})
    return "\n".join("\t".join(([fc.path] if several else []) + ([f"{c.logprob:.4f}"] if scores else []) + [c.caption])
                     for c in fc.captions)
