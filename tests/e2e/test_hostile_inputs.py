"""End to end, through the CLI (``python -m beam_pipeline``): user errors of issue 21 are one line on
stderr and exit code 2, before any work."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, module="beam_pipeline", **env):
    env = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def one_error_line(res):
    """A user error: exit 2 and exactly one non-blank stderr line, ``error: ...`` -> that line."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        (res.returncode, res.stderr[-3000:])
    return lines[0]


NO_AZURE = {"AZURE_STORAGE_CONNECTION_STRING": None}
CREDENTIALS = ("Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or pass "
               "--blob_service_endpoint=https://ACCOUNT.blob.core.windows.net and sign in for DefaultAzureCredential "
               "(az login, managed identity or AZURE_CLIENT_* variables)")


@pytest.mark.parametrize("case", ["output_is_a_file", "output_under_a_file", "azfs_output", "azfs_reviews",
                                  "azfs_products", "azfs_model", "reviews_match_nothing",
                                  "products_match_nothing_streaming", "bad_value"])
def test_user_errors_are_one_line_exit_2_and_create_nothing(tmp_path, case):
    """Issue 21: each of these was a traceback (exit 1) or left an output folder behind."""
    (tmp_path / "f.txt").write_text("mine")
    (tmp_path / "r.jsonl").write_text("{}\n")
    reviews, out = f"--reviews={tmp_path}/r.jsonl", f"--output={tmp_path}/out"
    hub = {"EVENTHUB_CONNECTION_STRING": "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;"
                                         "UseDevelopmentEmulator=true;EntityPath=reviews"}
    args, env, want = {
        "output_is_a_file": ([reviews, f"--output={tmp_path}/f.txt"], {},
                             f"invalid options: --output {tmp_path}/f.txt is a file, not a folder"),
        "output_under_a_file": ([reviews, f"--output={tmp_path}/f.txt/out"], {},
                                (f"invalid options: --output {tmp_path}/f.txt/out: {tmp_path}/f.txt is a file, "
                                 "so no folder can be made under it")),
        "azfs_output": ([reviews, "--output=azfs://acct/c/out"], NO_AZURE, f"invalid options: --output needs {CREDENTIALS}"),
        "azfs_reviews": (["--source=adls", "--reviews=azfs://acct/c/r/*.jsonl", out], NO_AZURE,
                         f"invalid options: --source=adls, --reviews need {CREDENTIALS}"),
        "azfs_products": (["--source=adls", "--reviews=azfs://acct/c/r/*", "--products=azfs://acct/c/p/*", out],
                          NO_AZURE, f"invalid options: --source=adls, --reviews, --products need {CREDENTIALS}"),
        "azfs_model": ([reviews, out, "--sentiment_model=azfs://acct/c/model"], NO_AZURE,
                       f"invalid options: --sentiment_model needs {CREDENTIALS}"),
        "reviews_match_nothing": ([f"--reviews={tmp_path}/none/*.jsonl", out], {},
                                  f"--reviews {tmp_path}/none/*.jsonl: no file matches it"),
        "products_match_nothing_streaming": (["--source=eventhub", f"--products={tmp_path}/none/*.jsonl", out,
                                              "--stop_after_idle_s=1"], hub,
                                             f"--products {tmp_path}/none/*.jsonl: no file matches it"),
        "bad_value": ([reviews, out, "--top_reviewers=x"], {},
                      "invalid options: argument --top_reviewers: invalid int value: 'x'"),
    }[case]
    assert one_error_line(cli(*args, **env)) == f"error: {want}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "r.jsonl"]
    assert (tmp_path / "f.txt").read_text() == "mine"


@pytest.mark.parametrize("arg, hint", [("--windw_size=1h", "--window_size"), ("--outptu=x", "--output")])
def test_misspelt_option_exits_2_with_one_line(tmp_path, arg, hint):
    out = cli(f"--reviews={tmp_path}/*.json", f"--output={tmp_path}/out", arg)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: unknown option {arg} (did you mean {hint}?); python -m beam_pipeline --help "
                     f"lists them"]
    assert not os.path.exists(tmp_path / "out")


