"""ssl_jax.files: whole-or-nothing writes, directories published by rename, and the readers'
errors naming the file."""
import os

import pytest

from ssl_jax import files


class _Unwritable:
    def __str__(self):
        raise RuntimeError("disk full")


def test_write_atomic_replaces_whole_and_leaves_nothing_on_failure(tmp_path):
    path = str(tmp_path / "a.json")
    files.write_atomic(path, "first\n")
    files.write_atomic(path, "second\n")
    assert open(path).read() == "second\n" and os.listdir(tmp_path) == ["a.json"]
    with pytest.raises(TypeError):
        files.write_atomic(path, 123)  # fails while writing the temporary file
    assert open(path).read() == "second\n"  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["a.json"], os.listdir(tmp_path)  # no partial file


def test_publish_dir_renames_a_filled_directory_and_cleans_up_a_failed_fill(tmp_path):
    target = str(tmp_path / "cache" / "vocab")

    def fill(directory):
        with open(os.path.join(directory, "vocab.txt"), "w") as f:
            f.write("a\n")

    files.publish_dir(target, fill)
    assert os.listdir(target) == ["vocab.txt"]
    assert os.listdir(tmp_path / "cache") == ["vocab"]  # no temporary directory left

    def fill_other(directory):  # a concurrent publisher that loses the race
        with open(os.path.join(directory, "vocab.txt"), "w") as f:
            f.write("b\n")

    files.publish_dir(target, fill_other)
    assert open(os.path.join(target, "vocab.txt")).read() == "a\n"  # the first one is kept
    assert os.listdir(tmp_path / "cache") == ["vocab"]

    def broken(directory):
        fill(directory)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        files.publish_dir(str(tmp_path / "cache" / "other"), broken)
    assert os.listdir(tmp_path / "cache") == ["vocab"]  # nothing half-filled is left


def test_read_json_and_read_text_errors_name_the_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert files.read_json(str(good), "the config") == {"a": 1}
    with pytest.raises(FileNotFoundError, match=r"the config '.*missing.json' does not exist"):
        files.read_json(str(tmp_path / "missing.json"), "the config")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match=r"cannot read the config '.*bad.json': Expecting"):
        files.read_json(str(tmp_path / "bad.json"), "the config")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"the config '.*list.json' is not a JSON object"):
        files.read_json(str(tmp_path / "list.json"), "the config")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=r"cannot read --input '.*latin1.txt': 'utf-8' codec"):
        files.read_text(str(tmp_path / "latin1.txt"), "--input")
    with pytest.raises(ValueError, match=r"cannot read --input '.*nowhere.txt'"):
        files.read_text(str(tmp_path / "nowhere.txt"), "--input")
    (tmp_path / "ok.txt").write_text("héllo\n", encoding="utf-8")
    assert files.read_text(str(tmp_path / "ok.txt"), "--input") == "héllo\n"


def test_save_figure_writes_a_png_whole(tmp_path):
    plt = files.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert files.save_figure(fig, str(tmp_path / "curve.png")) == "curve.png"
    assert os.listdir(tmp_path) == ["curve.png"]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
