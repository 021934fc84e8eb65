"""The bad-input matrix: every command fed untrusted or wrong input.

Each case asserts what the project promises for bad input: a non-zero exit, exactly one line of
output that is the error (progress lines before it are allowed), no traceback, nothing left in
the folder the outputs go to (no file, no temporary), and for the malicious pickles that the
marker file their payload would create never appears.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_blender, write_llff
from nerfexport.cli import app
from nerfexport.data.fileio import sha256

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def check_refused(res, folder: Path, before: set[str], marker: Path | None = None) -> None:
    out = res.output
    assert res.exit_code not in (0, None), out
    assert "Traceback" not in out and "╭" not in out, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], out
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), repr(res.exception)
    after = listing(folder)
    assert after == before, f"left behind: {sorted(after - before)}; removed: {sorted(before - after)}"
    if marker is not None:
        assert not marker.exists(), "a pickle's payload ran"


# ---------------------------------------------------------------- fixtures (made once per module)

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny scene, a tiny trained model, its fp32 bundle (with a grid), a second bundle."""
    d = tmp_path_factory.mktemp("bad")
    scene = d / "scene"
    assert run("synth", scene, "--size", 16, "--train", 4, "--val", 1, "--test", 2).exit_code == 0
    model = d / "model.pt"
    r = run("train", scene, "-o", model, "--width", 16, "--depth", 3, "--steps", 20, "--batch-rays", 64,
            "--n-coarse", 8, "--n-fine", 8, "--render-coarse", 8, "--render-fine", 8)
    assert r.exit_code == 0, r.output
    bundle = d / "bundle"
    r = run("export", model, "-o", bundle, "--grid-res", 16)
    assert r.exit_code == 0, r.output
    other = d / "other"
    r = run("export", model, "-o", other, "--no-grid")
    assert r.exit_code == 0, r.output
    return {"dir": d, "scene": scene, "model": model, "bundle": bundle, "other": other}