def test_hyphenated_option_is_accepted(tmp_path):
    # accepted, so the next problem reported is the real one: an invalid window size
    out = cli(f"--reviews={tmp_path}/*.json", f"--output={tmp_path}/out", "--window-size=oops")
    assert out.returncode == 2
    assert "not a duration: 'oops'" in out.stderr and "unknown option" not in out.stderr


def test_truncated_gzip_input_is_committed_as_far_as_it_reads_and_exits_4(tmp_path):
    """A review file cut in the middle (a partial upload): the job keeps every line it could read, the file
    itself becomes one dead letter (record_type ``file``), the summary counts it, and the CLI exits 4."""
    import gzip
    import zlib

    from runners.generate import generate
    from tests.e2e import _outputs as out

    generate(str(tmp_path / "data"), 400, files=2, seed=5)
    files = sorted((tmp_path / "data" / "reviews").glob("*.jsonl"))
    whole, cut = files[0].read_bytes(), files[1].read_bytes()
    land = tmp_path / "land"
    land.mkdir()
    (land / "a.jsonl.gz").write_bytes(gzip.compress(whole))
    packed = gzip.compress(cut)
    (land / "b.jsonl.gz").write_bytes(packed[:len(packed) // 2])
    recovered = zlib.decompressobj(wbits=31).decompress(packed[:len(packed) // 2])  # what a stock reader gets
    res = cli("--source=files", f"--reviews={land}/*.jsonl.gz", f"--output={tmp_path}/out", "--run_id=cut")
    assert res.returncode == 4, res.stderr[-3000:]
    assert "could not be read to the end" in res.stderr
    summary = out.run_summary(str(tmp_path / "out"))
    r = summary["reviews"]
    assert r["files_incomplete"] == 1 and r["files_read"] == 2
    assert r["reconciled"] is True
    letters = out.dead_letters(str(tmp_path / "out"))
    file_letters = [d for d in letters if d["record_type"] == "file"]
    assert [(d["stage"], d["reason"], d["source"].rsplit("/", 1)[1]) for d in file_letters] == \
        [("read", "truncated_file", "b.jsonl.gz")]
    # every line of a, and every whole line of b before the cut (and perhaps the cut line itself) are counted
    whole_lines = sum(1 for line in whole.splitlines() if line.strip())
    assert whole_lines + recovered.count(b"\n") <= r["records_read"] <= whole_lines + recovered.count(b"\n") + 1
    assert out.silver_reviews(str(tmp_path / "out")).num_rows == r["silver_rows"]


def test_output_inside_the_inputs_is_refused_before_any_work(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    res = cli("--source=files", f"--reviews={tmp_path}/data/**", f"--output={tmp_path}/data/out")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "is inside the inputs" in res.stderr
    assert not (tmp_path / "data" / "out").exists()


def test_a_folder_the_job_did_not_write_is_refused_unless_taken_over(tmp_path):
    """A user's file inside silver/reviews of a folder the job never wrote would be deleted by the orphan
    cleanup: the job refuses the folder (exit 2, the file untouched) unless --take_over_output is given."""
    from runners.generate import generate

    generate(str(tmp_path / "data"), 200, files=1, seed=3)
    mine = tmp_path / "out" / "silver" / "reviews" / "notes.parquet"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"not the job's")
    args = ["--source=files", f"--reviews={tmp_path}/data/reviews/*.jsonl", f"--output={tmp_path}/out"]
    res = cli(*args)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "holds files the job did not write" in res.stderr and "--take_over_output" in res.stderr
    assert mine.read_bytes() == b"not the job's" and not (tmp_path / "out" / "_pipeline").exists()
    res = cli(*args, "--take_over_output")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "_pipeline" / "events" / "_delta_log").is_dir()


@pytest.mark.parametrize("case", ["silver_missing", "silver_empty", "silver_is_a_file", "output_is_a_file",
                                  "reviews_match_nothing"])
def test_training_user_errors_are_one_line_exit_2_and_create_nothing(tmp_path, case):
    """``python -m training``: these were a FileNotFoundError traceback, pyarrow's many-line 'No match for
    FieldRef.Name(summary)' or a folder left behind; TensorFlow, imported on the way, adds no line either."""
    (tmp_path / "f.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    out = f"--output={tmp_path}/model"
    args, want = {
        "silver_missing": ([f"--silver={tmp_path}/none", out], f"--silver {tmp_path}/none: no such folder"),
        "silver_empty": ([f"--silver={tmp_path}/empty", out],
                         (f"--silver {tmp_path}/empty holds no silver reviews table (expected a batch run's "
                          "OUTPUT/silver/reviews with the columns summary, review_text, overall, main_cat, source, "
                          "reviewer_id, asin, unix_review_time)")),
        "silver_is_a_file": ([f"--silver={tmp_path}/f.txt", out], f"--silver {tmp_path}/f.txt: not a folder"),
        "output_is_a_file": ([f"--silver={tmp_path}/empty", f"--output={tmp_path}/f.txt"],
                             f"--output {tmp_path}/f.txt is a file, not a folder"),
        "reviews_match_nothing": ([f"--reviews={tmp_path}/none/*.jsonl", out],
                                  f"--reviews {tmp_path}/none/*.jsonl: no file matches it"),
    }[case]
    assert one_error_line(cli(*args, module="training", TF_CPP_MIN_LOG_LEVEL=None)) == f"error: {want}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f.txt"] and not any((tmp_path / "empty").iterdir())


@pytest.mark.parametrize("module, args, want", [
    ("training.loco", ["--output=OUT", "--bogus"],   # imports TensorFlow before it parses: no chatter either
     "error: unrecognized arguments: --bogus (python -m training.loco --help lists the options)"),
    ("training", ["--silver=x"],
     "error: the following arguments are required: --output (python -m training --help lists the options)"),
    ("training.recommend", ["train", "--knn_k", "x"],
     ("error: argument --knn-k/--knn_k: invalid int value: 'x' (python -m training.recommend train --help lists "
      "the options)")),
    ("runners.generate", ["--out", "f.txt", "--reviews", "10"], "error: --out TMP/f.txt is a file, not a folder"),
    ("runners.generate", ["--out", "f.txt/x", "--reviews", "10"],
     "error: --out TMP/f.txt/x: TMP/f.txt is a file, so no folder can be made under it"),
    ("runners.generate", ["--out", "g", "--reviews", "10", "--dirty-rate", "1.5"],
     ("error: argument --dirty-rate: must be a fraction within 0..1 (python -m runners.generate --help lists "
      "the options)")),
    ("runners.demo", ["--reviews", "many"],
     "error: argument --reviews: invalid int value: 'many' (python -m runners.demo --help lists the options)"),
    ("beam_pipeline.tables", ["shwo"], None),
])
def test_other_commands_user_errors_are_one_line_exit_2(tmp_path, module, args, want):
    (tmp_path / "f.txt").write_text("mine")
    args = [str(tmp_path / a) if a.startswith(("f.txt", "g", "OUT")) else a for a in args]
    line = one_error_line(cli(*args, module=module, TF_CPP_MIN_LOG_LEVEL=None))
    if want:
        assert line == want.replace("TMP", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_make_run_refuses_unusable_folders_before_it_starts(tmp_path):
    """``python -m runners.demo`` used to find these after minutes of work (or with a traceback)."""
    (tmp_path / "f.txt").write_text("mine")
    (tmp_path / "stream").mkdir()
    (tmp_path / "stream" / "notes.txt").write_text("mine")
    line = one_error_line(cli("--output", str(tmp_path / "f.txt"), "--stream-output", str(tmp_path / "stream"),
                              "--data", str(tmp_path / "data"), module="runners.demo"))
    assert line == (f"error: --output {tmp_path}/f.txt is a file, not a folder; --stream-output {tmp_path}/stream "
                    "holds notes.txt, which the streaming job does not write; not deleting it. Choose another "
                    "--stream-output (or empty it yourself)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "stream"]
    assert (tmp_path / "stream" / "notes.txt").read_text() == "mine"
