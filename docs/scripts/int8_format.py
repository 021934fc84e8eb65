"""int8 activation formats on onnxruntime's CPU provider: U8S8 against S8S8 against fp32 (docs/export.md)."""
import time, numpy as np
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.data.datasets import load_scene
from nerfexport.shrink.calibration import draw_samples
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.export.quantize import Int8Settings
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.ort_network import OrtNetwork
sc = load_scene("../shared/data/lego_400", 4, True, 20)
m = load_checkpoint("cache/shrink-study/magnitude-w128.pt")
cal = draw_samples(m, sc, 256, 0)
pts, dirs = cal.fine_pts[:12288], cal.fine_dirs[:12288]
nets = {}
for tgt in ("cpu", "tensorrt"):
    export_bundle(m, f"/tmp/fmt-{tgt}", ExportOptions(precision="int8", int8=Int8Settings(target=tgt)), calib=cal, force=True)
    nets[tgt] = OrtNetwork(open_bundle(f"/tmp/fmt-{tgt}").network_path("fine"))
export_bundle(m, "/tmp/fmt-fp32", ExportOptions(), force=True)
nets["fp32"] = OrtNetwork(open_bundle("/tmp/fmt-fp32").network_path("fine"))
res = {k: [] for k in nets}
for rep in range(15):
    for k, n in nets.items():
        t = time.perf_counter(); n(pts, dirs); res[k].append(time.perf_counter() - t)
for k, v in res.items(): print(k, "median ms per 12288 samples:", round(1e3 * float(np.median(v)), 1))
