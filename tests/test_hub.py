"""torchvision weights by name: the registry's published values, the verified download against a
local HTTP server (good hash, bad hash, truncated body, server gone mid-file, reuse offline),
and names where convert-torchvision, predict-imagenet and train --init-from take a path."""

import dataclasses
import hashlib
import http.server
import json
import socket
import struct
import threading

import numpy as np
import pytest

from vggjax.cli import main
from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop import hub

V1 = hub.DEFAULT


class Server:
    """An HTTP/1.0 server on 127.0.0.1 in a thread, serving ``files[name] = (body, mode)``.

    Modes: ``"ok"``; ``"truncate"``, the full Content-Length but half the body, then a clean
    close; ``"reset"``, half the body, then the connection reset (the server gone mid-file).
    """

    def __init__(self):
        self.files, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                body, mode = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
                self.wfile.flush()
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    if s.thread.is_alive():
        s.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """$VGGJAX_HOME in tmp_path; returns the weights folder (not created)."""
    monkeypatch.setenv("VGGJAX_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "weights"


def closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused): offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def serve(server, monkeypatch, body: bytes, *, arch="vgg11", name=V1, mode="ok", prefix=None, **fields):
    """Serves ``body`` as ``<arch>-<sha256[:8]>.pth`` and points the registry's entry at it."""
    prefix = prefix or hashlib.sha256(body).hexdigest()[:8]
    file = f"{arch}-{prefix}.pth"
    server.files[file] = (body, mode)
    w = dataclasses.replace(hub.REGISTRY[f"{arch}:{name}"], url=server.base + file, size=None, **fields)
    monkeypatch.setitem(hub.REGISTRY, w.key, w)
    return w