class Evil:
    """A pickle whose payload would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A fresh working folder (the current directory) and its listing before the command."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def copy_bundle(base, work: Path, name: str = "b") -> Path:
    dst = work / name
    shutil.copytree(base["bundle"], dst)
    return dst


def edit_manifest(b: Path, fn) -> None:
    m = json.loads((b / "manifest.json").read_text())
    fn(m)
    (b / "manifest.json").write_text(json.dumps(m))


def set_file(b: Path, key: str, rel: str, target: Path | None = None) -> None:
    """Point a manifest entry (``coarse``, ``fine`` or ``occupancy``) at ``rel``, with the hash of
    ``target`` (the file it really reaches), so that only confinement can stop it."""
    def fn(m):
        e = m["occupancy"] if key == "occupancy" else m["networks"][key]
        e["file"] = rel
        if target is not None:
            e["sha256"] = sha256(target)
    edit_manifest(b, fn)


def rehash(b: Path, key: str) -> None:
    def fn(m):
        e = m["occupancy"] if key == "occupancy" else m["networks"][key]
        e["sha256"] = sha256(b / e["file"])
    edit_manifest(b, fn)


def render(b: Path, base, *extra):
    return run("render", b, "--data", base["scene"], "-o", "renders", *extra)


# ---------------------------------------------------------------- path confinement (networks and grid)

@pytest.mark.parametrize("key", ["coarse", "fine", "occupancy"])
def test_relative_dotdot_is_refused(base, case, key):
    b = copy_bundle(base, case)
    outside = case / ("secret.onnx" if key != "occupancy" else "secret.npz")
    shutil.copy(b / ("coarse.onnx" if key != "occupancy" else "occupancy.npz"), outside)
    set_file(b, key, f"../{outside.name}", outside)
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "outside the bundle folder" in res.output


@pytest.mark.parametrize("key", ["coarse", "occupancy"])
def test_absolute_path_is_refused(base, case, key):
    b = copy_bundle(base, case)
    target = base["other"] / "coarse.onnx" if key == "coarse" else base["bundle"] / "occupancy.npz"
    set_file(b, key, str(target), target)
    before = listing(case)
    check_refused(render(b, base), case, before)


def test_etc_passwd_is_refused_before_reading(base, case):
    b = copy_bundle(base, case)
    set_file(b, "fine", "../../../../../../etc/passwd")
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "outside" in res.output and "hash" not in res.output   # refused before hashing


@pytest.mark.parametrize("key", ["coarse", "occupancy"])
def test_symlinked_file_leaving_the_folder_is_refused(base, case, key):
    b = copy_bundle(base, case)
    name = "coarse.onnx" if key == "coarse" else "occupancy.npz"
    src = (base["other"] / name) if key == "coarse" else (base["bundle"] / name)
    (b / name).unlink()
    (b / name).symlink_to(src)
    rehash(b, key)
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "symlink" in res.output


@pytest.mark.parametrize("key", ["coarse", "occupancy"])
def test_symlinked_folder_leaving_the_bundle_is_refused(base, case, key):
    b = copy_bundle(base, case)
    src = base["other"] if key == "coarse" else base["bundle"]
    name = "coarse.onnx" if key == "coarse" else "occupancy.npz"
    (b / "nets").symlink_to(src)
    set_file(b, key, f"nets/{name}", src / name)
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "symlink" in res.output


def test_symlink_inside_the_bundle_is_allowed(base, case):
    b = copy_bundle(base, case)
    (b / "nets").mkdir()
    shutil.move(b / "coarse.onnx", b / "nets" / "coarse.onnx")
    (b / "coarse.onnx").symlink_to(Path("nets") / "coarse.onnx")
    res = render(b, base)
    assert res.exit_code == 0, res.output


def test_another_bundles_onnx_is_refused(base, case):
    b = copy_bundle(base, case)
    other = copy_bundle(base, case, "b2")
    set_file(b, "coarse", "../b2/coarse.onnx", other / "coarse.onnx")
    before = listing(case)
    check_refused(render(b, base), case, before)


def _with_external_data(b: Path, location: str) -> None:
    m = onnx.load(str(b / "coarse.onnx"))
    t = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        t.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    (b / "coarse.onnx").write_bytes(m.SerializeToString())
    rehash(b, "coarse")


@pytest.mark.parametrize("where", ["relative", "absolute", "inside"])
def test_external_data_is_refused(base, case, where):
    """Outside the folder: refused as leaving it; inside: refused as not covered by a hash."""
    b = copy_bundle(base, case)
    secret = (b if where == "inside" else case) / "secret.bin"
    secret.write_bytes(b"\0" * (1 << 16))
    _with_external_data(b, {"relative": "../secret.bin", "absolute": str(secret), "inside": "secret.bin"}[where])
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert ("does not hash" if where == "inside" else "external data") in res.output


# ---------------------------------------------------------------- broken content with a matching hash

@pytest.mark.parametrize("content", [b"\x08\x07garbage\xff\xfe" * 40, b"just some text\n" * 20, b""])
def test_broken_onnx_with_matching_hash(base, case, content):
    b = copy_bundle(base, case)
    (b / "fine.onnx").write_bytes(content)
    rehash(b, "fine")
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "fine.onnx" in res.output


@pytest.mark.parametrize("kind", ["garbage", "wrong-bits"])
def test_broken_grid_with_matching_hash(base, case, kind):
    b = copy_bundle(base, case)
    if kind == "garbage":
        (b / "occupancy.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    else:
        with open(b / "occupancy.npz", "wb") as f:
            np.savez_compressed(f, bits=np.zeros(7, np.uint8))
    rehash(b, "occupancy")
    before = listing(case)
    res = render(b, base)
    check_refused(res, case, before)
    assert "occupancy.npz" in res.output


# ---------------------------------------------------------------- manifest values

MANIFEST_CASES = {
    "n_coarse 0": lambda m: m["scene"].update(n_coarse=0),
    "n_coarse text": lambda m: m["scene"].update(n_coarse="64"),
    "n_fine negative": lambda m: m["scene"].update(n_fine=-1),
    "negative camera": lambda m: m["scene"]["camera"].update(W=-16),
    "huge camera": lambda m: m["scene"]["camera"].update(H=200000, W=200000),
    "far before near": lambda m: m["scene"].update(near=6.0, far=2.0),
    "nan far": lambda m: m["scene"].update(far=float("nan")),
    "precision": lambda m: m.update(precision="int4"),
    "grid res": lambda m: m["occupancy"].update(res=-4),
    "grid box": lambda m: m["occupancy"].update(aabb=[1, 1, 1, 0, 0, 0]),
    "no coarse": lambda m: m["networks"].update(coarse=None),
    "newer version": lambda m: m.update(version=99),
    "no sha": lambda m: m["networks"]["fine"].pop("sha256"),
    "2 coarse samples before fine ones": lambda m: m["scene"].update(n_coarse=2),
    "huge grid box": lambda m: m["occupancy"].update(aabb=[-1e300, -1, -1, 1e300, 1, 1]),
}


@pytest.mark.parametrize("name", list(MANIFEST_CASES))
def test_manifest_values_are_validated(base, case, name):
    b = copy_bundle(base, case)
    edit_manifest(b, MANIFEST_CASES[name])
    before = listing(case)
    check_refused(render(b, base), case, before)


@pytest.mark.parametrize("views", ["spiral", "test"])
def test_negative_camera_refused_for_every_view_kind(base, case, views):
    b = copy_bundle(base, case)
    edit_manifest(b, lambda m: m["scene"]["camera"].update(H=-3))
    before = listing(case)
    check_refused(render(b, base, "--views", views), case, before)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "nerfexport-bundle"}'])
def test_unreadable_manifests(base, case, text):
    b = copy_bundle(base, case)
    (b / "manifest.json").write_text(text)
    before = listing(case)
    check_refused(render(b, base), case, before)


def test_tampered_and_missing_files(base, case):
    b = copy_bundle(base, case)
    (b / "fine.onnx").write_bytes((b / "fine.onnx").read_bytes() + b"x")
    before = listing(case)
    check_refused(render(b, base), case, before)
    (b / "fine.onnx").unlink()
    check_refused(render(b, base), case, before - {"b/fine.onnx"})


def test_not_a_bundle(base, case):
    (case / "empty").mkdir()
    before = listing(case)
    check_refused(render(case / "empty", base), case, before)
    check_refused(render(case / "nope", base), case, before)


# ---------------------------------------------------------------- runtimes

def test_unknown_and_missing_runtimes(base, case):
    before = listing(case)
    res = render(base["bundle"], base, "--runtime", "warp9")
    check_refused(res, case, before)
    res = render(base["bundle"], base, "--runtime", "./nope.toml")
    check_refused(res, case, before)
    assert "does not exist" in res.output and "unknown runtime" not in res.output


@pytest.mark.parametrize("text", ["kind = \"onnxruntime\"\nproviders = [\n", "kind = \"onnxruntime\"\nwarp = 9\n",
                                  "kind = \"quantum\"\n", "kind = \"onnxruntime\"\nproviders = [\"CPUExecutionProvider\"]\nchunk = 0\n"])
def test_bad_runtime_files(base, case, text):
    (case / "rt.toml").write_text(text)
    before = listing(case)
    check_refused(render(base["bundle"], base, "--runtime", case / "rt.toml"), case, before)


# ---------------------------------------------------------------- bench validates before it measures

@pytest.mark.parametrize("item", ["{b}@", "{b}@ort-cpu:bogus", "{b}@warp9", "@ort-cpu", "{b}", "{broken}@ort-cpu",
                                  "{b}@torch", "{model}@ort-cpu", "{case}/nope@ort-cpu"])
def test_bench_refuses_bad_items_and_writes_nothing(base, case, item):
    broken = copy_bundle(base, case, "broken")
    (broken / "coarse.onnx").write_bytes(b"garbage" * 30)
    rehash(broken, "coarse")
    text = item.format(b=base["bundle"], broken=broken, model=base["model"], case=case)
    before = listing(case)
    res = run("bench", f"{base['bundle']}@ort-cpu", text, "--data", base["scene"], "-o", "bench-out",
              "--views", 1, "--repeat", 1, "--no-peak")
    check_refused(res, case, before)
    assert "pareto.png" not in res.output


def test_bench_names_only_files_it_wrote(base, case):
    res = run("bench", f"{base['bundle']}@ort-cpu", "--data", base["scene"], "-o", "bench-out",
              "--views", 1, "--repeat", 1, "--no-peak")
    assert res.exit_code == 0, res.output
    wrote = res.output.strip().splitlines()[-1]
    assert wrote.startswith("wrote ")
    for f in wrote[len("wrote "):].split(", "):
        assert Path(f).is_file(), f
    assert not [p for p in case.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- checkpoints: malicious pickles everywhere

def _evil(case: Path) -> tuple[Path, Path]:
    marker = case.parent / "PWNED"
    evil = case / "evil.pt"
    torch.save({"config": Evil(marker)}, evil)
    return evil, marker


PICKLE_COMMANDS = {
    "info": lambda e, base: ("info", e),
    "eval": lambda e, base: ("eval", e, "--data", base["scene"]),
    "curve": lambda e, base: ("curve", e, "-o", "c.png"),
    "shrink": lambda e, base: ("shrink", e, "-o", "s.pt", "--width", 8, "--data", base["scene"]),
    "export": lambda e, base: ("export", e, "-o", "bx"),
    "render": lambda e, base: ("render", e, "--runtime", "torch", "--data", base["scene"], "-o", "r"),
    "bench": lambda e, base: ("bench", f"{e}@torch", "--data", base["scene"], "-o", "bo", "--no-peak"),
    "train-resume": lambda e, base: ("train", base["scene"], "-o", e, "--steps", 1),
    "import": lambda e, base: ("import", e, "-o", "imported.pt"),
    "export-study": lambda e, base: ("export-study", f"x={e}", "-o", "es", "--data", base["scene"]),
}


@pytest.mark.parametrize("command", list(PICKLE_COMMANDS))
def test_malicious_pickle_never_runs(base, case, command):
    evil, marker = _evil(case)
    before = listing(case)
    res = run(*PICKLE_COMMANDS[command](evil, base))
    check_refused(res, case, before, marker)


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04broken zip"])
def test_non_checkpoints(base, case, content):
    (case / "junk.pt").write_bytes(content)
    before = listing(case)
    check_refused(run("info", case / "junk.pt"), case, before)
    check_refused(run("export", case / "junk.pt", "-o", "bx"), case, before)


# ---------------------------------------------------------------- counts and values

def test_eval_view_counts(base, case):
    before = listing(case)
    for v in (-1, 0):
        res = run("eval", base["model"], "--data", base["scene"], "--views", v)
        check_refused(res, case, before)
        assert "nan" not in res.output.lower()


def test_export_calib_rays_zero(base, case):
    before = listing(case)
    res = run("export", base["model"], "-o", "bx", "--int8", "--calib-rays", 0)
    check_refused(res, case, before)
    assert "calib-rays" in res.output


def test_downscale_larger_than_images(base, case):
    blender = write_blender(case / "blender", size=32)
    llff = write_llff(case / "llff")
    (llff / "images_2").rename(llff / "images")   # full-size images, downscaled at load time
    before = listing(case)
    res = run("train", blender, "-o", "m.pt", "--downscale", 33, "--steps", 1)
    check_refused(res, case, before)
    assert "downscale 33" in res.output and "malformed" not in res.output
    res = run("train", llff, "-o", "m.pt", "--downscale", 33, "--steps", 1)
    check_refused(res, case, before)
    assert "downscale 33" in res.output


def test_shrink_width_not_an_integer(base, case):
    before = listing(case)
    res = run("shrink", base["model"], "-o", "s.pt", "--width", "12.5")
    check_refused(res, case, before)
    assert "--width" in res.output and "integer" in res.output


def test_torch_runtime_file_with_a_device_torch_cannot_use(base, case):
    (case / "rt.toml").write_text('kind = "torch"\ndevice = "cuda:7"\n')
    before = listing(case)
    res = run("render", base["model"], "--runtime", case / "rt.toml", "--data", base["scene"], "-o", "r")
    check_refused(res, case, before)


@pytest.mark.parametrize("text", ['kind = "onnxruntime"\nproviders = 5\n',
                                  'kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nthreads = "x"\n',
                                  'kind = "torch"\nprecision = "int4"\n'])
def test_runtime_file_values_of_the_wrong_type(base, case, text):
    (case / "rt.toml").write_text(text)
    before = listing(case)
    check_refused(render(base["bundle"], base, "--runtime", case / "rt.toml"), case, before)


def test_shrink_output_named_like_its_report(base, case):
    before = listing(case)
    check_refused(run("shrink", base["model"], "-o", "x.json", "--width", 8, "--data", base["scene"]), case, before)


def test_shrink_report_path_is_checked_first(base, case):
    (case / "jr.json").mkdir()
    before = listing(case)
    check_refused(run("shrink", base["model"], "-o", "jr.pt", "--width", 8, "--data", base["scene"]), case, before)


def test_llff_nan_pose(case):
    llff = write_llff(case / "llff")
    arr = np.load(llff / "poses_bounds.npy")
    arr[1, 3] = np.nan
    np.save(llff / "poses_bounds.npy", arr)
    before = listing(case)
    res = run("train", llff, "-o", "m.pt", "--steps", 1, "--downscale", 2)
    check_refused(res, case, before)
    assert "finite" in res.output and "shape" not in res.output


def test_blender_image_path_leaving_the_dataset(case):
    blender = write_blender(case / "blender")
    meta = json.loads((blender / "transforms_train.json").read_text())
    meta["frames"][0]["file_path"] = "../../../../etc/passwd"
    (blender / "transforms_train.json").write_text(json.dumps(meta))
    before = listing(case)
    res = run("train", blender, "-o", "m.pt", "--steps", 1)
    check_refused(res, case, before)
    assert "outside" in res.output


def test_messages_name_the_users_path_not_a_temporary(base, case):
    before = listing(case)
    res = run("eval", base["model"], "--data", base["scene"], "--views", 1, "--json", "/proc/e.json")
    check_refused(res, case, before)
    assert "/proc/e.json" in res.output and ".tmp" not in res.output


def test_recipe_help_names_its_tables():
    res = run("shrink", "--help")
    assert "[shrink] table" in " ".join(res.output.split())
    res = run("export", "--help")
    assert "[export] table" in " ".join(res.output.split())


def test_unwritable_outputs(base, case):
    (case / "blocker").write_text("a file")
    before = listing(case)
    check_refused(run("export", base["model"], "-o", "blocker/b"), case, before)
    check_refused(run("export", base["model"], "-o", "blocker"), case, before)
    check_refused(run("render", base["bundle"], "--data", base["scene"], "-o", "nope/r"), case, before)
    check_refused(run("shrink", base["model"], "-o", "blocker/s.pt", "--width", 8), case, before)


# ---------------------------------------------------------------- an export killed halfway

def _export_cmd(base, out: Path) -> list[str]:
    return [sys.executable, "-c", "from nerfexport.cli.app import main; main()", "export", str(base["model"]),
            "-o", str(out), "--int8", "--calib-rays", "64", "--grid-res", "96"]   # ~1 s of grid: time to be killed


def _wait_for_temp(folder: Path, name: str, proc, timeout: float = 120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if any(p.name.startswith(f".{name}.tmp-") for p in folder.iterdir()):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_export_then_rerun(base, tmp_path, sig):
    out = tmp_path / "bundle"
    proc = subprocess.Popen(_export_cmd(base, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = _wait_for_temp(tmp_path, "bundle", proc)
    if not started:
        proc.wait()
        pytest.fail(f"the export never made its temporary folder: {proc.stdout.read()}")
    time.sleep(0.05)   # somewhere inside the export (a fast CPU finishes a small one in under 0.3 s)
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert "Traceback" not in output, output
        assert output.strip().splitlines()[-1].startswith("error: terminated"), output
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.tmp-")], "SIGTERM left a temporary"
    assert not out.exists()
    res = subprocess.run(_export_cmd(base, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "manifest.json").is_file()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not left, f"temporaries remain after the second export: {left}"


def test_a_swap_killed_between_its_renames_gives_the_earlier_output_back(tmp_path):
    from nerfexport.data.fileio import temp_dir_for
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".bundle.old-{dead.pid}"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    stale = tmp_path / f".bundle.tmp-{dead.pid}-abc"
    stale.mkdir()
    tmp = temp_dir_for(tmp_path / "bundle")
    assert (tmp_path / "bundle" / "manifest.json").is_file() and not old.exists() and not stale.exists()
    assert tmp.name.startswith(f".bundle.tmp-{os.getpid()}-")
