"""Options from BATCHCOPY_<OPTION> variables and from the TOML config file, under the
flags: flag > environment > file > default; a bad value from either is one line naming
the variable, or the file, section and key, exit 2. In process, through the console
script's own entry (batchcopy.cli.main)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from batchcopy.cli import root, settings
from batchcopy.cli.root import build
from kit.runkit import write_manifest

DS = "0" * 32


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three single-instance rows into one destination (one call merged, three without)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    rows = [{"row_id": f"r{i}", "datastore_id": DS, "source_image_set_id": "a" * 32,
             "destination_image_set_id": "b" * 32, "series_instance_uid": "1.2",
             "sop_instance_uid": f"1.2.{i}"} for i in range(3)]
    return write_manifest(tmp_path / "m.csv", rows)


def batchcopy(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              *args: str, **env: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["batchcopy", *args])
    with pytest.raises(SystemExit) as done:
        root.main()
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def plan_json(out: str) -> dict:
    return json.loads(out)


def test_an_option_from_the_environment_and_the_flag_over_it(
        manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), BATCHCOPY_OUTPUT="json")
    assert code == 0 and plan_json(out)["calls"] == 1
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), "--output", "text")
    assert code == 0 and out.startswith(f"{manifest}: 3 rows")
    # a flag from the environment, and a repeatable option (values split on spaces)
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), BATCHCOPY_MERGE="false",
                             BATCHCOPY_RATE="CopyImageSet=5 GetImageSet=50")
    doc = plan_json(out)
    assert doc["calls"] == 3 and doc["time"]["copy_rate_per_s"] == 5


def test_the_config_file_under_the_environment_and_a_command_section_over_global(
        manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "xdg" / "batchcopy" / "config.toml"  # the default place
    config.parent.mkdir(parents=True)
    config.write_text('[global]\noutput = "json"\nrate = "CopyImageSet=2"\n'
                      '[plan]\nrate = ["CopyImageSet=4"]\nmerge = false\n')
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest))
    doc = plan_json(out)
    assert code == 0 and doc["calls"] == 3 and doc["time"]["copy_rate_per_s"] == 4
    # the environment wins over the file, the flag over both
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), BATCHCOPY_MERGE="1")
    assert plan_json(out)["calls"] == 1
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), "--no-merge")
    assert plan_json(out)["calls"] == 3
    # --config names another file; [global] keys another command lacks are left to it
    other = tmp_path / "ops.toml"
    other.write_text('[global]\nmax-in-flight = 7\nlog-format = "json"\n')
    code, out, _ = batchcopy(monkeypatch, capsys, "plan", str(manifest), "--config", str(other),
                             "--output", "json")
    assert code == 0 and plan_json(out)["calls"] == 1


@pytest.mark.parametrize("env,config,expected", [
    ({"BATCHCOPY_MAX_IN_FLIGHT": "abc"}, None,
     "Invalid value for '--max-in-flight' (from BATCHCOPY_MAX_IN_FLIGHT)"),
    ({"BATCHCOPY_LOG_FORMAT": "xml"}, None,
     "Invalid value for '--log-format' (from BATCHCOPY_LOG_FORMAT)"),
    ({}, '[run]\nmax-in-flight = "abc"\n',
     "Invalid value for '--max-in-flight' (from {config} [run] max-in-flight)"),
    ({}, '[global]\nquiet = "maybe"\n', "(from {config} [global] quiet)"),
    ({"BATCHCOPY_RETRY_BACKOFF": "abc"}, None,
     "--retry-backoff (from BATCHCOPY_RETRY_BACKOFF): expected BASE[/CAP]"),
    ({}, '[run]\nmax-in-fligt = 3\n',
     "{config} [run] max-in-fligt: `batchcopy run` has no option --max-in-fligt (did you mean max-in-flight?)"),
    ({}, '[run]\nyes = true\n', "{config} [run] yes: --yes is never read from a file or the environment"),
    ({}, '[plam]\nrows = true\n', "{config}: unknown section [plam] (did you mean plan?)"),
    ({}, 'quiet = true\n', "{config}: quiet = ... is outside a section: put it under [global]"),
    ({}, '[run\n', "{config} is not valid TOML: Expected ']' at the end of a table declaration (at line 1"),
    ({}, '[run]\nmax-in-flight = [1, 2]\n', "{config} [run] max-in-flight: one value expected, got a list"),
    ({"BATCHCOPY_CONFIG": "absent.toml"}, None,
     "Invalid value for '--config' (from BATCHCOPY_CONFIG): no such file: absent.toml"),
])
def test_a_bad_value_from_the_environment_or_the_file_is_one_line_naming_it(
        env: dict[str, str], config: str | None, expected: str, manifest: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(manifest), "--endpoint-url", "http://127.0.0.1:9"]
    path = tmp_path / "c.toml"
    if config is not None:
        path.write_text(config)
        args += ["--config", str(path)]
    code, out, err = batchcopy(monkeypatch, capsys, *args, **env)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert expected.format(config=path) in err, err


def test_what_is_never_read_from_the_environment_or_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = build()
    for name in ("run", "undo", "verify", "plan", "validate", "report", "demo"):
        command = tree.commands[name]
        keys = set(settings.settable(command))
        assert not keys & {"yes", "fresh", "force", "dry-run", "help", "config"}, name
        assert any(p.opts == ["--config"] for p in command.params), name
    run = tree.commands["run"]
    endpoint = next(p for p in run.params if "--endpoint-url" in p.opts)
    # AWS_ENDPOINT_URL_MEDICAL_IMAGING is botocore's to read, by its own rule (aws/endpoints.py)
    assert endpoint.envvar == ["BATCHCOPY_ENDPOINT_URL"]
    serve = tree.commands["emulator"].commands["serve"]  # the emulator's own --config stays
    assert not any(str(e).startswith("BATCHCOPY_") for p in serve.params for e in [p.envvar])
