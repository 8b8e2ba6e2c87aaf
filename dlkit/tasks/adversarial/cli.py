"""`dlkit adv-attack` and `dlkit adv-train`: thin commands over dlkit.tasks.adversarial (no torch at import).

Each parses its options, builds one job or config (which checks itself), calls one task function and renders
its result through the reporter (stdout for results, under the closed-stdout policy; stderr for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import opt as _opt, BatchSize, Data, Device, Epochs, Json, Lr, MaxTime, Out, Overwrite, \
    Precision, Quiet, Resume, SaveDtype, Seed, Threads
from dlkit.tasks.adversarial.recipe import METHODS as TRAIN_METHODS
from dlkit.tasks.adversarial.spec import METHODS, parse_eps, parse_eps_list, parse_methods, parse_transforms

app = typer.Typer()

IMAGENET = "imagenet-efficientnet-lite0"
_ATTACK = "Attack"
_DATA = "Dataset mode"


@app.command("adv-attack")
def adv_attack(
    image: Annotated[Optional[Path], typer.Argument(help="The image to attack (or use --dataset / --data).",
                                                    show_default=False)] = None,
    model: Annotated[Optional[list[str]], _opt("--model", "-m", help="Classifier: a bundled name (mnist-cnn, "
                     f"mnist-robust, cifar10-airbench), a classifier .safetensors file, {IMAGENET}, or torchvision:NAME with local "
                     f"weights. Default: {IMAGENET} for an image, the dataset's bundled model for a dataset. Dataset "
                     "mode takes it more than once: the models side by side.")] = None,
    method: Annotated[str, _opt("--method", help=f"Attack(s), comma-separated: {', '.join(METHODS)}.", panel=_ATTACK)] = "fgsm",
    eps: Annotated[Optional[str], _opt("--eps", help="Budget: 8 (pixel levels of 255), 8/255 or 0.03; a comma list in "
                   "dataset mode. pgd-l2: the L2 radius. deepfool/cw search freely; eps clips them. Default: 8 "
                   "(dataset mode: 0,2,4,8,16; --robustness: mnist 0,0.1,0.2,0.3, cifar10 0,2,4,8).", panel=_ATTACK)] = None,
    target: Annotated[Optional[str], _opt("--target", help="Targeted attack: class name (gibbon) or index.", panel=_ATTACK)] = None,
    steps: Annotated[Optional[int], _opt("--steps", min=1, max=100_000, help="Iterations (default: the method's; "
                     "bim/ill: Kurakin's min(eps+4, 1.25 eps), pgd/mifgsm 10, apgd-ce 100, deepfool 50, cw 100).",
                     panel=_ATTACK)] = None,
    step_size: Annotated[Optional[str], _opt("--step-size", help="Step per iteration, in eps units (2/255) (default: "
                         "bim/ill 1/255, pgd 2.5 eps/steps, mifgsm eps/steps).", panel=_ATTACK)] = None,
    restarts: Annotated[Optional[int], _opt("--restarts", min=1, max=1000, help="pgd, apgd-ce: random restarts; the "
                        "first success is kept (default 1; 10 with --robustness).", panel=_ATTACK)] = None,
    random_start: Annotated[bool, _opt("--random-start/--no-random-start", help="pgd: start at a random point of the "
                                       "eps ball.", panel=_ATTACK)] = True,
    decay: Annotated[float, _opt("--decay", min=0.0, help="mifgsm: momentum decay.", panel=_ATTACK)] = 1.0,
    overshoot: Annotated[float, _opt("--overshoot", min=0.0, help="deepfool: overshoot.", panel=_ATTACK)] = 0.02,
    cw_c: Annotated[float, _opt("--cw-c", min=0.0, help="cw: weight of the misclassification term.", panel=_ATTACK)] = 1.0,
    cw_kappa: Annotated[float, _opt("--cw-kappa", min=0.0, help="cw: confidence margin.", panel=_ATTACK)] = 0.0,
    cw_lr: Annotated[float, _opt("--cw-lr", min=1e-9, help="cw: Adam learning rate.", panel=_ATTACK)] = 0.01,
    cw_search: Annotated[int, _opt("--cw-search", min=1, max=100, help="cw: binary-search steps over c (1: fixed c).",
                                   panel=_ATTACK)] = 1,
    top_k: Annotated[int, _opt("--top-k", min=1, max=20, help="Predictions shown before and after.")] = 5,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Write the adversarial image here (PNG keeps it exactly).")] = None,
    figure: Annotated[Optional[Path], _opt("--figure", help="Write the lecture's figure x + eps sign(grad) = x_adv (PNG).")] = None,
    transform: Annotated[Optional[str], _opt("--transform", help="Re-classify after jpeg:75,resize:0.5,blur:1,noise:2 "
                         "(Kurakin et al.'s physical-world check: does the attack survive?).")] = None,
    dataset: Annotated[Optional[str], _opt("--dataset", choices=("mnist", "cifar10"), help="The test split of --data "
                       "(omit with an image folder as --data).", panel=_DATA)] = None,
    data: Annotated[Optional[Path], _opt("--data", help="mnist.npz, cifar10_jpeg.npz, or an image folder (<class>/<image>, "
                    "or test/<class>/<image>; folder names are matched to the model's class names).", panel=_DATA)] = None,
    robustness: Annotated[bool, _opt("--robustness", help="The stronger attack set for robust models: FGSM, PGD-40 and "
                          "PGD-100 with --restarts (default 10), APGD-CE (replaces --method).", panel=_DATA)] = False,
    limit: Annotated[Optional[int], _opt("--limit", min=1, help="Attack the first N test examples.", panel=_DATA)] = None,
    per_class: Annotated[Optional[int], _opt("--per-class", min=1, help="Attack the first N test examples of each class "
                         "(for files sorted by class, such as cifar10_jpeg.npz).", panel=_DATA)] = None,
    batch_size: Annotated[int, _opt("--batch-size", min=1, max=100_000, help="Images per attack batch on the device.",
                                    panel=_DATA)] = 128,
    plot: Annotated[Optional[Path], _opt("--plot", help="Write accuracy against eps as a PNG.", panel=_DATA)] = None,
    save_adv: Annotated[Optional[Path], _opt("--save-adv", help="Keep the adversarial images: FILE.npz or a folder of PNGs.",
                        panel=_DATA)] = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "fp32",
    threads: Threads = None,
    seed: Seed = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Fool a classifier with adversarial examples (FGSM, BIM, ILL, PGD, MI-FGSM, APGD-CE, DeepFool, C&W), or
    measure the accuracy of one or more classifiers under attack on a test set.

    Attacks work on pixels in [0, 1]; the model wrapper owns the normalisation. One image: top-k before and
    after, the size of the perturbation, the adversarial image (-o) and the lecture's figure (--figure). A test
    set: a table of accuracy under attack for each method and eps (eps 0 = clean accuracy), several models side
    by side, and a plot.

    Examples:

      dlkit adv-attack cat.jpg --eps 0.007 -o adv.png --figure fig.png

      dlkit adv-attack cat.jpg --method pgd --target gibbon --eps 2 --transform jpeg:75,blur:1

      dlkit adv-attack --dataset cifar10 --data cifar10_jpeg.npz --per-class 100 --method fgsm,pgd --plot acc.png

      dlkit adv-attack --dataset mnist --data mnist.npz -m mnist-cnn -m mnist-robust --robustness --limit 1000
    """
    from dlkit.vision.attacks import AttackConfig

    methods = parse_methods(method)
    step = parse_eps(step_size, "--step-size") if step_size is not None else None
    if step == 0:
        from dlkit.core.errors import UsageError

        raise UsageError("--step-size must be positive")
    base = AttackConfig(method=methods[0], steps=steps, step_size=step, restarts=restarts or 1, random_start=random_start,
                        decay=decay, overshoot=overshoot, cw_c=cw_c, cw_kappa=cw_kappa, cw_lr=cw_lr, cw_search=cw_search)
    common = dict(target=target, transforms=parse_transforms(transform), overwrite=overwrite)
    given = lambda opts: tuple(name for name, value in opts.items() if value not in (None, False))  # noqa: E731
    if image is not None:
        from dlkit.tasks.adversarial.jobs import PhotoJob, attack_photo as run
        from dlkit.tasks.adversarial.render import render_photo

        stray = given({"--dataset": dataset, "--data": data, "--robustness": robustness, "--plot": plot,
                       "--save-adv": save_adv, "--limit": limit, "--per-class": per_class})
        if model and len(model) > 1:
            stray = ("--model (more than one)",) + stray
        job = PhotoJob.build(str(image), methods, parse_eps_list(eps) if eps is not None else None, base,
                             model=model[0] if model else IMAGENET, top_k=top_k, out=_s(out), figure=_s(figure),
                             stray=stray, **common)
        render = lambda res, report: render_photo(res, str(image), report, json_out)  # noqa: E731
    else:
        from dlkit.tasks.adversarial.jobs import ROBUST_EPS, DatasetJob, attack_dataset as run, robustness_attacks
        from dlkit.tasks.adversarial.render import render_dataset

        if dataset is None and data is None:
            from dlkit.core.errors import UsageError

            raise UsageError("give an image to attack, or --dataset/--data for a robustness table (see --help)")
        attacks = robustness_attacks(base, restarts or 10) if robustness else [_with(base, m) for m in methods]
        default_eps = ROBUST_EPS.get(dataset or "", [0.0, 2 / 255, 4 / 255, 8 / 255]) if robustness else None
        job = DatasetJob(list(model or []), attacks, parse_eps_list(eps) if eps is not None else
                         (default_eps or parse_eps_list("0,2,4,8,16")), dataset, _s(data), limit, per_class,
                         batch_size, plot=_s(plot), save_adv=_s(save_adv), stray=given({"--out": out, "--figure": figure}),
                         **common)
        render = lambda rows, report: render_dataset(rows, job, report, json_out)  # noqa: E731
    _run(run, job, render, device, precision, threads, seed, quiet, json_out)


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


