"""Weight files: where they are looked for, their SHA-256 check, `aanbench
weights` (status table / JSON) and `aanbench weights add`, and agreement
between the extractors' declarations and registry.toml."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Extractor, MediaRequest, WeightFile
from aanbench.plugin_manager import get_plugins
from aanbench.weights import (Requirement, add_file, add_folder, require, requirements, resolve, sha256_of, status,
                              weights_dir)
from aanbench_plugins.extractors.flownets import FlowNetSExtractor
from aanbench_plugins.extractors.i3d import I3DExtractor
from aanbench_plugins.extractors.resnet50 import ResNet50Extractor
from aanbench_plugins.extractors.vggish import VGGishExtractor

REPO = Path(__file__).resolve().parents[1]
NEURAL = [ResNet50Extractor(), I3DExtractor(), FlowNetSExtractor(), VGGishExtractor()]


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


class TinyWeighted(Extractor):
    """A small extractor that needs one weight file (registered in the tests)."""

    name = "tiny-weighted"
    modality = "audio"
    dim = 1
    needs = MediaRequest(audio_rate=16000)

    def __init__(self, wf: WeightFile) -> None:
        self.weights = (wf,)

    def extract(self, batch):
        return np.zeros((len(batch), 1), np.float32)


@pytest.fixture
def tiny_plugin(tmp_path):
    """Registers an extractor whose weight file is a small file made here,
    through the plugin manager's public `register`; unregistered after."""
    src, digest = _file(tmp_path / "downloads" / "tiny-weights.bin", b"tiny weights \x00\x01\x02" * 100)
    wf = WeightFile("tiny-1234abcd.pt", digest, "https://example.org/tiny-1234abcd.pt", "test weights")

    class Plugin:
        @hookimpl
        def aanbench_extractors(self):
            return [TinyWeighted(wf)]

    plugins = get_plugins()
    plugin = Plugin()
    plugins.register(plugin)
    yield src, wf
    get_plugins(reload=True)


# ---------------------------------------------------------------------------
# the Python API


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("AANBENCH_WEIGHTS", raising=False)
    assert weights_dir() == Path("~/.cache/aanbench/weights").expanduser()
    monkeypatch.setenv("AANBENCH_WEIGHTS", str(tmp_path / "env"))
    assert weights_dir() == tmp_path / "env"
    assert weights_dir(tmp_path / "flag") == tmp_path / "flag"  # --weights-dir wins


def test_status_and_resolve(tmp_path):
    path, digest = _file(tmp_path / "w" / "net-abc.pth", b"weights v1")
    wf = WeightFile("net-abc.pth", digest, "https://example.org/net-abc.pth")

    class Ex(Extractor):
        name = "ex"
        weights = (wf,)

    assert status(wf, tmp_path / "w") == "present"
    assert resolve(Ex(), tmp_path / "w") == {"net-abc.pth": path}
    assert status(wf, tmp_path / "elsewhere") == "missing"
    with pytest.raises(AanbenchError) as err:
        resolve(Ex(), tmp_path / "elsewhere")
    msg = str(err.value)
    assert "net-abc.pth is missing" in msg and digest in msg
    assert str(tmp_path / "elsewhere" / "net-abc.pth") in msg and "https://example.org/net-abc.pth" in msg
    path.write_bytes(b"weights v2")  # same name, other bytes
    assert status(wf, tmp_path / "w") == "hash mismatch"
    with pytest.raises(AanbenchError, match=hashlib.sha256(b"weights v2").hexdigest()):
        resolve(Ex(), tmp_path / "w")


def test_add_file_matches_by_hash_and_uses_the_official_name(tmp_path):
    src, digest = _file(tmp_path / "dl" / "saved-as-something.tar", b"\x01" * 5000)
    wf = WeightFile("official-name.pth", digest, "https://example.org/x")
    reqs = [Requirement("ex", wf), Requirement("other", WeightFile("b.pth", "0" * 64, "s"))]
    placed = add_file(src, tmp_path / "w", reqs)
    assert placed.copied and placed.path == tmp_path / "w" / "official-name.pth" and placed.extractors == ("ex",)
    assert placed.path.read_bytes() == src.read_bytes()
    assert add_file(src, tmp_path / "w", reqs).copied is False  # already there, same bytes
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["official-name.pth"]  # no temp files left


