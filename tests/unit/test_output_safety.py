"""Outputs are safe (issue 21): an output folder inside the input globs is refused before any work, with
Beam's glob semantics (``*`` stays in one folder, ``**`` crosses them)."""
import pytest

from beam_pipeline.options import output_inside_inputs


@pytest.mark.parametrize("output, pattern, inside", [
    ("data/out", "data/**", True),                      # everything below data/, the output's files too
    ("data/out", "data/**/*.json", True),               # the event log's JSON commits
    ("data/out", "data/**/*.parquet", True),
    ("data/out", "data/*.jsonl", False),                # only files directly in data/
    ("data/out", "data/*", False),                      # * does not cross folders
    ("out", "data/**", False),
    ("data/reviews/out", "data/reviews/*/*/*.parquet", True),   # silver/reviews/<file>.parquet
    ("azfs://acct/c/lake", "azfs://acct/c/**", True),
    ("azfs://acct/c/lake", "azfs://acct/c/raw/**", False),
])
def test_output_inside_inputs(tmp_path, monkeypatch, output, pattern, inside):
    monkeypatch.chdir(tmp_path)
    assert (output_inside_inputs(output, [pattern]) == pattern) is inside


def test_folder_problem_names_the_file_in_the_way(tmp_path):
    from beam_pipeline.cli import folder_problem
    (tmp_path / "f.txt").write_text("x")
    assert folder_problem(str(tmp_path / "f.txt"), "--output") == f"--output {tmp_path}/f.txt is a file, not a folder"
    assert folder_problem(str(tmp_path / "f.txt" / "a" / "b"), "--out") == \
        f"--out {tmp_path}/f.txt/a/b: {tmp_path}/f.txt is a file, so no folder can be made under it"
    assert folder_problem(str(tmp_path / "new" / "deeper"), "--output") is None     # made later, by the run
    assert folder_problem(str(tmp_path), "--output") is None
    assert folder_problem("azfs://acct/c/out", "--output") is None                  # stores have no folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]                   # nothing was created