def _with(base, method: str):
    from dataclasses import replace

    return replace(base, method=method)


def _run(task, job, render, device, precision, threads, seed, quiet, json_out) -> None:
    """Runtime and reporter, the one task function, its result on stdout."""
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime

    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    report = Reporter(quiet=quiet, json_mode=json_out)
    render(task(job, rt, report), report)


_TRAIN = "Adversarial training"


@app.command("adv-train")
def adv_train(
    data: Data = None,
    dataset: Annotated[Optional[str], _opt("--dataset", choices=("mnist", "cifar10"), help="What --data holds "
                       "(default: mnist for a .npz; omit for an image folder).")] = None,
    method: Annotated[str, _opt("--method", choices=TRAIN_METHODS, panel=_TRAIN,
                      help="pgd: Madry et al. 2018 (PGD with a random start); fgsm-rs: Wong et al. 2020 (FGSM from a "
                      "random start, step 1.25 eps); fgsm: no random start (overfits catastrophically); none: "
                      "standard training.")] = "pgd",
    eps: Annotated[Optional[str], _opt("--eps", panel=_TRAIN, help="Training budget: 0.3, 8/255 or 8 (pixel levels). "
                   "Default: mnist 0.3, cifar10 8/255.")] = None,
    attack_steps: Annotated[Optional[int], _opt("--attack-steps", min=1, max=1000, panel=_TRAIN,
                            help="pgd iterations (default: mnist 40, cifar10 7).")] = None,
    step_size: Annotated[Optional[str], _opt("--step-size", panel=_TRAIN, help="Attack step, in eps units (default: "
                         "pgd mnist 0.01, cifar10 2/255, or 2.5 eps/steps with --eps or --attack-steps; fgsm-rs 1.25 eps).")] = None,
    eps_warmup: Annotated[int, _opt("--eps-warmup", min=0, max=1000, panel=_TRAIN,
                          help="Epochs over which eps rises linearly from 0.")] = 0,
    overfit_check: Annotated[bool, _opt("--overfit-check/--no-overfit-check", panel=_TRAIN,
                             help="Stop on catastrophic overfitting (PGD accuracy on a training batch collapses while "
                             "FGSM accuracy climbs) and keep the last good epoch.")] = True,
    arch: Annotated[Optional[str], _opt("--arch", choices=("cnn-small", "mnist-cnn", "resnet", "mlp-1x512", "mlp-3x512",
                    "alexnet-small"), help="Network (default: cnn-small for mnist, resnet for cifar10).")] = None,
    width: Annotated[Optional[int], _opt("--width", min=1, max=512, help="First convolution width of cnn-small "
                     "(default 16) or mnist-cnn (32).")] = None,
    optimizer: Annotated[Optional[str], _opt("--optimizer", choices=("sgd", "adam"), panel="Training",
                         help="Default: adam for mnist (Wong et al.), sgd with Nesterov momentum otherwise.")] = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    weight_decay: Annotated[Optional[float], _opt("--weight-decay", min=0.0, max=0.99, panel="Training",
                            help="L2 on the weights (default: mnist 0, cifar10 5e-4).")] = None,
    subset: Annotated[Optional[int], _opt("--subset", min=1, help="Train on N random training images.")] = None,
    test_subset: Annotated[Optional[int], _opt("--test-subset", min=1, help="Test on N random test images.")] = None,
    eval_images: Annotated[int, _opt("--eval-images", min=0, max=100_000, help="Test images attacked with PGD-20 at "
                           "the end (0: none).")] = 1000,
    init: Annotated[Optional[Path], _opt("--init", panel=_TRAIN, help="Start from the weights of this classifier "
                    "file (same --arch and --width), e.g. to fine-tune a fast FGSM model with PGD.")] = None,
    out: Out = Path("runs/adv-train"),
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 0,
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a classifier that resists adversarial examples (Madry et al. 2018 PGD training, or Wong et al.
    2020's fast FGSM training) and write it as a classifier file that adv-attack reads.

    After each epoch the accuracy under FGSM and PGD on a fixed training batch is shown; when PGD accuracy
    collapses while FGSM accuracy climbs (catastrophic overfitting), training stops and keeps the last good
    epoch. Results: one line on stdout (--json: one object), the model in OUT/model.safetensors.

    Examples:

      dlkit adv-train --data mnist.npz --method fgsm-rs --epochs 10 --out runs/mnist-robust

      dlkit adv-train --data mnist.npz --method pgd --eps 0.3 --attack-steps 40 --step-size 0.01

      dlkit adv-train --dataset cifar10 --data cifar10_jpeg.npz --method fgsm-rs --eps 8 --epochs 15

      dlkit adv-attack --robustness --model runs/mnist-robust/model.safetensors --dataset mnist --data mnist.npz
    """
    from dlkit.tasks.adversarial.recipe import AdvTrainConfig

    folder = data is not None and data.is_dir()
    cfg = AdvTrainConfig(
        dataset=None if folder else (dataset or "mnist"), data=str(data) if data else None, method=method,
        eps=parse_eps(eps) if eps is not None else None, steps=attack_steps,
        step_size=parse_eps(step_size, "--step-size") if step_size is not None else None, eps_warmup=eps_warmup,
        arch=arch, width=width, epochs=epochs, batch_size=batch_size or 128, optimizer=optimizer, lr=lr,
        weight_decay=weight_decay,
        subset=subset, test_subset=test_subset, overfit_check=overfit_check, eval_n=eval_images, max_time=max_time,
        seed=seed, resume=resume, out=str(out), save_dtype=save_dtype, init=str(init) if init else None)
    from dlkit.core.training import run_training
    from dlkit.tasks.adversarial.render import render_training
    from dlkit.tasks.adversarial.train import adv_train as train

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision, seed=seed,
                 threads=threads, json_out=json_out, quiet=quiet,
                 render=lambda result, report: render_training(result, report, json_out))
