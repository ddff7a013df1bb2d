"""``make run``'s output (runners/demo.py, issue 21): its last block lists every folder it writes with an
absolute path and the dashboard's command and URL; the long legs show their progress lines as they come."""
import os
import sys

from runners import demo


def test_final_block_lists_every_output_folder_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = demo.build_parser().parse_args([])
    text = demo.final_block(a, list(demo.LEGS), True, 12.5, ["batch leg 1.0 s"])
    lines = text.splitlines()
    assert lines[0].startswith("Done in 12.5 s (batch leg 1.0 s).") and lines[1] == "Outputs:"
    folders = [line.split()[-1] for line in lines[2:-2]]   # "  what it is   /absolute/path"
    assert folders == [str(tmp_path / p) for p in (".local/demo/data", ".local/demo/extra", "out/batch",
                                                   "out/batch/insights", "out/batch/recommendations", "out/model",
                                                   "out/batch_scored", ".local/demo/stream-data", "out/stream")]
    for name in demo.FOLDER_OPTIONS:   # every folder option of the demo is among them
        assert os.path.abspath(getattr(a, name)) in folders, name
    assert lines[-2] == (f"Dashboard: {sys.executable} -m beam_pipeline.dashboard --output={tmp_path}/out/batch "
                         f"--output={tmp_path}/out/batch_scored --output={tmp_path}/out/stream")
    assert lines[-1] == "  then open http://127.0.0.1:8050/ (`make dashboard` serves the default folders)"


def test_final_block_of_one_leg_and_of_a_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = demo.build_parser().parse_args(["--model-output", "m", "--scored-output", "s"])
    model = demo.final_block(a, ["model"], True, 1, ["model leg 1.0 s"]).splitlines()
    assert [line.split()[-1] for line in model[2:4]] == [f"{tmp_path}/m", f"{tmp_path}/s"]
    assert model[4].endswith(f"beam_pipeline.dashboard --output={tmp_path}/s")
    failed = demo.final_block(a, ["batch", "insights"], False, 1, ["batch leg 1.0 s"])
    assert failed.startswith("FAILED in 1.0 s") and "Dashboard" not in failed
    assert failed.splitlines()[-1].split()[-1] == f"{tmp_path}/out/batch/recommendations"


def test_progress_lines_are_shown_as_they_come(capsys):
    code = ("import sys\nprint('[training 1.0 s] examples', flush=True)\nprint('a report line')\n"
            "print('[training 2.0 s] fitted', file=sys.stderr)\nsys.exit(3)")
    rc, output = demo._run_showing_progress([sys.executable, "-c", code], "[training")
    assert rc == 3
    assert capsys.readouterr().out == "            [training 1.0 s] examples\n            [training 2.0 s] fitted\n"
    assert sorted(output.splitlines()) == sorted(["[training 1.0 s] examples", "a report line",
                                                  "[training 2.0 s] fitted"])
