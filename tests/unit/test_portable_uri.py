"""Files kept in git name MLflow stores and artifacts so that another clone resolves them to its own copy."""

from __future__ import annotations

import sqlite3

from pipelines.tracking import portable_uri


def test_a_store_inside_the_repository_becomes_relative_and_opens_from_the_root(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    sqlite3.connect(repo / "mlflow.db").execute("create table marker (x)")
    uri = portable_uri(f"sqlite:///{repo / 'mlflow.db'}", repo)
    assert uri == "sqlite:///mlflow.db"
    monkeypatch.chdir(repo)  # the stages run from the root: the relative URI is the same file
    names = sqlite3.connect(uri[len("sqlite:///"):]).execute("select name from sqlite_master").fetchall()
    assert names == [("marker",)]
    assert portable_uri(f"file://{repo}/mlartifacts/1/abc/artifacts/checkpoint", repo) == \
        "mlartifacts/1/abc/artifacts/checkpoint"
    assert portable_uri(str(repo / "models/adain-gram/checkpoint"), repo) == "models/adain-gram/checkpoint"


def test_anything_outside_the_repository_stays_as_it_was(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for uri in (f"sqlite:///{tmp_path / 'elsewhere.db'}", "http://127.0.0.1:5000", "s3://bucket/mlartifacts/x",
                f"file://{tmp_path}/repo-sibling/x", "sqlite:///relative.db", "models/x/checkpoint",
                str(tmp_path / "outside")):
        assert portable_uri(uri, repo) == uri