def test_add_file_refuses_unknown_and_differing_files(tmp_path):
    wf = WeightFile("net-abc.pth", hashlib.sha256(b"good").hexdigest(), "https://example.org/net-abc.pth")
    reqs = [Requirement("ex", wf)]
    bad, bad_digest = _file(tmp_path / "dl" / "net-abc.pth", b"truncated")
    with pytest.raises(AanbenchError) as err:
        add_file(bad, tmp_path / "w", reqs)
    assert bad_digest in str(err.value) and wf.sha256 in str(err.value)
    other, _ = _file(tmp_path / "dl" / "random.bin", b"something else")
    with pytest.raises(AanbenchError, match="not a known weight file"):
        add_file(other, tmp_path / "w", reqs)
    with pytest.raises(AanbenchError, match="not a file"):
        add_file(tmp_path / "dl" / "absent.pth", tmp_path / "w", reqs)
    assert not (tmp_path / "w").exists()


def test_require_names_every_missing_or_differing_file_at_once(tmp_path):
    good, good_digest = _file(tmp_path / "w" / "a.pth", b"file a")
    wfs = [WeightFile("a.pth", good_digest, "https://example.org/a", "Net A"),
           WeightFile("b.pth", hashlib.sha256(b"file b").hexdigest(), "https://example.org/b", "Net B"),
           WeightFile("c.pth", hashlib.sha256(b"file c").hexdigest(), "https://example.org/c")]
    reqs = [Requirement("ex-a", wfs[0]), Requirement("ex-b", wfs[1]), Requirement("ex-c", wfs[2])]
    _file(tmp_path / "w" / "c.pth", b"half of c")
    with pytest.raises(AanbenchError) as err:
        require(reqs, tmp_path / "w", needed_by="model m")
    msg = str(err.value)
    assert msg.startswith(f"model m needs 2 pretrained weight files that are not in the weights folder {tmp_path / 'w'}")
    assert "b.pth (extractor ex-b: Net B): missing" in msg and wfs[1].sha256 in msg and "https://example.org/b" in msg
    assert f"c.pth (extractor ex-c): has SHA-256 {hashlib.sha256(b'half of c').hexdigest()}" in msg
    assert wfs[2].sha256 in msg and str(tmp_path / "w" / "c.pth") in msg
    assert "a.pth" not in msg  # present and verified: not listed
    assert "aanbench weights add <folder>" in msg
    assert require(reqs[:1], tmp_path / "w") == {"a.pth": good}


def test_add_folder_places_known_downloads_and_reports_the_rest(tmp_path):
    dl = tmp_path / "Downloads"
    _, da = _file(dl / "a-saved-under-another-name.tar", b"weights of a" * 100)
    _, db = _file(dl / "nested" / "b.pth", b"weights of b" * 100)
    _file(dl / "notes.txt", b"unrelated")
    _file(dl / "c.pth", b"a broken download of c")
    _file(dl / ".hidden" / "x.pth", b"weights of a" * 100)
    _file(dl / "c.pth.part", b"in progress")
    wc = WeightFile("c.pth", hashlib.sha256(b"weights of c").hexdigest(), "https://example.org/c")
    reqs = [Requirement("ex-a", WeightFile("a.pth", da, "s")), Requirement("ex-b", WeightFile("b.pth", db, "s")),
            Requirement("ex-c", wc)]
    folder = tmp_path / "weights"
    res = add_folder(dl, folder, reqs)
    assert [(src.name, p.path.name, p.copied) for src, p in res.placed] == [
        ("a-saved-under-another-name.tar", "a.pth", True), ("b.pth", "b.pth", True)]
    assert (folder / "a.pth").read_bytes() == b"weights of a" * 100 and (folder / "b.pth").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["a.pth", "b.pth"]  # no temp files, nothing else
    skipped = {p.name: why for p, why in res.skipped}
    assert skipped == {"c.pth": f"differs from c.pth: SHA-256 {hashlib.sha256(b'a broken download of c').hexdigest()}"
                                f", expected {wc.sha256}", "notes.txt": "not a known weight file"}
    assert [p.name for p, _ in res.refused] == ["c.pth"]
    again = add_folder(dl, folder, reqs)  # already in place: nothing copied
    assert [p.copied for _, p in again.placed] == [False, False]
    with pytest.raises(AanbenchError, match="not a folder"):
        add_folder(dl / "notes.txt", folder, reqs)
    with pytest.raises(AanbenchError, match="weights folder itself"):
        add_folder(folder, folder, reqs)


# ---------------------------------------------------------------------------
# the CLI


