"""One error base: every error rayinfra raises on purpose is a RayinfraError, and the CLI
turns each into one line and its documented exit code (rayinfra.errors)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from rayinfra import cli, cli_output, errors
from rayinfra.cli import app
from rayinfra.data.ingest import IngestError, read_file, write_file
from rayinfra.data.synthetic import generate

PACKAGE = Path(cli.__file__).parent
HEAVY: set[str] = set()  # modules the scan may not import (none today)


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every exception class defined in rayinfra, found in the source."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception", "Violation"))
                for b in node.bases
            ):
                found.append((module, node.name))
    return found


def test_every_error_class_derives_from_rayinfra_error():
    classes = _error_classes()
    assert len(classes) >= 12  # the scan finds them (spec, table, ingest, registry, training, ...)
    stray = [
        f"{m}.{name}"
        for m, name in classes
        if m not in HEAVY and not issubclass(getattr(importlib.import_module(m), name), errors.RayinfraError)
    ]
    assert not stray, f"errors outside the RayinfraError base: {stray}"


def test_unreachable_errors_have_their_own_exit_code():
    assert errors.UnreachableError("x").exit_code == errors.EXIT_UNREACHABLE
    assert errors.RayinfraError("x").exit_code == errors.EXIT_BAD_INPUT
    codes = {errors.EXIT_PROBLEMS_FOUND, errors.EXIT_BAD_INPUT, errors.EXIT_JOB_STOPPED, errors.EXIT_UNREACHABLE}
    assert len(codes) == 4 and 0 not in codes


def test_the_cli_prints_one_line_and_the_errors_exit_code():
    class Refused(errors.UnreachableError):
        pass

    def boom():
        raise Refused("the cluster refused the token")

    with pytest.raises(typer.Exit) as caught:
        cli_output.guard(boom)
    assert caught.value.exit_code == errors.EXIT_UNREACHABLE


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        cli_output.guard(lambda: 1 / 0)


def test_a_bad_spec_file_exits_2_naming_it(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nunknown_section: 1\n")
    out = CliRunner().invoke(app, ["spec", "check", str(bad)])
    assert out.exit_code == errors.EXIT_BAD_INPUT and "error:" in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_write_file_round_trips_through_read_file(tmp_path, suffix):
    from rayinfra.config import load_spec
    from tests.conftest import DEMO_SPEC

    contract = load_spec(DEMO_SPEC).contract
    data = generate(20, seed=1)
    back = read_file(write_file(data, tmp_path / f"rows{suffix}"), contract)
    assert back.num_rows == 20
    assert back.column("transaction_id").to_pylist() == data.column("transaction_id").to_pylist()


def test_write_file_refuses_an_unknown_type(tmp_path):
    with pytest.raises(IngestError, match="unknown file type '.xyz'"):
        write_file(pa.table({"a": [1]}), tmp_path / "rows.xyz")
    assert not (tmp_path / "rows.xyz").exists()
