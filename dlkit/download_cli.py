"""`dlkit download`: fetch the public datasets dlkit knows into $DLKIT_HOME/data. Imports no torch."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dlkit.core.options import opt

app = typer.Typer()


@app.command("download")
def download_command(
    names: Annotated[Optional[list[str]], typer.Argument(help="Datasets: tinyshakespeare, multi30k, mnist, cifar10.",
                                                         show_default=False)] = None,
    list_: Annotated[bool, opt("--list", help="List the datasets, their files and sources, and exit.")] = False,
) -> None:
    """Download datasets into $DLKIT_HOME/data, each file checked against its SHA-256 (never done implicitly).

    Prints the paths written, one per line; mnist and cifar10 are also converted once into
    $DLKIT_HOME/data/<name>.npz, which --data accepts. A file already there with the right checksum is kept.

    Example: dlkit download tinyshakespeare
    """
    from dlkit.core import download as dl
    from dlkit.core.errors import UsageError
    from dlkit.core.io import results

    if list_:
        for d in dl.DATASETS.values():
            results.line(f"{d.name}\t{d.about}\t{len(d.files)} file(s)\t{d.files[0].urls[0]}")
        return
    if not names:
        raise UsageError(f"name the dataset(s) to download: {', '.join(dl.DATASETS)} (or --list)")
    for name in names:
        if name in ("mnist", "cifar10") and name in dl.DATASETS:
            from dlkit.vision.download import dataset_npz

            results.line(str(dataset_npz(name)))
        else:
            for path in dl.download(name):
                results.line(str(path))
