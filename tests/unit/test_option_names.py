"""Option names (``beam_pipeline.options``, issue 21): misspelt or hyphenated options were ignored with a
Beam warning and the job ran with its defaults. Now the job's own options accept ``--a_b`` and ``--a-b``,
an option no PipelineOptions class knows is one clear line with the closest known name (OptionsError, exit
code 2 from the CLI), and Beam's own runner options still pass."""
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.options import OptionsError, ReviewsOptions, checked_argv, normalize_argv, validated

BASE = ["--source=files", "--reviews=in/*.json", "--output=out"]
BEAM = ["--runner=FnApiRunner", "--project=p", "--temp_location=/tmp/t", "--setup_file=./setup.py",
        "--direct_num_workers=2", "--direct_running_mode=in_memory", "--region=r", "--streaming"]


def test_hyphenated_job_options_mean_the_underscored_ones():
    argv = checked_argv(BASE + ["--window-size=1h", "--window-period", "15m", "--full-refresh",
                                "--max-record-bytes=4096"])
    o = PipelineOptions(argv).view_as(ReviewsOptions)
    assert (o.window_size, o.window_period, o.full_refresh, o.max_record_bytes) == ("1h", "15m", True, 4096)


def test_beam_runner_options_still_pass():
    assert checked_argv(BASE + BEAM) == BASE + BEAM


def test_values_are_left_alone():
    assert normalize_argv(["--reviews=a-b-c/x-y.json", "--run_id", "a-b"]) == ["--reviews=a-b-c/x-y.json",
                                                                               "--run_id", "a-b"]


@pytest.mark.parametrize("arg, hint", [
    ("--windw_size=1h", "--window_size"),
    ("--window_sise=1h", "--window_size"),
    ("--outptu=x", "--output"),
    ("--temp-location=/tmp", "--temp_location"),   # Beam's options: underscores only, as Beam parses them
    ("--fullrefresh", "--full_refresh"),
])
def test_unknown_option_is_one_line_with_a_suggestion(arg, hint):
    with pytest.raises(OptionsError) as err:
        checked_argv(BASE + [arg])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"unknown option {arg} (did you mean {hint}?)")


def test_unknown_option_without_a_close_name():
    with pytest.raises(OptionsError, match=r"^unknown option --zzzz;"):
        checked_argv(BASE + ["--zzzz"])


def test_validated_rejects_unknown_options_too():
    # run(argv) called directly (not through the CLI) goes through validated()
    with pytest.raises(OptionsError, match=r"unknown option --windw_size=1h \(did you mean --window_size\?\)"):
        validated(PipelineOptions(BASE + ["--windw_size=1h"]))
    o, reviews, _ = validated(PipelineOptions(BASE + ["--runner=FnApiRunner", "--direct_num_workers=1"]))
    assert reviews == ["in/*.json"]


@pytest.mark.parametrize("args, enabled", [([], True), (["--insights=false"], False), (["--insights=true"], True),
                                           (["--no_insights"], False), (["--no-insights"], False),
                                           (["--insights", "no"], False)])
def test_insights_switch(args, enabled):
    from beam_pipeline.commit import Insights
    o, _, _ = validated(PipelineOptions(checked_argv(BASE + args)))
    assert o.insights is enabled
    assert Insights.of(o).enabled is enabled


def test_insight_options_and_their_checks():
    from beam_pipeline.commit import Insights
    o, _, _ = validated(PipelineOptions(checked_argv(BASE + ["--trending-rule=open_avenues", "--trending_days=3",
                                                             "--trending_top=5", "--recent_brands=7"])))
    assert Insights.of(o) == Insights(True, "open_avenues", 3, 5, 3, 7, 10)
    with pytest.raises(OptionsError, match="--trending_days must be at least 2"):
        validated(PipelineOptions(checked_argv(BASE + ["--trending_days=1"])))
    with pytest.raises(OptionsError) as err:   # argparse's error, as one line (not its usage of every option)
        validated(PipelineOptions(checked_argv(BASE + ["--trending_rule=hot"])))
    assert str(err.value) == ("invalid options: argument --trending_rule: invalid choice: 'hot' (choose from "
                              "'zscore', 'open_avenues')")


def test_help_explains_every_insight_option():
    from beam_pipeline.options import help_text
    text = help_text()
    for name in ("--insights", "--no_insights", "--trending_rule", "--trending_days", "--trending_top",
                 "--trending_min_count", "--recent_brands", "--rating_min_reviews", "docs/insights.md"):
        assert name in text, name


def test_several_problems_are_still_one_line(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(OptionsError) as err:
        validated(PipelineOptions(["--reviews=in/*.json", f"--output={tmp_path}/f.txt", "--window_size=oops"]))
    assert str(err.value) == (f"invalid options (2 problems): (1) --output {tmp_path}/f.txt is a file, not a folder "
                              "(2) not a duration: 'oops' (use e.g. 3600, 15m, 6h, 1d)")


CREDENTIALS = ("Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or pass "
               "--blob_service_endpoint=https://ACCOUNT.blob.core.windows.net and sign in for DefaultAzureCredential "
               "(az login, managed identity or AZURE_CLIENT_* variables)")


@pytest.mark.parametrize("args, users", [
    (["--reviews=in/*.json", "--output=azfs://acct/c/out"], "--output needs"),
    (["--source=adls", "--reviews=azfs://a/c/r/*", "--output=out"], "--source=adls, --reviews need"),
    (["--source=adls", "--reviews=azfs://a/c/r/*", "--products=azfs://a/c/p/*", "--output=azfs://a/c/o"],
     "--source=adls, --reviews, --products, --output need"),
    (["--reviews=in/*.json", "--output=out", "--sentiment_model=azfs://a/c/m"], "--sentiment_model needs"),
])
def test_any_azfs_path_needs_credentials_before_any_work(monkeypatch, args, users):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(OptionsError) as err:
        validated(PipelineOptions(args))
    assert str(err.value) == f"invalid options: {users} {CREDENTIALS}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    validated(PipelineOptions(args))
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    validated(PipelineOptions(args + ["--blob_service_endpoint=https://acct.blob.core.windows.net"]))


def test_help_examples_are_commands_a_shell_can_run():
    """Every example line of --help that continues ends with a backslash and the next line holds the rest:
    once, an unescaped backslash in the source joined two lines of the streaming example into one."""
    from beam_pipeline.options import HELP_EPILOG
    lines = HELP_EPILOG.splitlines()
    commands = [i for i, line in enumerate(lines) if "python -m beam_pipeline" in line]
    assert len(commands) >= 3
    for i in commands:
        while lines[i].endswith("\\"):
            i += 1
            assert lines[i].startswith(" " * 20) and lines[i].strip().startswith("--"), lines[i]
        assert lines[i].count(" --") <= 4, lines[i]   # no two physical lines run together
    streaming = next(line for line in lines if "--source=eventhub" in line)
    assert streaming.rstrip().endswith("\\") and "--products" not in streaming