def test_cli_lists_the_neural_weight_files_as_missing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AANBENCH_WEIGHTS", str(tmp_path / "from-env"))
    r = cli("weights", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["weights_dir"] == str(tmp_path / "from-env")
    rows = {row["file"]: row for row in data["files"]}
    for ex in NEURAL:
        (wf,) = ex.weights
        row = rows[wf.filename]
        assert ex.name in row["extractor"].split(", ") and row["sha256"] == wf.sha256
        assert row["status"] == "missing" and row["path"] == str(tmp_path / "from-env" / wf.filename)
    assert cli("weights", "--weights-dir", tmp_path, "--check").exit_code == 2
    monkeypatch.setenv("COLUMNS", "300")
    r = cli("weights", "--weights-dir", tmp_path / "flag")
    assert r.exit_code == 0
    for ex in NEURAL:
        assert ex.weights[0].filename in r.output and ex.weights[0].sha256 in r.output
    assert str(tmp_path / "flag" / "rgb_imagenet.pt") in r.output and "missing" in r.output


def test_cli_add_then_present_then_mismatch(cli, tmp_path, tiny_plugin):
    src, wf = tiny_plugin
    folder = tmp_path / "weights"
    r = cli("weights", "add", src, "--weights-dir", folder)
    assert r.exit_code == 0, r.output
    assert (folder / wf.filename).read_bytes() == src.read_bytes()
    assert "tiny-weighted" in r.output and str(folder / wf.filename) in r.output
    rows = {x["file"]: x for x in json.loads(cli("weights", "--weights-dir", folder, "--json").output)["files"]}
    assert rows[wf.filename]["status"] == "present" and rows["rgb_imagenet.pt"]["status"] == "missing"
    (folder / wf.filename).write_bytes(b"damaged")
    rows = {x["file"]: x for x in json.loads(cli("weights", "--weights-dir", folder, "--json").output)["files"]}
    assert rows[wf.filename]["status"] == "hash mismatch"


def test_cli_add_refuses_with_exit_2_and_no_traceback(cli, tmp_path, tiny_plugin):
    _, wf = tiny_plugin
    folder = tmp_path / "weights"
    unknown, digest = _file(tmp_path / "dl" / "whatever.pth", b"not a weight file")
    r = cli("weights", "add", unknown, "--weights-dir", folder)
    assert r.exit_code == 2
    assert "not a known weight file" in r.output and digest in r.output and "Traceback" not in r.output
    wrong, _ = _file(tmp_path / "dl" / wf.filename, b"a different release")
    r = cli("weights", "add", wrong, "--weights-dir", folder)
    assert r.exit_code == 2 and wf.sha256 in r.output and "Traceback" not in r.output
    assert not folder.exists()


def test_requirements_of_installed_neural_extractors():
    reqs = requirements({ex.name: ex for ex in NEURAL})
    assert [(r.extractor, r.file.filename) for r in reqs] == [
        ("flownets", "flownets_EPE1.951.pth"), ("i3d", "rgb_imagenet.pt"),
        ("resnet50", "resnet50-0676ba61.pth"), ("vggish", "vggish-10086976.pth")]


# ---------------------------------------------------------------------------
# registry.toml and the code declare the same files


def test_registry_weights_agree_with_the_extractors():
    with open(REPO / "registry.toml", "rb") as f:
        table = tomllib.load(f)["weights"]
    for ex in NEURAL:
        (wf,) = ex.weights
        entry = table[wf.filename]
        assert entry["extractor"] == ex.name
        assert entry["sha256"] == wf.sha256 and len(wf.sha256) == 64 and wf.sha256 == wf.sha256.lower()
        assert entry["source"] == wf.source
        assert entry["description"] == wf.description
    ours = {ex.name for ex in NEURAL}
    listed = {fname for fname, e in table.items() if e["extractor"] in ours}
    assert listed == {ex.weights[0].filename for ex in NEURAL}
    # torchvision-style names carry the SHA-256 prefix: the full digests agree with them
    for fname in ("resnet50-0676ba61.pth", "vggish-10086976.pth"):
        assert table[fname]["sha256"].startswith(fname.split("-")[1].split(".")[0])


def test_sha256_of_reads_the_bytes(tmp_path):
    p, digest = _file(tmp_path / "f.bin", bytes(range(256)) * 5000)
    assert sha256_of(p) == digest
    p.write_bytes(b"x")  # changed file: not served from the memo
    assert sha256_of(p) == hashlib.sha256(b"x").hexdigest()
