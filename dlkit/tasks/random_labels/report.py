"""Reporting the runs: the table on stdout (Zhang et al. Table 1 / Fig. 1 numbers) or one JSON object per run."""

from __future__ import annotations

COLUMNS = ("corruption", "train acc", "test acc", "epochs", "steps to fit", "slowdown", "wall time")


def row(r) -> list[str]:
    fit = f"{r.steps_to_fit:,}" if r.fitted else f"not fitted ({r.steps:,})"
    slow = f"{r.slowdown:.2f}x" if r.slowdown is not None else "-"
    return [r.corruption, f"{100 * r.train_acc:.2f}%", f"{100 * r.test_acc:.2f}%", str(r.epochs), fit, slow,
            f"{r.seconds:.1f} s"]


def table(runs) -> str:
    rows = [list(COLUMNS)] + [row(r) for r in runs]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(x, widths)))
             for x in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def run_record(r) -> dict:
    """The --json object of one run (accuracies as fractions in [0, 1])."""
    return {"corruption": r.corruption, "arch": r.arch, "label_level": r.label_level, "train_acc": round(r.train_acc, 6),
            "test_acc": round(r.test_acc, 6), "train_loss": round(r.train_loss, 6), "epochs": r.epochs, "steps": r.steps,
            "steps_to_fit": r.steps_to_fit, "fitted": r.fitted, "slowdown": r.slowdown, "seconds": r.seconds,
            "images_per_s": round(r.images_per_s, 1), "model": r.model}


def render(result, report) -> None:
    """The runs as a table on stdout, or (--json) one ``run`` event per run and a ``done`` event."""
    if report.json_mode:
        for r in result.runs:
            report.event("run", **run_record(r))
        report.event("done", out=result.out, figures=result.figures, stopped=result.stopped)
    else:
        report.result(table(result.runs))
    if result.figures:
        report.info("figures: " + ", ".join(result.figures))
    if result.stopped:
        report.warn(f"stopped by --max-time after {len(result.runs)} run(s); continue with --resume --out {result.out}")