def listing(folder):
    """The names in ``folder``; None if there is no such folder."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


BODY = np.random.default_rng(0).bytes(300_007)  # a stand-in weights file


def test_good_hash_is_downloaded_once_then_reused_without_the_server(server, home, monkeypatch):
    w = serve(server, monkeypatch, BODY)
    path = hub.weights_file("vgg11")
    assert path == home / w.file and path.read_bytes() == BODY
    assert listing(home) == [f".{w.file}.verified", w.file]  # no temp file left
    record = json.loads((home / f".{w.file}.verified").read_text())
    assert record["sha256"] == hashlib.sha256(BODY).hexdigest() and record["size"] == len(BODY)
    server.stop()
    assert hub.weights_file("vgg11", "DEFAULT") == path  # the server is gone: no network
    assert server.requests == [w.file] and listing(home) == [f".{w.file}.verified", w.file]


def test_bad_hash_keeps_nothing(server, home, monkeypatch):
    w = serve(server, monkeypatch, BODY, prefix="deadbeef")
    with pytest.raises(CheckpointError) as e:
        hub.weights_file("vgg11")
    got = hashlib.sha256(BODY).hexdigest()[:16]
    assert str(e.value) == (
        f"{w.url} gave a file with SHA-256 {got}…, not deadbeef… (nothing was kept); try again later, or "
        f"download it by hand and save it as {home / w.file} (its SHA-256 starts deadbeef), then run again"
    )
    assert listing(home.parent) is None  # no temp file left, nor the folders made for it


def test_truncated_body_keeps_nothing(server, home, monkeypatch):
    w = serve(server, monkeypatch, BODY, mode="truncate")
    home.mkdir(parents=True)
    (home / "vgg13-12345678.pth").write_bytes(b"another file, cached before")
    with pytest.raises(CheckpointError, match="stopped after 150,003 of 300,007 bytes") as e:
        hub.weights_file("vgg11")
    assert w.url in str(e.value) and f"save it as {home / w.file} " in str(e.value)
    assert listing(home) == ["vgg13-12345678.pth"]  # no temp file left


def test_server_gone_mid_file_keeps_nothing(server, home, monkeypatch):
    w = serve(server, monkeypatch, BODY, mode="reset")
    home.mkdir(parents=True)
    (home / "vgg13-12345678.pth").write_bytes(b"another file, cached before")
    with pytest.raises(CheckpointError) as e:
        hub.weights_file("vgg11")
    assert str(e.value).startswith(f"cannot download {w.url} (")  # reset, before or after the headers
    assert str(e.value).endswith(
        f"save it as {home / w.file} (its SHA-256 starts {w.sha256_prefix}), then run again"
    )
    assert listing(home) == ["vgg13-12345678.pth"]  # no temp file left


def test_size_other_than_the_registry_s_keeps_nothing(server, home, monkeypatch):
    w = serve(server, monkeypatch, BODY)
    monkeypatch.setitem(hub.REGISTRY, w.key, dataclasses.replace(w, size=len(BODY) + 1))
    with pytest.raises(CheckpointError, match=f"{w.url} gave 300,007 bytes, not 300,008"):
        hub.weights_file("vgg11")
    assert listing(home.parent) is None  # no temp file left, nor the folders made for it


def test_offline_names_the_url_the_path_and_how_to_place_the_file(home, monkeypatch):
    w = dataclasses.replace(hub.REGISTRY[f"vgg16:{V1}"], url=closed_port_url("vgg16-397923af.pth"))
    monkeypatch.setitem(hub.REGISTRY, w.key, w)
    with pytest.raises(CheckpointError) as e:
        hub.weights_file("vgg16")
    assert str(e.value) == (
        f"cannot download {w.url} (Connection refused); download it by hand and save it as "
        f"{home / 'vgg16-397923af.pth'} (its SHA-256 starts 397923af), then run again"
    )
    assert listing(home.parent) is None


def test_a_file_placed_by_hand_is_hashed_once_and_a_wrong_one_refused(home, monkeypatch):
    prefix = hashlib.sha256(BODY).hexdigest()[:8]
    w = dataclasses.replace(hub.REGISTRY[f"vgg11:{V1}"], url=closed_port_url(f"vgg11-{prefix}.pth"))
    monkeypatch.setitem(hub.REGISTRY, w.key, w)
    home.mkdir(parents=True)
    (home / w.file).write_bytes(BODY[::-1])  # the right size, the wrong content
    with pytest.raises(CheckpointError) as e:
        hub.weights_file("vgg11")
    assert str(e.value).startswith(
        f"{home / w.file} has SHA-256 {hashlib.sha256(BODY[::-1]).hexdigest()[:16]}…"
    )
    assert f"not {prefix}… (from {w.url}); delete it to download it again" in str(e.value)
    assert (home / w.file).read_bytes() == BODY[::-1] and listing(home) == [w.file]  # left alone
    (home / w.file).write_bytes(BODY)
    assert hub.weights_file("vgg11") == home / w.file  # verified offline, and recorded
    assert json.loads((home / f".{w.file}.verified").read_text())["sha256"].startswith(prefix)


def test_registry_pins_torchvision_0_28_values():
    # torchvision 0.28.0, torchvision/models/vgg.py: url= and meta["_file_size"] of each VGG*_Weights.
    published = {
        "vgg11:IMAGENET1K_V1": ("vgg11-8a719046.pth", 506.84),
        "vgg11_bn:IMAGENET1K_V1": ("vgg11_bn-6002323d.pth", 506.881),
        "vgg13:IMAGENET1K_V1": ("vgg13-19584684.pth", 507.545),
        "vgg13_bn:IMAGENET1K_V1": ("vgg13_bn-abd245e5.pth", 507.59),
        "vgg16:IMAGENET1K_V1": ("vgg16-397923af.pth", 527.796),
        "vgg16:IMAGENET1K_FEATURES": ("vgg16_features-amdegroot-88682ab5.pth", 527.802),
        "vgg16_bn:IMAGENET1K_V1": ("vgg16_bn-6c64b313.pth", 527.866),
        "vgg19:IMAGENET1K_V1": ("vgg19-dcbb9e9d.pth", 548.051),
        "vgg19_bn:IMAGENET1K_V1": ("vgg19_bn-c79401a0.pth", 548.143),
    }
    assert {k: (w.file, w.mib) for k, w in hub.REGISTRY.items()} == published
    assert {w.url for w in hub.REGISTRY.values()} == {
        f"https://download.pytorch.org/models/{f}" for f, _ in published.values()
    }
    assert hub.REGISTRY["vgg16:IMAGENET1K_V1"].sha256_prefix == "397923af"
    assert hub.REGISTRY["vgg11_bn:IMAGENET1K_V1"].sha256_prefix == "6002323d"
    assert hub.REGISTRY["vgg16:IMAGENET1K_FEATURES"].sha256_prefix == "88682ab5"  # torch.hub's HASH_REGEX
    sizes = {k: w.size for k, w in hub.REGISTRY.items() if w.size is not None}
    assert sizes == {
        "vgg16:IMAGENET1K_V1": 553433881,
        "vgg16_bn:IMAGENET1K_V1": 553507836,
        "vgg19:IMAGENET1K_V1": 574673361,
        "vgg19_bn:IMAGENET1K_V1": 574769405,
    }
    for k, size in sizes.items():  # torchvision's _file_size is MiB to 3 decimals
        assert round(size / 2**20, 3) == hub.REGISTRY[k].mib, k
    assert [w.key for w in hub.REGISTRY.values() if not w.classifier] == ["vgg16:IMAGENET1K_FEATURES"]


def test_names_read_as_torchvision_spells_them_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.named("vgg16") is hub.named("vgg16:IMAGENET1K_V1") is hub.named("vgg16:DEFAULT")
    assert hub.named("vgg16").key == "vgg16:IMAGENET1K_V1"
    assert hub.named("vgg16:IMAGENET1K_FEATURES").file == "vgg16_features-amdegroot-88682ab5.pth"
    assert hub.parse("vgg16", "IMAGENET1K_FEATURES") is hub.named("vgg16:IMAGENET1K_FEATURES")
    assert hub.named("runs/a") is None and hub.named("vgg16-397923af.pth") is None
    (tmp_path / "vgg16").mkdir()  # a run folder called vgg16 is still that folder
    assert hub.named("vgg16") is None and hub.named(tmp_path / "vgg16") is None
    with pytest.raises(
        CheckpointError, match="torchvision has no weights for 'vgg15'; the names are vgg11, "
    ):
        hub.named("vgg15")
    with pytest.raises(CheckpointError, match="vgg16's are IMAGENET1K_V1, IMAGENET1K_FEATURES"):
        hub.named("vgg16:IMAGENET1K_V2")
    with pytest.raises(ConfigError, match="vgg16:IMAGENET1K_V1 already names its weights; drop --name"):
        hub.parse("vgg16:IMAGENET1K_V1", "IMAGENET1K_V1")


def test_cache_folder_is_vggjax_home_else_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGGJAX_HOME", str(tmp_path / "h"))
    assert hub.weights_dir() == tmp_path / "h" / "weights"
    monkeypatch.delenv("VGGJAX_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.weights_dir() == tmp_path / "xdg" / "vggjax" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.weights_dir() == tmp_path / "user" / ".cache" / "vggjax" / "weights"


def test_weights_list_and_get_on_the_command_line(server, home, monkeypatch, capsys):
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(hub.REGISTRY)
    vgg16 = rows[[r["name"] for r in rows].index("vgg16:IMAGENET1K_V1")]
    assert vgg16["bytes"] == 553433881 and vgg16["mib"] == 527.796 and vgg16["sha256_prefix"] == "397923af"
    assert vgg16["path"] == str(home / "vgg16-397923af.pth") and vgg16["default"] is True
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(hub.REGISTRY) + 1 and lines[-1].startswith(f"cache: {home} ")
    row = next(line for line in lines if line.startswith("vgg16:IMAGENET1K_V1 (= vgg16)"))
    url = "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert row.split()[3:] == ["527.796", "553,433,881", "397923af", url]
    w = serve(server, monkeypatch, BODY, arch="vgg11_bn")
    assert main(["weights", "get", "vgg11_bn", "--name", "IMAGENET1K_V1"]) == 0
    assert capsys.readouterr() == (f"{home / w.file}\n", "")


@pytest.fixture
def tiny_named(server, home, monkeypatch, tmp_path):
    """A tiny torchvision-layout vgg11 (width 1/8, 12 classes) served as the registry's vgg11."""
    import torch
    from tiny import TINY
    from torch_vgg import make_torch_vgg

    torch.manual_seed(0)
    module = make_torch_vgg("vgg11", **TINY, num_classes=12)
    torch.save(module.state_dict(), tmp_path / "w.pth")
    w = serve(server, monkeypatch, (tmp_path / "w.pth").read_bytes(), width=TINY["width"])
    return w, tmp_path / "w.pth", module


