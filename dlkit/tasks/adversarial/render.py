"""What ``adv-attack`` and ``adv-train`` print: results on stdout through the reporter (closed-stdout policy),
summaries on stderr. Imports no torch."""

from __future__ import annotations

import json
from dataclasses import asdict

from dlkit.tasks.adversarial.spec import eps_label


def render_training(r, report, json_out: bool) -> None:
    """One result line (or one JSON object) for an ``adv-train`` run; the epoch table on stderr."""
    if json_out:
        report.result(json.dumps({"event": "result", **asdict(r)}))
        return
    for h in r.history:
        report.info(f"epoch {h.epoch:>3}: loss {h.loss:.4f} | training batch: clean {h.clean:.1%}, FGSM {h.fgsm:.1%}, "
                    f"PGD-10 {h.pgd:.1%} | {h.seconds:.0f} s")
    robust = (f", PGD-20 {r.pgd_accuracy:.2%} at eps {eps_label(r.eps)}" if r.pgd_accuracy is not None else "")
    note = {"overfit": f" (stopped: catastrophic overfitting; kept epoch {r.kept_epoch})",
            "max-time": " (stopped by --max-time)"}.get(r.stopped or "", "")
    report.result(f"{r.model}: {r.method}, {r.epochs} epochs, test accuracy {r.test_accuracy:.2%}{robust}{note}")


# ---------------------------------------------------------------- adv-attack
def render_photo(results, image: str, report, json_out: bool) -> None:
    """For each attack: top-k before and after, sizes, verdicts, then the written paths (or one JSON object)."""
    for name, r, written in results:
        if json_out:
            report.result(json.dumps({"image": image, "model": name, **r.to_json(), "written": written}))
            continue
        report.result(photo_text(r, name))
        for p in written:
            report.result(p)


def photo_text(r, model: str) -> str:
    """The one-image result for people: top-k before and after side by side, sizes, verdicts."""
    head = f"{r.method} eps {eps_label(r.eps)} on {model}" + (f", target \"{r.target.label}\"" if r.target else "")
    lines = [head, f"{'':>3}  {'before':<32} {'conf':>6}   {'after':<32} {'conf':>6}"]
    for i, (b, a) in enumerate(zip(r.before, r.after)):
        lines.append(f"{i + 1:>3}  {b.label[:32]:<32} {b.confidence:>6.1%}   {a.label[:32]:<32} {a.confidence:>6.1%}")
    lines.append(f"perturbation: L-inf {r.linf:.4f} ({r.linf * 255:.2f}/255), L2 {r.l2:.3f}")
    verdict = "target reached" if r.target else "label changed"
    lines.append(f"attack: {verdict if r.success else 'failed'}" + (
        f" (target now {r.target.confidence:.1%})" if r.target else ""))
    if r.saved[0].index != r.after[0].index:
        lines.append(f"as an 8-bit image: \"{r.saved[0].label}\" {r.saved[0].confidence:.1%}")
    if r.transformed is not None:
        lines.append(f"after {r.transforms}: \"{r.transformed[0].label}\" {r.transformed[0].confidence:.1%} -> "
                     f"the attack {'survives' if r.survives else 'is destroyed'}")
    return "\n".join(lines)


def render_dataset(rows: list[dict], job, report, json_out: bool) -> None:
    """JSON lines, or the table (one model: details per attack; several: accuracy side by side)."""
    if json_out:
        for r in rows:
            report.result(json.dumps({**r, "dataset": job.dataset or str(job.data)}))
        return
    models = list(dict.fromkeys(r["model"] for r in rows))
    report.result(side_by_side(rows, models) if len(models) > 1 else detail_table(rows, bool(job.transforms)))
    for p in (job.plot, job.save_adv):
        if p is not None:
            report.result(str(p))


def detail_table(rows: list[dict], transforms: bool) -> str:
    """Accuracy under attack, one row per method and eps; clean accuracy first."""
    clean = next((r for r in rows if r["eps"] == 0), None)
    cols = f"{'method':<9} {'eps':>9} {'accuracy':>9} {'success':>8} {'L-inf':>8} {'L2':>8}"
    cols += f" {'destroyed':>9}" if transforms else ""
    lines = [cols + f" {'seconds':>8}"]
    if clean is not None:
        lines.append(f"{'clean':<9} {'0':>9} {clean['accuracy']:>9.1%} {'-':>8} {'-':>8} {'-':>8}"
                     + (f" {'-':>9}" if transforms else "") + f" {'-':>8}  (n = {clean['n']})")
    for r in rows:
        if r["eps"] == 0:
            continue
        line = (f"{r['method']:<9} {eps_label(r['eps']):>9} {r['accuracy']:>9.1%} {r['success_rate']:>8.1%} "
                f"{r['linf']:>8.4f} {r['l2']:>8.3f}")
        if transforms:
            line += f" {r.get('destruction_rate', 0.0):>9.1%}"
        lines.append(line + f" {r['seconds']:>8.1f}")
    return "\n".join(lines)


def side_by_side(rows: list[dict], models: list[str]) -> str:
    """Accuracy (%) of each model (columns) under each attack and eps (rows); clean accuracy first."""
    acc = {(r["model"], r["method"], r["eps"]): r["accuracy"] for r in rows}
    keys = list(dict.fromkeys(("clean", 0.0) if r["eps"] == 0 else (r["method"], r["eps"]) for r in rows))
    keys.sort(key=lambda k: k[0] != "clean")
    width = max(12, *(len(m) for m in models))
    lines = [f"{'attack':<14} {'eps':>7} " + " ".join(f"{m:>{width}}" for m in models)]
    for method, eps in keys:
        cells = []
        for m in models:
            vals = [v for (mm, meth, e), v in acc.items() if mm == m and e == eps and (method == "clean" or meth == method)]
            cells.append(f"{vals[0]:>{width}.1%}" if vals else f"{'-':>{width}}")
        lines.append(f"{method:<14} {eps_label(eps):>7} " + " ".join(cells))
    n = next((r["n"] for r in rows), 0)
    return "\n".join(lines + [f"(n = {n} test images per model)"])
