"""`make gpu-check`: the GPU paths checked in one command, on whatever GPU machine is at hand.

    make gpu-check                                   # writes cache/gpu-check/
    python docs/scripts/gpu_check.py --out DIR [--budget SECONDS] [--device cuda|cpu]

From a fresh checkout, with the Python packages the machine already has (nothing is installed
and nothing is downloaded; `docs/scripts/gpu_check.sh` picks the interpreter whose torch sees
CUDA), in under 8 minutes:

1. `environment.txt`: the interpreter, which nerfexport it imports (the checkout's own, staged
   under DIR/_pkg with symlinks when it is not installed), the packages found or missing,
   `nvidia-smi`;
2. `doctor.txt`: `nerfexport doctor` (every shipped runtime, available or not and why, and the
   provider a session really got);
3. `test_gpu.txt`: `pytest tests/test_gpu.py -rs` (each test that cannot run names what is missing);
4. `bench/`: a tiny teacher trained for a few hundred steps on CUDA on the embedded scene
   (`nerfexport synth`), exported as fp32/fp16/int8 bundles for the GPU runtimes this machine
   has, and `nerfexport bench` of the torch teacher on CUDA against each of them (and ort-cpu
   as the CPU reference); the step logs beside it.

`summary.md` and `summary.json` list every step: ran, skipped (with the reason) or failed. The
exit status is 1 when a step that ran failed, else 0: on a machine without a GPU every GPU step
is skipped and the check exits 0. `--device cpu` runs the bench on the CPU (a smoke run of this
script, not a GPU check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("numpy", "onnx", "onnxruntime", "typer", "rich", "PIL", "matplotlib", "torch")
GPU_RUNTIMES = ("ort-cuda", "ort-trt", "tensorrt")
MARKER = "summary.json"


class Check:
    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.t0, self.budget = out, time.monotonic(), budget
        self.steps: list[dict] = []
        self.env = dict(os.environ)
        self.py = sys.executable

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def record(self, step: str, status: str, detail: str = "", seconds: float = 0.0) -> dict:
        row = {"step": step, "status": status, "detail": detail, "seconds": round(seconds, 1)}
        self.steps.append(row)
        print(f"[{time.monotonic() - self.t0:5.0f} s] {step}: {status}" + (f" ({detail})" if detail else ""), flush=True)
        return row

    def run(self, step: str, args: list[str], log: str, timeout: float, cwd: Path | None = None) -> dict:
        """Run ``python args...`` with its output in ``log``; the whole process group is ended on timeout."""
        timeout = min(timeout, self.left())
        if timeout < 5:
            return self.record(step, "skipped", "out of the check's time budget")
        t = time.monotonic()
        with open(self.out / log, "w") as f:
            f.write(f"$ {self.py} {' '.join(args)}\n")
            f.flush()
            p = subprocess.Popen([self.py, *args], cwd=cwd or self.out, env=self.env, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                return self.record(step, "failed", f"timed out after {timeout:.0f} s; see {log}", time.monotonic() - t)
        dt = time.monotonic() - t
        if rc != 0:
            lines = [l for l in (self.out / log).read_text(errors="replace").splitlines() if l.strip()]
            return self.record(step, "failed", f"exit {rc}: {lines[-1][:200] if lines else ''}; see {log}", dt)
        return self.record(step, "ran", f"see {log}", dt)

    def python(self, code: str, timeout: float = 120) -> tuple[int, str]:
        try:
            r = subprocess.run([self.py, "-c", code], cwd=self.out, env=self.env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "timed out"
        return r.returncode, (r.stdout + r.stderr).strip()


def prepare(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise SystemExit(f"error: {out} exists and is not an earlier gpu-check folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def stage_package(c: Check) -> str:
    """Make ``import nerfexport`` give this checkout: as installed, or staged with symlinks (its
    runtimes/ and recipes/ become nerfexport.runtimes and nerfexport.recipes, as in the wheel)."""
    code = "import nerfexport, nerfexport.runtimes; print(nerfexport.__file__)"
    rc, text = c.python(code)
    if rc == 0 and Path(text.splitlines()[-1]).resolve().parent == ROOT / "nerfexport":
        return f"installed from this checkout ({text.splitlines()[-1]})"
    pkg = c.out / "_pkg" / "nerfexport"
    pkg.mkdir(parents=True)
    for p in (ROOT / "nerfexport").iterdir():
        if p.name != "__pycache__":
            (pkg / p.name).symlink_to(p)
    (pkg / "runtimes").symlink_to(ROOT / "runtimes")
    (pkg / "recipes").symlink_to(ROOT / "recipes")
    c.env["PYTHONPATH"] = os.pathsep.join([str(c.out / "_pkg")] + [x for x in [c.env.get("PYTHONPATH")] if x])
    rc, text2 = c.python(code)
    where = text2.splitlines()[-1] if text2 else ""
    return (f"staged from this checkout under {c.out / '_pkg'} ({where})" if rc == 0
            else f"could not import nerfexport ({where or text})")


def environment(c: Check) -> list[str]:
    """Writes environment.txt; returns the modules missing."""
    lines = [f"python: {c.py} ({sys.version.split()[0]})", f"checkout: {ROOT}"]
    missing = []
    for m in NEEDED + ("pytest",):
        rc, text = c.python(f"import {m}; print(getattr({m}, '__version__', '?'))")
        lines.append(f"{m}: {text.splitlines()[-1] if rc == 0 and text else 'missing'}")
        if rc != 0:
            missing.append(m)
    lines.append(f"nerfexport: {stage_package(c)}")
    rc, text = c.python("import torch; print(torch.version.cuda, torch.cuda.is_available(), "
                        "torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")
    lines.append(f"torch CUDA build, available, device: {text if rc == 0 else 'torch missing'}")
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi], capture_output=True, text=True, timeout=30)
            lines += ["", "$ nvidia-smi", r.stdout.strip() or r.stderr.strip()]
        except (subprocess.TimeoutExpired, OSError) as e:
            lines.append(f"nvidia-smi: {e}")
    else:
        lines.append("nvidia-smi: not found")
    (c.out / "environment.txt").write_text("\n".join(lines) + "\n")
    return missing


def gpu_runtimes(c: Check) -> dict[str, str | None]:
    """runtime -> None (available) or why not."""
    code = ("import json\nfrom nerfexport.deploy.runtime import RuntimeUnavailable, check_available, load_runtime\nout = {}\n"
            f"for n in {list(GPU_RUNTIMES)!r}:\n"
            "    try:\n        check_available(load_runtime(n)); out[n] = None\n"
            "    except RuntimeUnavailable as e:\n        out[n] = str(e)\n"
            "print(json.dumps(out))")
    rc, text = c.python(code)
    if rc != 0:
        return {n: f"could not ask: {text.splitlines()[-1] if text else rc}" for n in GPU_RUNTIMES}
    return json.loads(text.splitlines()[-1])


def bench(c: Check, device: str) -> None:
    avail = gpu_runtimes(c)
    for name, why in avail.items():
        if why:
            c.record(f"bench {name}", "skipped", why)
    rc, text = c.python("import torch; print(torch.cuda.is_available())")
    if device == "cuda" and not (rc == 0 and text.splitlines()[-1] == "True"):
        why = "torch sees no CUDA device" if rc == 0 else "torch is missing"
        c.record("bench", "skipped", f"{why}: the torch teacher on CUDA is the bench's reference")
        return
    cli = ["-m", "nerfexport.cli"]
    scene, teacher = c.out / "scene", c.out / "teacher.pt"
    steps = "300" if device == "cuda" else "20"
    for step, args, log, timeout in (
            ("synth", ["synth", scene, "--size", "32", "--train", "12", "--val", "1", "--test", "2"], "synth.txt", 60),
            ("train teacher", ["train", scene, "-o", teacher, "--width", "64", "--depth", "4", "--steps", steps,
                               "--batch-rays", "512", "--n-coarse", "32", "--n-fine", "32", "--render-coarse", "32",
                               "--render-fine", "32", "--precision", "fp32", "--device", device, "--restart"],
             "train.txt", 120)):
        if c.run(step, cli + [str(a) for a in args], log, timeout)["status"] != "ran":
            c.record("bench", "skipped", f"{step} did not run")
            return
    want = {"ort-cuda": ("fp32", "fp16"), "ort-trt": ("fp32", "fp16", "int8"), "tensorrt": ("fp32", "fp16", "int8")}
    bundles = {}
    for prec in ("fp32", "fp16", "int8"):
        for engines in (False, True):
            users = [r for r in want if not avail.get(r) and prec in want[r] and (r == "tensorrt") == engines]
            if not users and not (prec == "fp32" and not engines):   # fp32 without engines: the ort-cpu reference
                continue
            name = f"bundle-{prec}" + ("-trt" if engines else "")
            args = ["export", teacher, "-o", c.out / name, "--force"]
            args += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--target", "tensorrt"]}[prec]
            args += ["--tensorrt"] if engines else []
            if c.run(f"export {name}", cli + [str(a) for a in args], f"export-{name}.txt", 240)["status"] == "ran":
                bundles[(prec, engines)] = c.out / name
    items = [f"teacher torch {device}={teacher}@torch"]
    if ("fp32", False) in bundles:
        items.append(f"fp32 ort-cpu={bundles[('fp32', False)]}@ort-cpu:plain")
    for r, precs in want.items():
        if avail.get(r):
            continue
        for prec in precs:
            b = bundles.get((prec, r == "tensorrt"))
            if b is not None:
                items.append(f"{prec} {r}={b}@{r}:plain")
    c.run("bench", cli + ["bench", *items, "-o", str(c.out / "bench"), "--views", "2", "--repeat", "2", "--no-peak"],
          "bench.txt", 600)


def summary(c: Check) -> int:
    failed = [s for s in c.steps if s["status"] == "failed"]
    total = time.monotonic() - c.t0
    doc = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(total, 1), "python": c.py,
           "steps": c.steps, "failed": len(failed)}
    (c.out / MARKER).write_text(json.dumps(doc, indent=1))
    lines = [f"gpu-check, {doc['created']}, {total:.0f} s, {c.py}", "", "| step | status | seconds | detail |",
             "|---|---|---:|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['detail']} |" for s in c.steps]
    (c.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {c.out}/ ({'every step that ran passed' if not failed else f'{len(failed)} step(s) failed'})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="cache/gpu-check", help="folder for everything the check writes")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check (under 8 minutes)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="device of the bench's torch teacher: cuda (the check), cpu (a smoke run of this script)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out = (out if out.is_absolute() else Path.cwd() / out).resolve()
    prepare(out)
    c = Check(out, args.budget)
    t = time.monotonic()
    missing = environment(c)
    c.record("environment", "ran", "see environment.txt" + (f"; missing: {', '.join(missing)}" if missing else ""),
             time.monotonic() - t)
    core = [m for m in missing if m != "pytest"]
    if core:
        for step in ("doctor", "tests/test_gpu.py", "bench"):
            c.record(step, "skipped", f"this Python lacks {', '.join(core)}")
        return summary(c)
    c.run("doctor", ["-m", "nerfexport.cli", "doctor"], "doctor.txt", 120)
    if "pytest" in missing:
        c.record("tests/test_gpu.py", "skipped", "this Python lacks pytest")
    else:
        c.run("tests/test_gpu.py", ["-m", "pytest", str(ROOT / "tests" / "test_gpu.py"), "-rs", "-p", "no:cacheprovider",
                                    "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")], "test_gpu.txt", 240)
    bench(c, args.device)
    return summary(c)


if __name__ == "__main__":
    raise SystemExit(main())
