"""Bundle the robust MNIST classifier when it meets the bar, with its card, from the files its run wrote.

    python benchmarks/adv_bundle.py runs/mnist-robust [--name mnist-robust] [--dry-run] [--section]
    python benchmarks/adv_bundle.py runs/mnist-robust --check-fp16 --data mnist.npz

``benchmarks/adv_mnist_robust.sh`` writes what this reads:

- RUN/model.safetensors (``adv-train`` output) and RUN.cmd (the training command, one line);
- RUN.train.jsonl (its --json events; the last ``result`` counts, a resumed run has one per chunk);
- RUN.eval.jsonl (``adv-attack --json``: PGD-40, step 0.01, 10 restarts at eps 0.3 on the full test set);
- RUN.table.jsonl (``adv-attack --json`` with the standard model beside it: FGSM and PGD at several eps);
- RUN.log: ``== train`` / ``== eval`` / ``== table`` markers, each followed by ``/usr/bin/time -v`` and
  ``uptime`` lines (a training split into --max-time chunks has one ``== train`` block per chunk).

The bar: >= 88% under the attack and >= 98% clean. If met, writes dlkit/zoo/NAME.safetensors (the evaluated
fp16 weights, metadata with the full-test figures) and NAME.md; in every case prints the side-by-side table as
Markdown (``--section``: the whole RESULTS.md section). ``--check-fp16`` compares the fp16 file with the run's
fp32 weights (RUN/state.pt): clean accuracy on the test set and PGD-40 on its first 1,000 images.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dlkit from this checkout
BAR_ROBUST, BAR_CLEAN = 0.88, 0.98


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] if path.exists() else []


def timings(log: Path) -> dict:
    """Per phase (``== NAME`` marker lines): summed CPU seconds (user + system), wall times and load averages of
    the ``/usr/bin/time -v`` blocks and ``uptime`` lines that follow the marker."""
    text = log.read_text() if log.exists() else ""
    phases: dict[str, dict] = {}
    for block in re.split(r"^== ", text, flags=re.M)[1:]:
        name = block.split(None, 1)[0]
        p = phases.setdefault(name, {"cpu": 0.0, "wall": [], "loads": []})
        user = [float(v) for v in re.findall(r"User time \(seconds\): ([\d.]+)", block)]
        system = [float(v) for v in re.findall(r"System time \(seconds\): ([\d.]+)", block)]
        p["cpu"] += sum(user) + sum(system)
        p["wall"] += re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", block)
        p["loads"] += re.findall(r"load average: ([\d.]+, [\d.]+, [\d.]+)", block)
    return phases


def table(rows: list[dict], names: dict[str, str]) -> str:
    """Markdown: accuracy (%) of each model (columns) under each attack and eps (rows)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = list(dict.fromkeys(("clean", 0.0) if r["eps"] == 0 else (r["method"], r["eps"]) for r in rows))
    keys.sort(key=lambda k: (k[0] != "clean", k[0], k[1]))
    acc = {(r["model"], r["method"] if r["eps"] else "clean", r["eps"]): r["accuracy"] for r in rows}
    lines = ["| attack | eps | " + " | ".join(names.get(m, m) for m in models) + " |", "|---|---|" + "---:|" * len(models)]
    for method, eps in keys:
        cells = [f"{100 * acc[(m, method, eps)]:.2f}" if (m, method, eps) in acc else "" for m in models]
        lines.append(f"| {method} | {eps:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", default="mnist-robust")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--section", action="store_true", help="print the RESULTS.md section")
    ap.add_argument("--check-fp16", action="store_true", help="fp16 file against the run's fp32 weights")
    ap.add_argument("--data", help="mnist.npz (for --check-fp16)")
    ap.add_argument("--zoo", type=Path, default=ROOT / "dlkit" / "zoo")
    ap.add_argument("--bar", type=float, nargs=2, default=(BAR_ROBUST, BAR_CLEAN), metavar=("ROBUST", "CLEAN"))
    args = ap.parse_args(argv)
    if args.check_fp16:
        return check_fp16(args.run, args.data)
    r = collect(args.run)
    if r is None:
        return 1
    names = {r["model_key"]: args.name}
    print(f"full test set: clean {r['clean']['accuracy']:.2%}, PGD-40 x10 at 0.3 {r['robust']['accuracy']:.2%} "
          f"(n = {r['robust']['n']})")
    print(f"training: {r['result']['epochs']} epochs; phases {json.dumps(r['t'])}")
    ok = r["robust"]["accuracy"] >= args.bar[0] and r["clean"]["accuracy"] >= args.bar[1]
    print("meets the bar" if ok else f"below the bar ({args.bar[0]:.0%} robust, {args.bar[1]:.0%} clean): not bundled")
    fields = template_fields(r, args.name, names, ok)
    print(SECTION.format(**fields) if args.section else fields["table"])
    if not ok or args.dry_run:
        return 0 if ok else 2
    bundle(args.run / "model.safetensors", args.zoo / f"{args.name}.safetensors", r, fields)
    return 0


