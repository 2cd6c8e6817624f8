"""Registry lifecycle on a real MLflow store (SQLite), without Ray: verified loads,
atomic promote and rollback, the gate's alias moves, alias moves outside rayinfra."""

from __future__ import annotations

import numpy as np
import pytest

from rayinfra import audit
from rayinfra.config import Settings
from rayinfra.data import synthetic
from rayinfra.registry import lifecycle
from rayinfra.registry.bundle import WEIGHTS, bundle_digest
from rayinfra.registry.errors import RegistryError
from rayinfra.registry.lifecycle import CHALLENGER, CHAMPION
from tests.conftest import log_bundle, small_spec


@pytest.fixture
def spec(request):
    # One MLflow store for the module (creating one takes seconds); a model per test.
    return small_spec(**{"registry.model_name": f"lifecycle-{request.node.name.split('[')[0][5:40]}"})


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("lifecycle-home"))


@pytest.fixture
def versions(spec, home, tmp_path):
    """Two registered versions; returns their artifact directories."""
    dirs = {}
    for seed in (1, 2):
        uri, where = log_bundle(spec, home, tmp_path, seed)
        dirs[lifecycle.register(spec, uri, {"rayinfra.table_version": "1"}, home)] = where
    return dirs


def test_register_records_the_bundle_hash_and_load_checks_it(spec, home, versions):
    NAME = spec.model_name
    (v1, where), _ = versions.items()
    tags = lifecycle.client(home).get_model_version(NAME, str(v1)).tags
    assert tags["rayinfra.bundle_sha256"] == bundle_digest(where)
    assert [e["sha256"] for e in audit.entries(home, "register") if e["model"] == NAME][0] == bundle_digest(where)
    pristine = (where / WEIGHTS).read_bytes()
    data = bytearray(pristine)
    data[-3] ^= 0x01  # someone with write access to the artifact store edits the weights
    (where / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(RegistryError) as err:
        lifecycle.load(NAME, v1, home)
    assert f"v{v1}" in str(err.value) and tags["rayinfra.bundle_sha256"] in str(err.value)
    assert bundle_digest(where) in str(err.value)
    assert not (home.home / "model-cache" / NAME / str(v1)).exists()  # nothing unverified is cached

    (where / WEIGHTS).write_bytes(pristine)
    rows = synthetic.generate(100, seed=9).select(spec.features.all)
    p = lifecycle.load(NAME, v1, home).probabilities(rows)
    assert p.shape == (100,) and np.isfinite(p).all()


def test_a_version_without_a_recorded_hash_is_refused(spec, home, versions):
    NAME = spec.model_name
    lifecycle.client(home).delete_model_version_tag(NAME, "1", "rayinfra.bundle_sha256")
    with pytest.raises(RegistryError, match="no recorded bundle SHA-256"):
        lifecycle.load(NAME, 1, home)


def test_promote_and_rollback_derive_from_the_one_alias(spec, home, versions):
    NAME = spec.model_name
    lifecycle.promote(spec, 1, "first", home)
    lifecycle.promote(spec, 2, "second", home)
    assert lifecycle.alias_version(NAME, CHAMPION, home) == 2
    assert lifecycle.rollback(spec, "worse", home) == 1
    assert lifecycle.alias_version(NAME, CHAMPION, home) == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        lifecycle.rollback(spec, "again", home)
    assert lifecycle.unaudited_alias_moves(spec, home) == []


def test_a_crash_before_the_alias_move_leaves_the_old_champion_whole(spec, home, versions, monkeypatch):
    NAME = spec.model_name
    lifecycle.promote(spec, 1, "first", home)

    def crash(*args, **kwargs):
        raise RuntimeError("process killed")

    monkeypatch.setattr(type(lifecycle.client(home)), "set_registered_model_alias", crash)
    with pytest.raises(RuntimeError):
        lifecycle.promote(spec, 2, "second", home)
    monkeypatch.undo()
    assert lifecycle.alias_version(NAME, CHAMPION, home) == 1  # nothing moved
    assert lifecycle.unaudited_alias_moves(spec, home) == []  # and nothing to explain
    with pytest.raises(RegistryError, match="no previous champion"):  # v2's early tag is read by nobody
        lifecycle.rollback(spec, "nothing to roll back", home)


def test_a_crash_after_the_alias_move_is_reported_not_inconsistent(spec, home, versions, monkeypatch):
    NAME = spec.model_name
    lifecycle.promote(spec, 1, "first", home)
    monkeypatch.setattr(audit, "record", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("process killed")))
    with pytest.raises(RuntimeError):
        lifecycle.promote(spec, 2, "second", home)
    monkeypatch.undo()
    assert lifecycle.alias_version(NAME, CHAMPION, home) == 2
    assert lifecycle.rollback(spec, "undo", home) == 1  # the previous champion is known from the alias alone
    assert lifecycle.unaudited_alias_moves(spec, home) == []  # the rollback is audited and matches


