"""One `nerfexport bench` run (the CURRENT code's CLI, parent, scoring and bench.md/bench.json/ns-eval.json)
in which items whose runtime is a TOML file under /work/fused-runtimes/ are rendered by the OLD
(commit 920b5da) worker, `/work/fused/.venv/bin/python -m nerfexport.bench JOB.json`, i.e. with the
fused C kernel. /work/main is not modified: two functions of nerfexport.bench.bench are wrapped at run time.

Run with the current interpreter, same arguments as `nerfexport bench`:
    /work/main/.venv/bin/python /work/fused-bench/mixed_bench.py ITEM... [bench options]

Both job formats are the same (poses, H, W, focal, repeat, renders, n_coarse/n_fine, path, runtime, plain,
out) and so are the worker's result fields (the old one adds "kernel": "fused").
"""
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

OLD_PY = os.environ.get("NERFEXPORT_OLD_PY", "/work/fused/.venv/bin/python")
OLD_RUNTIMES = Path(os.environ.get("NERFEXPORT_OLD_RUNTIMES", "/work/fused-runtimes")).resolve()
# a neutral working folder for the old worker: `python -m` puts the cwd first on sys.path, and from
# /work/main or /work/fused it would import that source tree instead of the old env's installed package
OLD_CWD = tempfile.gettempdir()
OLD_ENV = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1"}
OLD_ENV.pop("PYTHONPATH", None)

import nerfexport.bench.bench as nb  # noqa: E402  (the current code)


def is_old(item) -> bool:
    p = Path(item.runtime)
    return p.is_file() and p.resolve().parent == OLD_RUNTIMES


_check_items, _run_item = nb.check_items, nb.run_item


def check_items(items):
    old = [it for it in items if is_old(it)]
    if old:
        # the old interpreter must have the fused kernel, and each old item's bundle must open and fuse there
        probe = ("import sys; from nerfexport.fused import unavailable; u = unavailable(); "
                 "sys.exit(u) if u else None; from nerfexport.bundle import open_bundle; "
                 "from nerfexport.runtime import load_runtime, make_networks\n"
                 "for p, rt in zip(sys.argv[1::2], sys.argv[2::2]):\n"
                 "    nets = make_networks(load_runtime(rt), bundle=open_bundle(p))\n"
                 "    assert all(n.kernel == 'fused' for n in nets.values() if n), (p, rt)\n"
                 "print('old worker: fused kernel OK')")
        args = [a for it in old for a in (it.path, it.runtime)]
        res = subprocess.run([OLD_PY, "-c", probe, *args], cwd=OLD_CWD, env=OLD_ENV, capture_output=True, text=True)
        if res.returncode != 0:
            lines = [l for l in (res.stderr or res.stdout).strip().splitlines() if l.strip()]
            raise nb.BenchError(f"old (920b5da) worker unusable: {lines[-1] if lines else res.returncode}")
        print(res.stdout.strip(), flush=True)
    # the current checks (path exists, bundle opens, kind fits) with the old items' runtime read as ort-cpu,
    # since the current runtime loader does not know the old `kernel` key
    return _check_items([replace(it, runtime="ort-cpu") if is_old(it) else it for it in items])


def run_item(item, job, timeout: float = 3600):
    if not is_old(item):
        return _run_item(item, job, timeout)
    with tempfile.TemporaryDirectory(prefix="nerfexport-bench-old-") as tmp:
        jpath, opath = Path(tmp) / "job.json", Path(tmp) / "out.json"
        jpath.write_text(json.dumps({**job, "path": str(Path(item.path).resolve()), "runtime": str(Path(item.runtime).resolve()),
                                     "renders": str(Path(job["renders"]).resolve()), "plain": item.plain, "out": str(opath)}))
        res = subprocess.run([OLD_PY, "-m", "nerfexport.bench", str(jpath)], cwd=OLD_CWD, env=OLD_ENV,
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            lines = [l for l in (res.stderr or res.stdout).strip().splitlines() if l.strip()]
            raise RuntimeError(lines[-1] if lines else f"old worker exited with {res.returncode}")
        out = json.loads(opath.read_text())
        if out.get("kernel") != "fused":
            raise RuntimeError("the old worker did not run the fused kernel")
        return out


nb.check_items, nb.run_item = check_items, run_item

if __name__ == "__main__":
    from nerfexport.cli import main
    sys.argv = ["nerfexport", "bench", *sys.argv[1:]]
    main()
