"""Issue 25 on the command line: ``store verify``; one flipped byte in a
feature shard makes ``predict`` exit 1 naming the damage and ``run`` refuse
(unless ``--skip-damaged``, recorded in the results); ``store export``
refuses to overwrite without ``--force``; ``experiments --show`` prints the
resolved settings and where each came from. A real demo store (real clips,
real extraction, Zarr), damaged byte by byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from smalldemo import small_demo  # noqa: F401  (the shared demo store fixture)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _affect_shard(store: Path) -> Path:
    [arr] = sorted((store / "demo" / "default" / "features").glob("affect@*"))
    shards = sorted(p for p in (arr / "data" / "c").rglob("*") if p.is_file())
    assert shards, arr
    return shards[0]


@pytest.fixture()
def damaged(small_demo, tmp_path: Path) -> dict:  # noqa: F811
    store = tmp_path / "store"
    shutil.copytree(small_demo["store"], store)
    shard = _affect_shard(store)
    _flip(shard, 9)  # a value byte of the first inner chunk (its first rows)
    return {"store": store, "shard": shard.relative_to(store), "clean": small_demo["store"]}


def test_store_verify_exit_0_on_a_clean_store_and_1_naming_the_damaged_file(damaged, tmp_path: Path) -> None:
    r = run_cli("store", "verify", damaged["clean"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems" in r.stdout
    r = run_cli("store", "verify", damaged["store"])
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "checksum mismatch in" in out and str(damaged["shard"]).replace("/", "") in out.replace("/", "").replace(" ", "")
    assert "damaged row(s)" in out
    r = run_cli("store", "verify", damaged["store"], "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["ok"] and doc["damaged_rows"] >= 1 and doc["problems"]
    r = run_cli("store", "verify", tmp_path / "nothing-here")
    assert r.returncode == 2 and "no such feature store" in r.stderr


def test_one_flipped_byte_predict_exits_1_naming_it_and_run_refuses(damaged, tmp_path: Path) -> None:
    model = tmp_path / "ridge.pt"
    r = run_cli("train", "ridge", "demo", "--store", damaged["clean"], "--out", model)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("predict", model, "--store", damaged["store"], "--dataset", "demo", "--out", tmp_path / "p.csv")
    assert r.returncode == 1, r.stdout + r.stderr
    said = " ".join((r.stdout + r.stderr).split())
    assert "checksum mismatch in" in said and "affect@" in said, said
    assert "of them on damaged stored rows" in said and "store verify" in said, said
    rows = (tmp_path / "p.csv").read_text().splitlines()
    damaged_rows = [line for line in rows[1:] if "checksum mismatch" in line]
    assert damaged_rows and len(damaged_rows) < len(rows) - 1  # exactly some rows, not all

    out = tmp_path / "results"
    r = run_cli("run", "ridge", "demo", "--store", damaged["store"], "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "damaged rows (checksum mismatch)" in said and "affect@" in said and "--skip-damaged" in said, said
    assert not list(out.rglob("*.json")) if out.exists() else True  # nothing written

    r = run_cli("run", "ridge", "demo", "--store", damaged["store"], "--out", out, "--skip-damaged")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left out (--skip-damaged)" in " ".join(r.stderr.split())
    [res] = list(out.rglob("seed*.json"))
    doc = json.loads(res.read_text())
    [rec] = doc["skipped_damaged"]
    assert rec["array"].startswith("affect@") and rec["rows"] == len(damaged_rows) and rec["files"]

    r = run_cli("benchmark", "demo", "--store", damaged["store"], "--out", tmp_path / "b", "--experiments", "ridge",
                "--leaderboard", tmp_path / "lb.md")
    assert r.returncode == 2 and "damaged rows (checksum mismatch)" in " ".join(r.stderr.split()), r.stdout + r.stderr
    assert not (tmp_path / "lb.md").exists()


def test_store_export_refuses_to_overwrite_without_force(small_demo, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "feats.csv"
    out.write_text("mine\n")
    r = run_cli("store", "export", small_demo["store"], "--dataset", "demo", "-e", "affect", "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(out) in " ".join(r.stderr.split()).replace(" ", "") or out.name in r.stderr
    assert "--force" in r.stderr and out.read_text() == "mine\n"
    r = run_cli("store", "export", small_demo["store"], "--dataset", "demo", "-e", "affect", "--out", out, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_text().startswith("id,") or "affect_0" in out.read_text().splitlines()[0]


def test_experiments_show_prints_each_setting_and_its_origin(tmp_path: Path) -> None:
    reg = tmp_path / "mine.toml"
    reg.write_text('[experiments.my-aan]\nextends = "feature-aan"\nfeatures = "weightfree-both"\n'
                   '[experiments.my-aan.params]\nmax_epochs = 20\n')
    r = run_cli("experiments", "--show", "my-aan", "--dataset", "demo", "--registry", reg, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)["settings"]
    assert s["max_epochs"]["value"] == 20 and s["max_epochs"]["source"] == f"experiments.my-aan.params ({reg})"
    # not set by the child: the parent's datasets.demo section
    assert s["lr"]["value"] == 0.003 and s["lr"]["source"].startswith("experiments.feature-aan.datasets.demo")
    assert s["model"]["value"] == "feature-aan"
    r = run_cli("experiments", "--show", "my-aan", "--dataset", "demo", "--registry", reg)
    table = " ".join(r.stdout.split())
    assert r.returncode == 0 and "max_epochs" in table and "experiments.my-aan.params" in table
    r = run_cli("experiments", "--show", "my-aan")
    assert r.returncode == 2 and "--dataset" in r.stderr
    r = run_cli("experiments", "--show", "no-such", "--dataset", "demo")
    assert r.returncode == 2 and "no-such" in r.stderr
