import io

import pytest

from dlkit.core.errors import DataError
from dlkit.vision.inputs import MAX_PATH, image_inputs


def test_files_folders_globs_and_stdin_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.png", "a.jpg", "notes.txt", ".hidden.png"):
        (tmp_path / "d" / name).write_bytes(b"x")
    warnings = []
    stdin = io.StringIO(f"one.png\n\n{'x' * (MAX_PATH + 1)}\ntwo.png\n")
    got = image_inputs([str(tmp_path / "d"), str(tmp_path / "d" / "*.png"), "missing.png", "-", "nothing*.gif"],
                       warnings.append, stdin=stdin)
    d = tmp_path / "d"
    assert got == [str(d / "a.jpg"), str(d / "b.png"), str(d / "b.png"), "missing.png", "one.png", "two.png"]
    assert len(warnings) == 3 and "notes.txt" in warnings[0] and "longer than" in warnings[1]
    assert "no file matches" in warnings[2]
    with pytest.raises(DataError, match="no images to caption"):
        image_inputs(["none*.png"], warnings.append, what="caption")