def collect(run: Path) -> dict | None:
    """Everything the run wrote, or None (with a line saying what is missing)."""
    model = run / "model.safetensors"
    results = [e for e in jsonl(Path(f"{run}.train.jsonl")) if e.get("event") == "result"]
    evals = jsonl(Path(f"{run}.eval.jsonl"))
    cmd = Path(f"{run}.cmd")
    clean = next((e for e in evals if e["eps"] == 0), None)
    robust = next((e for e in evals if abs(e["eps"] - 0.3) < 1e-9), None)
    if not (model.exists() and results and clean and robust and cmd.exists()):
        print(f"incomplete run: model {model.exists()}, train result {bool(results)}, eval {bool(clean and robust)}, "
              f"command {cmd.exists()}")
        return None
    stages = [results[-1]]  # a two-stage recipe: the earlier stages' results from their own folders (RUN.cmd)
    for out in re.findall(r"--out (\S+)", cmd.read_text())[:-1]:
        stages.insert(-1, next((e for e in jsonl(Path(f"{out}.train.jsonl"))[::-1] if e.get("event") == "result"), {}))
    return {"result": results[-1], "stages": stages, "clean": clean, "robust": robust, "rows": jsonl(Path(f"{run}.table-std.jsonl")) + jsonl(Path(f"{run}.table.jsonl")),
            "t": timings(Path(f"{run}.log")), "cmd": cmd.read_text().strip(), "model_key": robust["model"], "run": str(run)}


def wrap(cmd: str, width: int = 100) -> str:
    """A shell command over several lines (``\\`` continuations) at option boundaries."""
    lines, line = [], ""
    for part in re.split(r" (?=--)", cmd):
        if line and len(line) + len(part) + 3 > width:
            lines.append(line)
            line = "    " + part
        else:
            line = f"{line} {part}" if line else part
    return " \\\n".join(lines + [line])


def wrap_all(cmds: str) -> str:
    return "\n".join(wrap(c) for c in cmds.splitlines() if c.strip())


def template_fields(r: dict, name: str, names: dict, ok: bool) -> dict:
    t = r["t"]
    ev, stages = t.get("eval", {}), [t.get(k, {}) for k in ("train-fast", "train")]
    train = {"cpu": sum(p.get("cpu", 0.0) for p in stages), "wall": sum((p.get("wall", []) for p in stages), []),
             "loads": sum((p.get("loads", []) for p in stages), [])}
    tab = {"cpu": sum(t.get(k, {}).get("cpu", 0.0) for k in ("table", "table-std")),
           "loads": t.get("table-std", {}).get("loads", []) + t.get("table", {}).get("loads", [])}
    rows = r["rows"]
    return {"name": name, "clean": 100 * r["clean"]["accuracy"], "robust": 100 * r["robust"]["accuracy"],
            "n": r["robust"]["n"], "verdict": "meets" if ok else "misses",
            "epochs": " + ".join(str(st.get("epochs", "?")) for st in r["stages"]),
            "seconds": sum(h["seconds"] for st in r["stages"] for h in st.get("history", [])), "cmd": wrap_all(r["cmd"]), "run": r["run"],
            "cpu": train.get("cpu", float("nan")), "wall": " + ".join(train.get("wall", [])) or "?",
            "eval_cpu": ev.get("cpu", float("nan")), "table_cpu": tab.get("cpu", float("nan")),
            "loads": "; ".join(train.get("loads", []) + ev.get("loads", []) + tab.get("loads", [])) or "?",
            "table": table(rows, names) if rows else "(not measured)", "table_n": rows[0]["n"] if rows else 0,
            "stop": (f" (stopped: {r['result']['stopped']}; the file holds epoch {r['result'].get('kept_epoch')})"
                     if r["result"].get("stopped") else "")}