def test_convert_and_predict_imagenet_take_a_name(tiny_named, tmp_path, capsys):
    from PIL import Image

    w, file, _ = tiny_named
    assert main(["convert-torchvision", "vgg11", "--out", str(tmp_path / "named")]) == 0
    assert capsys.readouterr().out == (
        f"converted vgg11:IMAGENET1K_V1 ({w.path}) (vgg11, 3 channels, 12 classes, head adaptive) "
        f"to {tmp_path / 'named'}\n"
    )
    assert (
        main(
            [
                "convert-torchvision",
                str(file),
                "--arch",
                "vgg11",
                "--width",
                "0.125",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (tmp_path / "named" / "config.json").read_text() == (tmp_path / "f" / "config.json").read_text()
    noise = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    predictions = []
    for run in ("vgg11", "vgg11:IMAGENET1K_V1", str(tmp_path / "f")):
        assert main(["predict-imagenet", run, str(tmp_path / "a.png"), "--json"]) == 0
        predictions.append(json.loads(capsys.readouterr().out))
    assert predictions[0] == predictions[1] == predictions[2] and len(predictions[0][0]["top"]) == 5
    # a name with flags it contradicts, --checkpoint, or the features-only file: one line, exit 2
    assert main(["convert-torchvision", "vgg11", "--arch", "vgg13", "--out", str(tmp_path / "x")]) == 2
    assert (
        capsys.readouterr().err
        == "error: --arch vgg13 contradicts vgg11:IMAGENET1K_V1, which is vgg11; drop --arch\n"
    )
    assert main(["predict", "vgg11", str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "f")]) == 2
    assert (
        "--checkpoint picks the weights of a run folder, but vgg11 names torchvision's"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "x").exists()


def test_train_init_from_takes_a_name(tiny_named):
    from vggjax.run.resume import train_config

    w, file, module = tiny_named
    config, _, _ = train_config({"init_from": "vgg11", "adapt_channels": True}, out=str(file.parent / "run"))
    assert (config.arch, config.width, config.hidden, config.head) == ("vgg11", 0.125, 64, "adaptive")
    assert config.init_from == "vgg11"
    source_config, variables = hub.read_run("vgg11", log=lambda _: None)  # what train_and_evaluate reads
    assert (source_config.num_classes, source_config.dataset) == (12, "imagenet")
    np.testing.assert_array_equal(
        variables["params"]["block1"]["conv1"]["kernel"],
        module.features[0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def test_export_takes_a_name(tiny_named, tmp_path):
    import onnxruntime as ort

    w, file, _ = tiny_named
    assert main(["export", "vgg11", "--out", str(tmp_path / "named.onnx")]) == 0
    argv = ["--arch", "vgg11", "--width", "0.125"]
    assert main(["export", str(file), "--out", str(tmp_path / "file.onnx"), *argv]) == 0
    x = np.random.default_rng(0).random((2, 224, 224, 3), np.float32)
    got = [
        ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"]).run(
            None, {"images": x}
        )[0]
        for n in ("named", "file")
    ]
    assert got[0].shape == (2, 12)
    np.testing.assert_array_equal(got[0], got[1])


def test_lpips_trunk_takes_a_name(server, home, monkeypatch, tmp_path):
    import jax
    import torch
    from torch_vgg import make_torch_vgg

    from vggjax.perceptual.weights import read_trunk

    state = make_torch_vgg("vgg16", hidden=8, num_classes=2).state_dict()
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    torch.save(features, tmp_path / "trunk.pth")
    serve(server, monkeypatch, (tmp_path / "trunk.pth").read_bytes(), arch="vgg16")
    by_name, by_file = read_trunk("vgg16"), read_trunk(tmp_path / "trunk.pth")
    assert jax.tree.structure(by_name) == jax.tree.structure(by_file)
    jax.tree.map(np.testing.assert_array_equal, by_name, by_file)
    assert len(jax.tree.leaves(by_name)) == 26  # VGG-16's 13 convs, kernel and bias
    assert all(np.abs(a).sum() > 0 for a in jax.tree.leaves(by_name))
