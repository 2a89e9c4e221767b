"""Output folders: spfluo overwrites or deletes only the files it wrote (manifest + SHA-256)."""

import pytest

from spfluo.errors import ProjectError
from spfluo.outfolder import MANIFEST, OutputFolder


def test_a_folder_with_the_users_files_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "run0001_mine.png").write_bytes(b"my figure")
    (tmp_path / "index.html").write_text("my page")
    with pytest.raises(ProjectError, match="is not empty and spfluo did not create it.*"
                                           "give a new or empty folder"):
        OutputFolder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "run0001_mine.png"]
    assert (tmp_path / "run0001_mine.png").read_bytes() == b"my figure"
    assert (tmp_path / "index.html").read_text() == "my page"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProjectError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file")


def test_files_are_written_replaced_and_removed_only_when_spfluo_wrote_them(tmp_path):
    out = tmp_path / "new" / "site"
    folder = OutputFolder(out)  # created, with its manifest
    assert (out / MANIFEST).is_file() and folder.files() == []
    folder.write_text("index.html", "v1", by="report")
    folder.write_text("a.png", "A", by="report")
    folder.write_text("final.png", "F", by="demo")
    (out / "notes.txt").write_text("the user's notes")  # added by the user later

    again = OutputFolder(out)  # reopened: spfluo's folder
    assert again.files(by="report") == ["a.png", "index.html"]
    again.write_text("index.html", "v2", by="report")
    assert (out / "index.html").read_text() == "v2"
    with pytest.raises(ProjectError, match="notes.txt exists and spfluo did not write it"):
        again.write_text("notes.txt", "x", by="report")
    (out / "a.png").write_text("edited by the user")
    with pytest.raises(ProjectError, match="a.png was changed after spfluo wrote it"):
        again.write_text("a.png", "B", by="report")
    # stale files of the report: the edited one and the demo's are kept
    assert again.remove_stale(by="report", keep={"index.html"}) == []
    assert (out / "a.png").read_text() == "edited by the user"
    assert (out / "final.png").read_text() == "F"
    assert (out / "notes.txt").read_text() == "the user's notes"
    again.write_text("b.png", "B", by="report")
    assert again.remove_stale(by="report", keep={"index.html"}) == ["b.png"]
    assert not (out / "b.png").exists()
    with pytest.raises(ValueError, match="plain file name"):
        again.write_text("../escape.txt", "x", by="report")


def test_an_unreadable_manifest_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ProjectError, match="unreadable"):
        OutputFolder(tmp_path)


def test_two_writers_of_one_folder_keep_each_others_files(tmp_path):
    """The demo and the report write the same folder through two OutputFolder objects."""
    demo, report = OutputFolder(tmp_path / "out"), OutputFolder(tmp_path / "out")
    report.write_text("index.html", "page", by="report")
    demo.write_text("final.png", "figure", by="demo")  # demo's object was made before
    again = OutputFolder(tmp_path / "out")
    assert again.files() == ["final.png", "index.html"]
    assert again.intact("index.html") and again.intact("final.png")
    again.write_text("index.html", "page 2", by="report")  # still spfluo's: replaced
    assert (tmp_path / "out" / "index.html").read_text() == "page 2"