def bundle(model: Path, out: Path, r: dict, fields: dict) -> None:
    """The evaluated weights (fp16, as evaluated) under NAME, the full-test figures in the metadata, the card."""
    import torch

    from dlkit.vision.classifier import load_classifier, save_classifier

    clf = load_classifier(model)
    meta = clf.meta
    metrics = {**meta.get("metrics", {}), "test_accuracy": r["clean"]["accuracy"],
               "pgd40x10_eps0.3": {"accuracy": r["robust"]["accuracy"], "n": r["robust"]["n"], "steps": 40,
                                   "step_size": 0.01, "restarts": 10}}
    headline = (f"clean {fields['clean']:.2f}%, PGD-40 x10 at eps 0.3 {fields['robust']:.2f}% (MNIST test set)")
    save_classifier(out, clf, arch=clf.arch, arch_kwargs=clf.arch_kwargs, classes=clf.classes,
                    input_size=clf.input_size, mean=clf.mean, std=clf.std, metrics=metrics, recipe=meta.get("recipe"),
                    training={**(meta.get("training") or {}), "data": "MNIST train (60,000 images, mnist.npz)"},
                    headline=headline, dtype=torch.float16)
    card = CARD.format(**fields, size=out.stat().st_size / 1e6, arch=clf.arch, width=clf.arch_kwargs.get("width"),
                       params=sum(p.numel() for p in clf.parameters()) / 1e3)
    out.with_suffix(".md").write_text(card)
    print(f"bundled: {out} ({out.stat().st_size / 1e6:.2f} MB) and its card")


def check_fp16(run: Path, data: str | None) -> int:
    """Clean accuracy (test set) and PGD-40 accuracy at eps 0.3 (first 1,000 test images, one random start, seed
    0) of the fp16 file and of the fp32 weights of the run's state: the fp16 storage must not change them."""
    import copy

    import numpy as np
    import torch

    from dlkit.core.state import load_state
    from dlkit.vision.attacks import pgd
    from dlkit.vision.classifier import load_classifier

    if not data:
        print("--check-fp16 needs --data mnist.npz")
        return 1
    half = load_classifier(run / "model.safetensors")
    state = load_state(run / "state.pt")
    full = copy.deepcopy(half)
    weights = state["good_model"] if state.get("good_model") and half.meta.get("metrics", {}).get("stopped") == "overfit" \
        else state["model"]
    full.load_state_dict(weights)
    with np.load(data, allow_pickle=False) as z:
        x = torch.from_numpy(z["x_test"]).float().div_(255).unsqueeze(1)
        y = torch.from_numpy(z["y_test"]).long()
    for label, m in (("fp32 (state.pt)", full), ("fp16 (model.safetensors)", half)):
        m.eval()
        with torch.no_grad():
            clean = float((torch.cat([m(x[i:i + 1000]).argmax(1) for i in range(0, len(y), 1000)]) == y).float().mean())
        torch.manual_seed(0)
        adv = pgd(m, x[:1000], y[:1000], 0.3, steps=40, step_size=0.01)
        with torch.no_grad():
            rob = float((m(adv).argmax(1) == y[:1000]).float().mean())
        print(f"{label}: clean {clean:.2%} (10,000), PGD-40 at 0.3 {rob:.2%} (first 1,000)")
    return 0


