"""What ``dlkit caption`` does, as one function over a job: load the model and caption the job's images in
order under the batch policy (a bad file is a warning; the others are captioned)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dlkit.core.errors import UsageError
from dlkit.tasks.caption.infer import DecodeSettings, FileCaption, caption_files, load_captioner
from dlkit.vision.inputs import image_inputs

DEFAULT_MODEL = "flickr8k-attention"


@dataclass
class CaptionJob:
    """Caption the image files ``paths`` with ``model`` (see :meth:`from_inputs` for folders, globs and ``-``)."""

    paths: list[str]
    model: str = DEFAULT_MODEL
    settings: DecodeSettings = field(default_factory=DecodeSettings)

    @classmethod
    def from_inputs(cls, inputs: list[str], model: str, settings: DecodeSettings, warn) -> "CaptionJob":
        """Files, folders (their images), globs and ``-`` (paths on stdin) expanded to files, in order."""
        return cls(image_inputs(inputs, warn, what="caption"), model, settings)


def caption_job(job: CaptionJob, rt, report, emit: Callable[[FileCaption], None]):
    """Caption the job's images, ``emit`` each as it comes. Returns the :class:`dlkit.core.batch.BatchOutcome`
    (``raise_if_failed`` once everything is printed)."""
    cap = load_captioner(job.model, rt.device)
    if job.settings.plot_dir is not None and cap.cfg.arch != "attention":
        raise UsageError(f"--attention-plot needs an attention model; '{cap.meta.get('name')}' is a "
                         f"{cap.cfg.arch} model")
    return caption_files(cap, job.paths, rt, report, job.settings, emit)
