"""Lists of inputs as tables (CSV, JSON Lines, Parquet): a `path` column, paths relative to the list, and settings
per row that replace the flags of the same names for that input only; bad tables and bad cells in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from media import write_test_video

from dvd.engine.video import VideoSettings
from dvd.errors import DVDError
from dvd.io.readers import list_inputs, resolve_inputs
from dvd.jobs.batch import PredictSettings, check_inputs, with_row_settings
from dvd.jobs.outputs import OutputSettings


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lists")
    (folder / "clips").mkdir()
    write_test_video(folder / "clips" / "a.mp4", frames=9)
    write_test_video(folder / "clips" / "b.mp4", frames=12)
    return folder


def settings_for(*inputs: Path, output: Path, **changes) -> PredictSettings:
    video = VideoSettings(height=32, width=48, window=5, overlap=2)
    return PredictSettings(
        inputs=tuple(map(str, inputs)), output=output, video=video, outputs=OutputSettings(), **changes
    )


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as arrow
    from pyarrow import parquet

    parquet.write_table(arrow.Table.from_pylist(rows), path)
    return path


def test_every_table_format_lists_paths_relative_to_itself_with_their_row_settings(media):
    rows = [{"path": "clips/a.mp4", "stride": 2, "cut_frames": [3, 1]}, {"path": "clips/b.mp4", "fps": None}]
    (media / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n\n" for row in rows))
    (media / "corpus.csv").write_text('path,stride,cut_frames,fps\nclips/a.mp4,2,"3,1",\nclips/b.mp4,,,\n')
    write_parquet(media / "corpus.parquet", rows)
    expected_paths = [media / "clips" / "a.mp4", media / "clips" / "b.mp4"]
    for name in ("corpus.jsonl", "corpus.csv", "corpus.parquet"):
        listed = list_inputs([media / name])
        assert [item.path for item in listed] == expected_paths, name
        assert listed[1].settings == {}, name  # null, "" and a missing cell: the command line's value
        assert listed[0].list_file == media / name and "of" in listed[0].where
        settings = with_row_settings(settings_for(output=media / "out"), listed[0].settings, listed[0].where)
        assert settings.outputs.stride == 2 and settings.video.cut_frames == (1, 3), name
    assert resolve_inputs([media / "corpus.csv"]) == expected_paths


def test_row_settings_reach_the_checks_and_unknown_columns_are_named_once(media, capsys):
    (media / "rows.csv").write_text("path,max_frames,caption\nclips/a.mp4,4,a cat\nclips/b.mp4,,a dog\n")
    entries = check_inputs(settings_for(media / "rows.csv", output=media / "out"))
    assert [entry.settings.outputs.max_frames for entry in entries] == [4, None]
    assert [entry.row for entry in entries] == [{"max_frames": "4"}, {}]  # the settings the list gave, as given
    assert [entry.source.frame_count(entry.settings.outputs.max_frames) for entry in entries] == [4, 12]
    err = capsys.readouterr().err
    assert err.count("note: columns caption of") == 1 and "ignored" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("file,stride\nclips/a.mp4,2\n", "has no `path` column"),
        ("path,stride\nclips/a.mp4,two\n", "line 2 of .*stride must be a whole number of at least 1, got 'two'"),
        ("path,stride\nclips/a.mp4,0\n", "stride must be a whole number of at least 1"),
        ("path,fps\nclips/a.mp4,fast\n", "line 2 of .*invalid frame rate 'fast'"),
        ('path,cut_frames\nclips/a.mp4,"3,x"\n', "--cut-frames takes comma-separated frame indices"),
        ("path\nclips/a.mp4,extra\n", "line 2 of .* has more cells than its header"),
        ("path\nclips/none.mp4\n", r"clips/none.mp4 \(line 2 of .*\) not found"),
        ("path\n\n", "lists no inputs"),
        ("path\nrows.txt\n", "names another list"),
    ],
)
def test_a_bad_table_fails_in_one_line_naming_the_row(media, content, problem):
    (media / "rows.txt").write_text("clips/a.mp4\n")
    (media / "bad.csv").write_text(content)
    with pytest.raises(DVDError, match=problem) as caught:
        check_inputs(settings_for(media / "bad.csv", output=media / "out"))
    assert "\n" not in str(caught.value)


def test_a_video_with_an_fps_row_is_refused_like_the_flag(media):
    (media / "fps.jsonl").write_text(json.dumps({"path": "clips/a.mp4", "fps": 12}) + "\n")
    with pytest.raises(DVDError, match="--fps sets the frame rate of image inputs"):
        check_inputs(settings_for(media / "fps.jsonl", output=media / "out"))
    entries = check_inputs(settings_for(media / "fps.jsonl", output=media / "out", keep_going=True))
    assert "--fps sets the frame rate" in entries[0].error and entries[0].source is None


def test_jsonl_and_parquet_problems(media):
    (media / "broken.jsonl").write_text('{"path": "clips/a.mp4"}\n[1, 2]\n')
    with pytest.raises(DVDError, match="line 2 of .* is not a JSON object"):
        list_inputs([media / "broken.jsonl"])
    (media / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DVDError, match="cannot read .*garbage.parquet as Parquet"):
        list_inputs([media / "garbage.parquet"])
    write_parquet(media / "nopath.parquet", [{"path": None}])
    with pytest.raises(DVDError, match="row 1 of .* has no path"):
        list_inputs([media / "nopath.parquet"])


def test_settings_without_a_row_are_the_runs_own():
    settings = settings_for(output=Path("out"), fps="30")
    assert with_row_settings(settings, {}) is settings
    assert with_row_settings(settings, {"fps": "12"}).fps == "12"
