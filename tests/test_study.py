import json

import torch

from conftest import tiny_config
from nerfexport.model.checkpoint import save_checkpoint
from nerfexport.data.datasets import load_scene
from nerfexport.shrink.distill import DistillConfig
from nerfexport.model.mlp import NeRF
from nerfexport.bench.study import StudyOptions, markdown_table, run_study


def test_study_rows_resume_and_table(blender_dir, tmp_path):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    teacher = NeRF(tiny_config(width=16, depth=3))
    tpath = tmp_path / "t.pt"
    save_checkpoint(teacher, tpath, meta={"train_seconds": 1.2})
    dc = DistillConfig(bank_rays=64, batch_rays=16, n_coarse=4, n_fine=4)
    kw = dict(widths=(8,), methods=("uniform", "coreset"), finetune={8: 2}, eval_views=1, eval_samples=(4, 4),
              calib_rays=16, distill_cfg=dc)
    doc = run_study(tpath, scene, tmp_path / "s", StudyOptions(scratch=False, **kw))
    assert [(r["method"], r["width"]) for r in doc["rows"]] == [("uniform", 8), ("coreset", 8)]
    assert (tmp_path / "s" / "coreset-w8.pt").is_file()
    # resuming adds only what is missing
    doc = run_study(tpath, scene, tmp_path / "s", StudyOptions(scratch=True, **kw))
    assert [r["kind"] for r in doc["rows"]] == ["shrink", "shrink", "scratch"]
    saved = json.loads((tmp_path / "s" / "study.json").read_text())
    assert len(saved["rows"]) == 3
    table = markdown_table(doc)
    assert "| teacher | 16 |" in table
    assert "coreset (Mussay et al.)" in table and "trained from scratch" in table
    assert table.count("\n|") >= 5
