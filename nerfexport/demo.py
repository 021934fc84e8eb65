"""``nerfexport demo``: the whole pipeline on the embedded procedural scene, through the same
library functions the commands call: dataset, train, shrink, export fp32 and int8, render the
int8 bundle (onnxruntime, no torch), bench the teacher against both bundles."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

STAGES = 7


@dataclass
class DemoOutputs:
    data: Path
    model: Path
    shrunk: Path
    bundles: dict[str, Path]
    renders: Path
    bench: Path
    table: str


def run_demo(out: str | Path = "demo-out", steps: int = 600, size: int = 64, width: int = 128,
             finetune: int = 300, progress: Callable[[dict], None] | None = None) -> DemoOutputs:
    """Run every stage into ``out``; ``progress`` gets ``{"event": "stage", "index", "total",
    "text"}`` before each stage and every stage's own events."""
    from nerfexport.bench.bench import run_bench_items
    from nerfexport.data.synthetic import make_scene
    from nerfexport.deploy.run import run_render
    from nerfexport.export.run import ExportRequest, run_export
    from nerfexport.shrink.run import run_shrink, shrink_spec
    from nerfexport.shrink.spec import EvalSpec
    from nerfexport.train.loop import TrainConfig
    from nerfexport.data.datasets import DataArgs
    from nerfexport.train.run import ModelShape, run_train
    emit = progress or (lambda e: None)

    def stage(i: int, text: str) -> None:
        emit({"event": "stage", "index": i, "total": STAGES, "text": text})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    data, model, shrunk = out / "scene", out / "model.pt", out / "shrunk.pt"
    if (data / "transforms_train.json").is_file():
        stage(1, f"reusing the embedded scene in {data}/")
    else:
        make_scene(data, size=size)
        stage(1, f"wrote the embedded scene to {data}/")
    stage(2, f"training {model} ({steps} steps)")
    run_train(DataArgs(data), model, ModelShape(256, 8, True, 64, 128),
              TrainConfig(steps=steps, batch_rays=256, n_coarse=16, n_fine=24, eval_views=8), progress=emit)
    stage(3, f"shrinking to width {width} with {finetune} distillation steps -> {shrunk}")
    spec, _ = shrink_spec({"width": width, "method": "coreset", "finetune": finetune, "calib_rays": 512})
    run_shrink(model, shrunk, spec, evaluation=EvalSpec(views=0), progress=emit)
    bundles = {"fp32": out / "bundle-fp32", "int8": out / "bundle-int8"}
    for i, (prec, b) in enumerate(bundles.items()):
        stage(4 + i, f"exporting {shrunk} as {'static int8' if prec == 'int8' else prec} -> {b}/")
        run_export(shrunk, b, ExportRequest(int8=prec == "int8", force=True), progress=emit)
    renders = out / "renders"
    stage(6, f"rendering the int8 bundle's test views with onnxruntime (no torch) -> {renders}/")
    if renders.is_dir():
        shutil.rmtree(renders)
    run_render(bundles["int8"], "ort-cpu", "test", renders, progress=emit)
    stage(7, "benchmarking the teacher (torch) against the bundles (onnxruntime CPU)")
    bench = out / "bench"
    run_bench_items([f"teacher 256 fp32={model}@torch", f"w{width} fp32={bundles['fp32']}@ort-cpu",
                     f"w{width} int8 plain={bundles['int8']}@ort-cpu:plain", f"w{width} int8={bundles['int8']}@ort-cpu"],
                    bench, views=2, repeat=2, progress=emit)
    return DemoOutputs(data, model, shrunk, bundles, renders, bench, (bench / "bench.md").read_text())
