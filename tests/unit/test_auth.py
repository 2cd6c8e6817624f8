"""API keys: scopes, hashes only outside the key file, a private key file, comments."""

from __future__ import annotations

import os

import pytest

from rayinfra.config import Settings
from rayinfra.serve import auth


def _settings(tmp_path, **kw) -> Settings:
    return Settings(**{"home": tmp_path, "api_keys": None, **kw})


def test_entries_parse_scopes_comments_and_blank_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text(
        "# header\n\n   # an indented comment is not a key\nk1 predict feedback  # trailing\n"
        f"{auth.hash_key('k2')}\n  k3 admin\n"
    )
    path.chmod(0o600)
    keys = {k.hash: k.scopes for k in auth.keys(_settings(tmp_path, api_keys_file=path))}
    assert keys == {
        auth.hash_key("k1"): ("predict", "feedback"),
        auth.hash_key("k2"): ("predict",),
        auth.hash_key("k3"): ("admin",),
    }


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "keys"
    path.write_text("k1\n")
    path.chmod(0o644)
    with pytest.raises(auth.KeyFileError, match="0644.*must be 0600"):
        auth.keys(_settings(tmp_path, api_keys_file=path))


def test_unknown_scope_names_the_line(tmp_path):
    path = tmp_path / "keys"
    path.write_text("k1 predict\nk2 everything\n")
    path.chmod(0o600)
    with pytest.raises(auth.KeyFileError, match=r"keys:2: unknown scope everything"):
        auth.keys(_settings(tmp_path, api_keys_file=path))


def test_check_needs_the_scope(tmp_path):
    keys = auth.keys(_settings(tmp_path, api_keys="a predict,b predict feedback"))
    assert auth.check("b", keys, "feedback").scopes == ("predict", "feedback")
    with pytest.raises(auth.AuthError) as err:
        auth.check("a", keys, "feedback")
    assert err.value.status == 403 and "may not use feedback" in err.value.reason
    with pytest.raises(auth.AuthError) as err:
        auth.check(None, keys, "predict")
    assert err.value.status == 401
    with pytest.raises(auth.AuthError) as err:
        auth.check("zzz", keys, "predict")
    assert err.value.status == 403


def test_first_key_has_every_scope_and_a_private_file(tmp_path):
    settings = _settings(tmp_path)
    (made,) = auth.keys(settings, create=True)
    assert made.scopes == auth.SCOPES
    path = auth.default_key_file(settings)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert auth.hash_key(auth.client_key(settings, "feedback")) == made.hash
    assert auth.keys(settings, create=True) == [made]  # made once


def test_add_stores_only_the_hash_and_revoke_removes_it(tmp_path):
    settings = _settings(tmp_path)
    plain, key = auth.add_key(settings, ("feedback",), note="labeller")
    text = auth.key_file(settings).read_text()
    assert plain not in text and key.hash in text and "labeller" in text
    assert oct(os.stat(auth.key_file(settings)).st_mode & 0o777) == "0o600"
    assert auth.check(plain, auth.keys(settings), "feedback") == key
    assert auth.revoke_key(settings, key.id) == 1
    assert auth.keys(settings) == []
    with pytest.raises(auth.KeyFileError, match="scopes must be"):
        auth.add_key(settings, ("root",))


def test_settings_shipped_to_replicas_carry_no_keys(tmp_path):
    settings = _settings(tmp_path).model_copy(update={"api_keys": "secret-key predict"})
    assert settings.without_secrets().api_keys is None
    assert "secret-key" not in settings.without_secrets().model_dump_json()


def test_keys_cli_adds_lists_and_revokes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rayinfra.cli import app

    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path))
    monkeypatch.delenv("RAYINFRA_API_KEYS", raising=False)
    runner = CliRunner()
    added = runner.invoke(app, ["keys", "add", "predict", "feedback", "--note", "labeller"])
    assert added.exit_code == 0, added.output
    plain = next(line for line in added.output.splitlines() if line.startswith("rik_"))
    listed = runner.invoke(app, ["keys", "list"])
    kid = auth.key_id(auth.hash_key(plain))
    assert kid in listed.output and "predict feedback" in listed.output and plain not in listed.output
    assert runner.invoke(app, ["keys", "add", "root"]).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", kid]).exit_code == 0
    assert kid not in runner.invoke(app, ["keys", "list"]).output


def test_the_served_application_carries_key_hashes_only(tmp_path):
    """All a replica, the controller or the object store ever gets is pickled from the bound
    application: the plain key is nowhere in those bytes, its hash is."""
    from ray import cloudpickle

    from rayinfra.serve.app import application
    from tests.conftest import small_spec

    plain = "plain-key-never-shipped-0123456789"
    settings = _settings(tmp_path).model_copy(update={"api_keys": f"{plain} predict feedback"})
    blob = cloudpickle.dumps(application(small_spec(), settings))
    assert plain.encode() not in blob
    assert auth.hash_key(plain).encode() in blob


def test_replicas_and_the_monitor_refuse_settings_with_keys(tmp_path):
    settings = _settings(tmp_path).model_copy(update={"api_keys": "secret-key predict"})
    with pytest.raises(RuntimeError, match="the drift monitor was given plaintext API keys"):
        settings.held_by("the drift monitor")
    assert settings.without_secrets().held_by("a replica").api_keys is None