def test_alias_moves_outside_rayinfra_are_reported(spec, home, versions):
    NAME = spec.model_name
    assert lifecycle.unaudited_alias_moves(spec, home) == []
    lifecycle.promote(spec, 1, "first", home)
    c = lifecycle.client(home)
    c.set_registered_model_alias(NAME, CHAMPION, "2")  # straight in MLflow: no gate, no audit
    c.set_registered_model_alias(NAME, CHALLENGER, "1")
    lines = lifecycle.unaudited_alias_moves(spec, home)
    assert len(lines) == 2
    assert f"{NAME}@champion is v2 but the audit log says v1 (promote at" in lines[0]
    assert f"{NAME}@challenger is v1 but the audit log says unset (no audited move)" == lines[1]
    c.set_registered_model_alias(NAME, CHAMPION, "1")
    c.delete_registered_model_alias(NAME, CHALLENGER)
    assert lifecycle.unaudited_alias_moves(spec, home) == []


def test_gate_verdicts_move_aliases(spec, home, versions):
    """Two random-weight models on the same rows: the first is promoted, the second is not."""
    NAME = spec.model_name
    rows = synthetic.generate(4000, seed=5).to_pandas()
    first = lifecycle.gate(spec, 1, rows, home)
    assert first.promoted and first.champion is None
    second = lifecycle.gate(spec, 2, rows, home)
    assert second.champion == 1 and second.verdict.verdict in ("reject", "inconclusive", "promote")
    alias = {"promote": CHAMPION, "inconclusive": CHALLENGER}.get(second.verdict.verdict)
    if alias:
        assert lifecycle.alias_version(NAME, alias, home) == 2
    gate = [e for e in audit.entries(home, "gate") if e["model"] == spec.model_name][-1]
    assert gate["verdict"] == second.verdict.verdict and gate["rows"] == 4000 and gate["positives"] > 0
    assert lifecycle.unaudited_alias_moves(spec, home) == []


def test_the_end_of_a_challenger_stage_is_an_audited_alias_move(spec, home, versions):
    NAME, c = spec.model_name, lifecycle.client(home)
    c.set_registered_model_alias(NAME, CHALLENGER, "2")
    audit.record("challenger", "inconclusive", home, model=NAME, version=2)
    assert lifecycle.unaudited_alias_moves(spec, home) == []
    c.delete_registered_model_alias(NAME, CHALLENGER)  # the stage expired...
    assert lifecycle.unaudited_alias_moves(spec, home) != []  # ...but nothing says so yet
    audit.record("challenger_expired", "deadline passed", home, model=NAME, version=2)
    assert lifecycle.unaudited_alias_moves(spec, home) == []


def _server(spec, settings, role=CHAMPION):
    """A real ModelServer object, in this process (no Serve needed to test its reload logic).

    Its alias watcher thread is stopped: the tests call ``_refresh`` themselves, and a watcher
    left polling (MLflow's process-wide tracking URI is set on every registry look-up) would
    redirect the run logging of every later test in this session."""
    from rayinfra.serve.model import ModelServer

    server = ModelServer(spec.model_copy(update={"monitor": spec.monitor.model_copy(update={"profile": False})}),
                         settings, role)  # fmt: skip
    server._stop.set()
    return server


def test_a_replica_keeps_serving_when_the_new_champion_is_tampered(spec, home, versions):
    NAME = spec.model_name
    lifecycle.promote(spec, 1, "first", home)
    server = _server(spec, home)
    assert server.loaded.version == 1
    where = versions[2]
    (where / WEIGHTS).write_bytes((where / WEIGHTS).read_bytes()[:-8] + b"\0" * 8)
    lifecycle.promote(spec, 2, "tampered", home)
    with pytest.raises(RegistryError, match="does not match the registered"):
        server._refresh()
    records = synthetic.generate(3, seed=1).select(spec.features.all).to_pylist()
    answer = server.predict_batch([records])
    assert answer[0]["version"] == 1 and len(answer[0]["predictions"]) == 3
    lifecycle.rollback(spec, "tampered", home)
    server._refresh()
    assert server.loaded.version == 1 and lifecycle.alias_version(NAME, CHAMPION, home) == 1


