"""Where a checkpoint's held-out error is: squared error split by the ground truth's alpha into
background, object interior and silhouette pixels (torch renderer, 64 + 128 samples, bf16):
errsplit.py CHECKPOINT [VIEWS]. Run from the repository root."""
import sys, json, numpy as np, torch
from PIL import Image
from nerfexport.data.datasets import load_scene
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.train.loop import render_image
torch.set_num_threads(2)
ck = sys.argv[1]; nv = int(sys.argv[2]) if len(sys.argv) > 2 else 3
scene = load_scene("../shared/data/lego_400", downscale=4, test_every=20)
m = load_checkpoint(ck)
meta = json.load(open("../shared/data/lego_400/transforms_test.json"))["frames"][::20]
imgs, poses = scene.subset("test")
tot = {"bg": 0, "fg": 0, "edge": 0}; cnt = {"bg": 0, "fg": 0, "edge": 0}; ps = []
for i in range(nv):
    a = np.asarray(Image.open("../shared/data/lego_400/" + meta[i]["file_path"] + ".png"))[..., 3] / 255.0
    a = a.reshape(100, 4, 100, 4).mean((1, 3))
    out = render_image(m, 100, 100, scene.focal, poses[i], amp=torch.bfloat16)
    se = ((out["rgb"] - imgs[i]) ** 2).mean(-1)
    ps.append(-10 * np.log10(se.mean()))
    for k, msk in (("bg", a < 0.01), ("fg", a > 0.99), ("edge", (a >= 0.01) & (a <= 0.99))):
        tot[k] += se[msk].sum(); cnt[k] += msk.sum()
    acc = out["acc"]
    print(i, "psnr %.2f" % ps[-1], "bg acc mean %.4f max %.3f" % (acc[a < 0.01].mean(), acc[a < 0.01].max()))
N = sum(cnt.values())
for k in tot:
    print(k, "pixels %.3f" % (cnt[k] / N), "share of SE %.3f" % (tot[k] / sum(tot.values())), "mse %.5f" % (tot[k] / cnt[k]))
print("psnr if bg perfect: %.2f" % (-10 * np.log10((tot['fg'] + tot['edge']) / N)))
print("psnr if edge perfect too: %.2f" % (-10 * np.log10((tot['fg']) / N)))
