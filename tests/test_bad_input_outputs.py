"""Outputs never destroy what nerfexport did not write (issue 33).

An output is replaced only when it is nerfexport's own earlier output of the same kind (a bundle
holding only its manifest's files, a render or bench folder holding the marker file) or with
``--force``; never a symlink, a non-regular file, a file or folder that holds an input, or the
current folder. Each refused case asserts what tests/test_bad_input.py asserts, and that every
file that was there before is still there, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from test_bad_input import base, case, check_refused, copy_bundle, listing, run  # noqa: F401  (fixtures)


def snapshot(folder: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


def refused_intact(res, folder: Path, before: dict) -> None:
    check_refused(res, folder, set(before))
    assert snapshot(folder) == before, "a file that was there changed"


def photos(case: Path, name: str = "photos") -> Path:
    d = case / name
    d.mkdir()
    for i in range(2):
        (d / f"{i:03d}.png").write_bytes(b"\x89PNG my own photo %d" % i)
    return d


def render(base, *extra):
    return run("render", base["bundle"], "--data", base["scene"], *extra)


# ---------------------------------------------------------------- render folders

def test_render_over_a_folder_of_the_users_pngs(base, case):
    photos(case)
    before = snapshot(case)
    res = render(base, "-o", "photos")
    refused_intact(res, case, before)
    assert "--force" in res.output


def test_render_into_the_datasets_test_folder(base, case):
    scene = case / "scene"
    shutil.copytree(base["scene"], scene)
    before = snapshot(case)
    refused_intact(run("render", base["bundle"], "--data", scene, "-o", scene / "test"), case, before)


def test_render_into_the_bundle(base, case):
    b = copy_bundle(base, case)
    before = snapshot(case)
    refused_intact(run("render", b, "--data", base["scene"], "-o", b), case, before)


def test_render_output_is_a_symlink_to_earlier_renders(base, case):
    assert render(base, "-o", "r").exit_code == 0
    (case / "link").symlink_to("r")
    before = snapshot(case)
    refused_intact(render(base, "-o", "link"), case, before)


def test_render_output_is_the_current_folder(base, case):
    (case / "notes.txt").write_text("mine")
    before = snapshot(case)
    refused_intact(render(base, "-o", "."), case, before)


def test_render_over_a_file(base, case):
    (case / "r").write_text("a file")
    before = snapshot(case)
    refused_intact(render(base, "-o", "r"), case, before)


def test_render_replaces_its_own_renders_and_force_replaces_others(base, case):
    res = render(base, "-o", "r")
    assert res.exit_code == 0, res.output
    assert (case / "r" / ".nerfexport").is_file()
    res = render(base, "-o", "r")
    assert res.exit_code == 0, res.output
    photos(case)
    assert render(base, "-o", "photos", "--force").exit_code == 0
    assert not (case / "photos" / "001.png").read_bytes().startswith(b"\x89PNG my own")
    assert not [p for p in case.iterdir() if p.name.startswith(".")]


def test_render_into_an_empty_folder(base, case):
    (case / "empty").mkdir()
    assert render(base, "-o", "empty").exit_code == 0


def test_camera_path_inside_the_output_folder(base, case):
    photos(case, "r")
    (case / "r" / "path.json").write_text("{}")
    before = snapshot(case)
    refused_intact(render(base, "-o", "r", "--camera-path", case / "r" / "path.json", "--force"), case, before)


# ---------------------------------------------------------------- bundles

def test_export_over_a_bundle_holding_its_input_and_notes(base, case):
    b = copy_bundle(base, case)
    shutil.copy(base["model"], b / "m.pt")
    (b / "NOTES.txt").write_text("my notes")
    before = snapshot(case)
    res = run("export", b / "m.pt", "-o", b, "--no-grid")
    refused_intact(res, case, before)


def test_export_into_the_folder_of_its_input_with_force(base, case):
    d = case / "d"
    d.mkdir()
    shutil.copy(base["model"], d / "m.pt")
    before = snapshot(case)
    refused_intact(run("export", d / "m.pt", "-o", d, "--no-grid", "--force"), case, before)


def test_export_over_a_bundle_with_an_extra_file(base, case):
    b = copy_bundle(base, case)
    (b / "NOTES.txt").write_text("my notes")
    before = snapshot(case)
    refused_intact(run("export", base["model"], "-o", b, "--no-grid"), case, before)


def test_export_dot_inside_a_bundle(base, case, monkeypatch):
    b = copy_bundle(base, case)
    monkeypatch.chdir(b)
    before = snapshot(case)
    refused_intact(run("export", base["model"], "-o", ".", "--no-grid"), case, before)


def test_export_to_a_symlink_to_a_bundle(base, case):
    copy_bundle(base, case)
    (case / "link").symlink_to("b")
    before = snapshot(case)
    refused_intact(run("export", base["model"], "-o", "link", "--no-grid"), case, before)
    assert not [p for p in case.iterdir() if ".old-" in p.name]


def test_export_over_a_users_folder(base, case):
    photos(case)
    before = snapshot(case)
    refused_intact(run("export", base["model"], "-o", "photos", "--no-grid"), case, before)


def test_export_replaces_its_own_bundle(base, case):
    copy_bundle(base, case)
    res = run("export", base["model"], "-o", "b", "--no-grid")
    assert res.exit_code == 0, res.output
    assert not [p for p in case.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- files

def test_checkpoint_output_is_a_symlink(base, case):
    (case / "mine.pt").write_bytes(b"my own file")
    (case / "link.pt").symlink_to("mine.pt")
    before = snapshot(case)
    refused_intact(run("import", base["model"], "-o", "link.pt"), case, before)


def test_eval_json_is_a_symlink(base, case):
    (case / "mine.json").write_text("{}")
    (case / "e.json").symlink_to("mine.json")
    before = snapshot(case)
    refused_intact(run("eval", base["model"], "--data", base["scene"], "--views", 1, "--json", "e.json"), case, before)


def test_output_file_is_a_fifo(base, case):
    os.mkfifo(case / "e.json")
    before = snapshot(case)
    res = run("eval", base["model"], "--data", base["scene"], "--views", 1, "--json", "e.json")
    refused_intact(res, case, before)
    assert stat.S_ISFIFO(os.stat(case / "e.json").st_mode)


def test_device_output_is_written_through_not_replaced(base, case):
    res = run("eval", base["model"], "--data", base["scene"], "--views", 1, "--json", "/dev/null")
    assert res.exit_code == 0, res.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_curve_output_is_the_checkpoint(base, case):
    shutil.copy(base["model"], case / "m.pt")
    before = snapshot(case)
    refused_intact(run("curve", case / "m.pt", "-o", case / "m.pt"), case, before)


def test_tune_output_is_a_symlink(base, case):
    (case / "mine.toml").write_text("# my runtime\n")
    (case / "t.toml").symlink_to("mine.toml")
    before = snapshot(case)
    refused_intact(run("tune", base["bundle"], "-o", "t.toml", "--data", base["scene"], "--views", 1), case, before)


def test_tune_output_inside_the_bundle_holding_an_input(base, case):
    b = copy_bundle(base, case)
    before = snapshot(case)
    refused_intact(run("tune", b, "-o", b / "manifest.json", "--data", base["scene"]), case, before)


# ---------------------------------------------------------------- bench folders

def test_bench_over_a_users_folder(base, case):
    (case / "bo").mkdir()
    (case / "bo" / "bench.md").write_text("my own notes")
    before = snapshot(case)
    res = run("bench", f"{base['bundle']}@ort-cpu", "--data", base["scene"], "-o", "bo", "--views", 1, "--repeat", 1,
              "--no-peak")
    refused_intact(res, case, before)


def test_bench_into_the_bundle(base, case):
    b = copy_bundle(base, case)
    before = snapshot(case)
    res = run("bench", f"{b}@ort-cpu", "--data", base["scene"], "-o", b, "--views", 1, "--repeat", 1, "--no-peak")
    refused_intact(res, case, before)