def test_a_replica_starts_from_the_model_cache_while_the_registry_is_down(spec, home, versions, monkeypatch):
    NAME = spec.model_name
    lifecycle.promote(spec, 2, "serve v2", home)
    first = lifecycle.load(NAME, CHAMPION, home)
    assert (home.home / "model-cache" / NAME / "2" / WEIGHTS).exists()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = home.model_copy(update={"mlflow_uri": "http://127.0.0.1:9"})  # nothing listens there
    with pytest.raises(lifecycle.RegistryUnavailable):
        lifecycle.alias_version(NAME, CHAMPION, dead)
    cached = lifecycle.load(NAME, CHAMPION, dead)
    rows = synthetic.generate(50, seed=4).select(spec.features.all)
    assert cached.version == 2 and np.array_equal(cached.probabilities(rows), first.probabilities(rows))
    server = _server(spec, dead)  # a replica (re)started while MLflow is down
    assert server.loaded.version == 2
    assert server.predict_batch([rows.slice(0, 2).to_pylist()])[0]["version"] == 2
    with pytest.raises(lifecycle.RegistryUnavailable, match="no verified cached"):
        lifecycle.load(NAME, CHALLENGER, dead)
    # A cached copy edited on disk is refused too.
    data = home.home / "model-cache" / NAME / "2" / WEIGHTS
    data.write_bytes(data.read_bytes()[:-8] + b"\1" * 8)
    with pytest.raises(RegistryError, match="does not match"):
        lifecycle.load(NAME, CHAMPION, dead)
    assert lifecycle.load(NAME, CHAMPION, home).version == 2  # registry back: fetched and verified again


def test_a_replica_does_not_follow_an_alias_moved_outside_rayinfra(spec, home, versions):
    NAME, c = spec.model_name, lifecycle.client(home)
    lifecycle.promote(spec, 1, "first", home)
    server = _server(spec, home)
    c.set_registered_model_alias(NAME, CHAMPION, "2")  # straight in MLflow: no gate, no audit
    server._refresh()
    assert server.loaded.version == 1 and server.unaudited == 2  # kept the audited version
    assert _server(spec, home).loaded.version == 1  # a replica started now serves the audited one too
    lifecycle.promote(spec, 2, "through rayinfra", home)
    server._refresh()
    assert server.loaded.version == 2
    c.set_registered_model_alias(NAME, CHALLENGER, "1")
    challenger = _server(spec, home, CHALLENGER)
    assert challenger.loaded is None and challenger.unaudited == 1
    lifecycle.set_challenger(spec, 1, "an audited challenger", home)
    challenger._refresh()
    assert challenger.loaded.version == 1


def test_audit_verify_exits_1_on_an_alias_moved_outside_rayinfra(spec, home, versions, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rayinfra.cli import app

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())  # JSON is YAML: load_spec reads it
    monkeypatch.setenv("RAYINFRA_HOME", str(home.home))
    lifecycle.promote(spec, 1, "first", home)
    ok = CliRunner().invoke(app, ["audit", "verify", "--spec", str(spec_file)])
    assert ok.exit_code == 0 and "audit log intact" in ok.output, ok.output
    lifecycle.client(home).set_registered_model_alias(spec.model_name, CHAMPION, "2")
    bad = CliRunner().invoke(app, ["audit", "verify", "--spec", str(spec_file)])
    assert bad.exit_code == 1, bad.output
    assert f"{spec.model_name}@champion is v2 but the audit log says v1" in bad.output.replace("\n", " ")


def test_a_replica_restarted_while_the_registry_is_down_serves_what_the_last_one_served(spec, home, versions,
                                                                                      monkeypatch):  # fmt: skip
    """Only replicas touched the registry (as in production): the one that loaded the champion
    left enough in the cache for a replica started with MLflow unreachable."""
    lifecycle.promote(spec, 2, "serve v2", home)
    assert _server(spec, home).loaded.version == 2
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = home.model_copy(update={"mlflow_uri": "http://127.0.0.1:9"})  # nothing listens there
    assert _server(spec, dead).loaded.version == 2