SECTION = """
## Robust MNIST: adversarial training (`adv-train`) beside the standard model

`{name}` ({epochs} epochs of `adv-train`, below) against the standard `mnist-cnn`. The bar (full test set,
PGD-40 with step 0.01 and 10 random restarts at eps 0.3): >= 88% robust, >= 98% clean. This model {verdict} it:
**{clean:.2f}% clean, {robust:.2f}% robust** (n = {n}; Madry et al. 2018: 89.6% under PGD-100 with 50 restarts,
with a much larger network).

Accuracy (%) on the full MNIST test set ({table_n} images): FGSM, and PGD-40 (one random start, step 2.5 eps / 40);
L-inf, pixels in [0, 1]:

{table}

Commands (2 threads of the shared 2-core CPU; load averages at the starts and ends: {loads}):

```sh
{cmd}
# training: {cpu:.0f} CPU s ({wall} wall; the training loop {seconds:.0f} s)
dlkit adv-attack -m {run}/model.safetensors --dataset mnist --data mnist.npz --method pgd \\
    --eps 0,0.3 --steps 40 --step-size 0.01 --restarts 10 --batch-size 1000 --threads 2 --json   # {eval_cpu:.0f} CPU s
for m in mnist-cnn {run}/model.safetensors; do   # the two columns: {table_cpu:.0f} CPU s in all
  dlkit adv-attack -m $m --dataset mnist --data mnist.npz --method fgsm,pgd --eps 0,0.1,0.2,0.3 --steps 40 \\
      --restarts 1 --batch-size 1000 --threads 2 --json
done
python benchmarks/adv_bundle.py {run} --section     # this section; without --section: the bundle
```
"""

CARD = """# {name}

An MNIST digit classifier trained to resist L-inf adversarial examples of up to eps = 0.3 (task `classifier`),
made with `dlkit adv-train`. `adv-attack` reads it like any classifier; compare it with the standard `mnist-cnn`:

```sh
dlkit adv-attack --dataset mnist --data mnist.npz -m mnist-cnn -m {name} --method fgsm,pgd --eps 0,0.1,0.2,0.3 --steps 40
```

## Results (MNIST test set, 10,000 images)

| | accuracy |
|---|---|
| clean | **{clean:.2f}%** |
| PGD-40, step 0.01, 10 random restarts, eps 0.3 | **{robust:.2f}%** (n = {n}) |

Measured on this file with
`dlkit adv-attack -m {name} --dataset mnist --data mnist.npz --method pgd --eps 0,0.3 --steps 40 --step-size 0.01 --restarts 10`
({eval_cpu:.0f} CPU s). Anchors: Madry et al. 2018 report 89.6% (PGD-100, 50 restarts; a 3.3M-parameter network);
Wong et al. 2020 about 88% for fast FGSM training. The project's bar is >= 88% robust and >= 98% clean.

Side by side with the standard model (full test set; FGSM, and PGD-40 with one random start and step
2.5 eps / 40), accuracy in %:

{table}

## Training

```sh
{cmd}
```

- {epochs} epochs{stop}; the training loop took {seconds:.0f} s, the command(s) {cpu:.0f} CPU s ({wall} wall) on
  2 threads of a shared 2-core x86-64 CPU, torch 2.14.1, one training at a time (load averages: {loads}).
- Each training batch is replaced by FGSM from a uniform random start in the eps box, one step of 1.25 eps,
  projected back (Wong, Rice & Kolter 2020, "Fast is better than free"); eps rises linearly from 0 to 0.3 over
  the first 3 epochs. Adam, cyclic learning rate (0 -> 5e-3 at 40% of training -> 0), batch 100, no weight
  decay, no augmentation, seed 0. After each epoch the catastrophic-overfitting monitor attacks 512 fixed
  training images with FGSM and PGD-10 (it did not fire).
- Data: MNIST (LeCun et al. 1998; terms: those of its authors' distribution, commonly given as CC BY-SA 3.0), the
  60,000 training images of `mnist.npz` in the original order; pixels in [0, 1], no normalisation. The 10,000
  test images were used only for the figures.
- Licence of this file: that of dlkit.

## Model and loading

- Arch `{arch}` (width {width}): conv 4x4/2 (width) - ReLU - conv 4x4/2 (2 width) - ReLU - linear -> 100 - ReLU -
  linear 100 -> 10 (the small MNIST network of Wong et al.'s experiments, 16/32 filters there); {params:.1f} K parameters, stored in fp16
  ({size:.2f} MB) and computed in fp32 after loading. The figures above are of this file.
- `load_classifier("{name}")` (`dlkit.vision.classifier`) returns it in eval mode: pixels in [0, 1] (B, 1, 28, 28) -> logits.
"""


if __name__ == "__main__":
    sys.exit(main())
