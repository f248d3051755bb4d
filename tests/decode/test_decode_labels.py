"""Labels files: both formats, off-by-one background detection, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.decode import Labels, LabelsError, load_labels, parse_labels


def test_plain_lines_are_ids_from_zero() -> None:
    labels = parse_labels("cat\ndog\r\nbird\n\n")
    assert [labels.get(i) for i in range(4)] == ["cat", "dog", "bird", None]
    assert labels.size == 3
    assert labels.notes == ()


@pytest.mark.parametrize("text", ["0  background\n1  person\n3 car\n",
                                  "0:background\n1: person\n3 car",
                                  "\n0 background\n\n1 person\n3    car  \n"])
def test_id_lines_pycoral_format(text: str) -> None:
    labels = parse_labels(text)
    assert labels.names() == {0: "background", 1: "person", 3: "car"}
    assert labels.get(2) is None
    assert labels.size == 4


def test_id_label_may_contain_spaces_and_digits() -> None:
    labels = parse_labels("0 traffic light\n1 7 up can\n")
    assert labels.names() == {0: "traffic light", 1: "7 up can"}


def test_text_after_a_blank_line_is_ignored_and_reported() -> None:
    labels = parse_labels("background\ncat\n\nnote for people\nmore\n", "x/voc.txt")
    assert labels.names() == {0: "background", 1: "cat"}
    assert labels.notes == ("labels file 'voc.txt': 2 labels; ignored 2 line(s) of text "
                            "after the blank line 3",)


def test_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode())
    assert load_labels(path).names() == {0: "cat", 1: "dog"}


def test_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(LabelsError, match=r"^labels file '.*nope\.txt': not found$"):
        load_labels(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(LabelsError, match=r"^labels file '.*empty\.txt': no labels in it$"):
        load_labels(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"cat\n\xff\xfe\n")
    with pytest.raises(LabelsError, match=r"^labels file '.*bin\.txt': not UTF-8 text "
                                          r"\(byte 0xff at offset 4\)$"):
        load_labels(binary)
    with pytest.raises(LabelsError, match=r"^labels file 'ids\.txt' line 3: id 1 already given "
                                          r"on line 2$"):
        parse_labels("0 a\n1 b\n1 c\n", "ids.txt")
    with pytest.raises(LabelsError, match=r"^labels file 'ids\.txt' line 2: expected 'id label' "
                                          r"like the first line, got 'person'$"):
        parse_labels("0 a\nperson\n", "ids.txt")
    with pytest.raises(LabelsError, match=r"is a directory$"):
        load_labels(tmp_path)


def test_align_same_count_has_no_note() -> None:
    labels = Labels.from_names(["a", "b"]).align(2)
    assert labels.offset == 0 and labels.notes == ()


def test_align_model_with_extra_background_output() -> None:
    labels = Labels.from_names(["tench", "goldfish"], "/x/in.txt").align(3)
    assert labels.offset == 1
    assert labels.get(0) is None and labels.get(1) == "tench" and labels.get(2) == "goldfish"
    assert labels.notes == ("labels file 'in.txt' has 2 labels for 3 outputs: output 0 is taken "
                            "as an unlabelled background class (label n names output n+1)",)


def test_align_file_with_extra_background_label() -> None:
    labels = Labels.from_names(["background", "tench", "goldfish"], "in.txt").align(2)
    assert labels.offset == -1
    assert labels.get(0) == "tench" and labels.get(1) == "goldfish"
    assert labels.names() == {0: "tench", 1: "goldfish"}
    assert "its first label 'background' is taken as a background class" in labels.notes[0]


def test_align_other_mismatch_is_reported_not_fatal() -> None:
    labels = Labels.from_names(["a"], "l.txt").align(10)
    assert labels.offset == 0 and labels.get(0) == "a" and labels.get(5) is None
    assert labels.notes == ("labels file 'l.txt' has 1 labels for 10 outputs: outputs beyond "
                            "them are reported by id only",)


def test_shared_imagenet_labels_have_background_first(shared_models: Path) -> None:
    labels = load_labels(shared_models / "imagenet_labels.txt")
    assert labels.size == 1001 and labels.get(0) == "background"
    aligned = labels.align(1001)
    assert aligned.offset == 0 and aligned.notes == ()
    assert aligned.get(286) == "Egyptian cat"


def test_shared_pascal_labels_stop_at_the_trailing_note(shared_models: Path) -> None:
    labels = load_labels(shared_models / "pascal_voc_segmentation_labels.txt")
    assert labels.size == 21
    assert labels.get(0) == "background" and labels.get(15) == "person"
    assert labels.get(20) == "tvmonitor"
    assert len(labels.notes) == 1 and "ignored 2 line(s) of text" in labels.notes[0]
