"""Caption dataset readers: every format from small files written here; bad files give one-line errors."""

import gzip
import json

import pytest

from dlkit.core.errors import DataError
from dlkit.vision.caption_files import detect_format, load_captions, split_by_image


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        (folder / n).write_bytes(b"not read by the readers")
    return folder


def test_csv_groups_captions_by_image_and_finds_the_images_folder(tmp_path):
    _images(tmp_path / "images", ["a.jpg", "b.jpg"])
    f = tmp_path / "captions.txt"
    f.write_text("image,caption\na.jpg,A dog runs .\na.jpg,\"A dog, running .\"\nb.jpg,A cat .\n")
    d = load_captions(f)
    assert d.format == "csv"
    assert [p.name for p in d.images] == ["a.jpg", "b.jpg"]
    assert d.images[0] == tmp_path / "images" / "a.jpg"
    assert d.captions == [["A dog runs .", "A dog, running ."], ["A cat ."]]
    assert d.num_captions == 3 and not d.missing()
    assert load_captions(tmp_path).source == str(f)  # a folder holding captions.txt


def test_tsv_without_header(tmp_path):
    _images(tmp_path, ["x.png"])
    f = tmp_path / "caps.tsv"
    f.write_text("x.png\ta red square\nx.png\ta square that is red\n")
    d = load_captions(f)
    assert d.format == "tsv" and d.captions == [["a red square", "a square that is red"]]


def test_flickr8k_token_file_with_split_files(tmp_path):
    _images(tmp_path / "Flicker8k_Dataset", ["1.jpg", "2.jpg", "3.jpg"])
    tok = tmp_path / "Flickr8k.token.txt"
    tok.write_text("".join(f"{i}.jpg#{k}\tcaption {k} of {i} .\n" for i in (1, 2, 3) for k in range(5)))
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("1.jpg\n2.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("3.jpg\n")
    d = load_captions(tok, tmp_path / "Flicker8k_Dataset")
    assert d.format == "flickr8k" and len(d) == 3 and all(len(c) == 5 for c in d.captions)
    assert d.splits == {"train": [0, 1], "val": [2]}
    assert detect_format(tok) == "flickr8k"


def test_karpathy_json_restval_counts_as_train(tmp_path):
    _images(tmp_path / "coco", ["val2014/a.jpg", "train2014/b.jpg", "val2014/c.jpg"])
    obj = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A man.", "tokens": ["a", "man"]}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "restval", "sentences": [{"tokens": ["two", "dogs"]}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "val", "sentences": [{"raw": "A cat."}]},
    ]}
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps(obj))
    d = load_captions(f, tmp_path / "coco")
    assert d.format == "karpathy"
    assert d.images[1] == tmp_path / "coco" / "train2014" / "b.jpg"
    assert d.captions == [["A man."], ["two dogs"], ["A cat."]]
    assert d.splits == {"test": [0], "train": [1], "val": [2]}
    assert not d.missing()


def test_coco_captions_json_finds_its_image_folder(tmp_path):
    _images(tmp_path / "val2014", ["COCO_1.jpg", "COCO_2.jpg"])
    (tmp_path / "annotations").mkdir()
    f = tmp_path / "annotations" / "captions_val2014.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "COCO_1.jpg"}, {"id": 2, "file_name": "COCO_2.jpg"}],
                             "annotations": [{"image_id": 2, "caption": "b"}, {"image_id": 1, "caption": "a"},
                                             {"image_id": 2, "caption": "bb"}]}))
    d = load_captions(f)
    assert d.format == "coco"
    assert d.images == [tmp_path / "val2014" / "COCO_2.jpg", tmp_path / "val2014" / "COCO_1.jpg"]
    assert d.captions == [["b", "bb"], ["a"]]


def test_gzip_and_missing_images_and_drop(tmp_path):
    _images(tmp_path, ["a.jpg"])
    f = tmp_path / "c.csv.gz"
    f.write_bytes(gzip.compress(b"image,caption\na.jpg,one\nghost.jpg,two\n"))
    d = load_captions(f, tmp_path, format="csv")
    assert [p.name for p in d.missing()] == ["ghost.jpg"]
    kept = d.drop(d.missing())
    assert [p.name for p in kept.images] == ["a.jpg"] and kept.captions == [["one"]]


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"\x00\x01\x02binary", "binary"),
    (b"{not json", "not valid JSON"),
    (b'{"foo": 1}', "neither COCO"),
    (b'{"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 9, "caption": "x"}]}', "image id 9"),
    (b"image,caption\n", "no"),
])
def test_bad_caption_files_are_one_line_errors(tmp_path, content, match):
    f = tmp_path / ("bad.json" if content.startswith(b"{") else "bad.csv")
    f.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        load_captions(f)
    assert "\n" not in str(e.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_captions(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="holds no caption file"):
        load_captions(tmp_path)


def test_split_by_image_is_seeded_and_disjoint():
    s = split_by_image(100, 10, 20, seed=3)
    assert len(s["val"]) == 10 and len(s["test"]) == 20 and len(s["train"]) == 70
    assert not set(s["val"]) & set(s["train"]) and not set(s["test"]) & set(s["train"])
    assert s == split_by_image(100, 10, 20, seed=3) and s != split_by_image(100, 10, 20, seed=4)
    assert len(split_by_image(100, 0.1)["val"]) == 10
    with pytest.raises(DataError, match="at least one"):
        split_by_image(5, 3, 2)
