"""cProfile of 700 training steps of the lego teacher (256 rays, 16 + 24 samples, grid from step 256):
where a step's time goes. Run from the repository root: prof_train.py."""
import cProfile, pstats, torch, time
from nerfexport.data.datasets import load_scene
from nerfexport.train.loop import TrainConfig, new_model, train
torch.set_num_threads(2)
s = load_scene("../shared/data/lego_400", downscale=4, test_every=20)
m = new_model(s, 256, 8, True, 64, 128)
tc = TrainConfig(steps=700, batch_rays=256, n_coarse=16, n_fine=24, grid_warmup=256)
t = {}
def prog(e):
    if e["event"] == "step" and e["step"] in (300, 700): t[e["step"]] = (time.perf_counter(), e["minutes"])
pr = cProfile.Profile()
pr.enable()
train(m, s, tc, None, progress=prog)
pr.disable()
print("s/step steps 300-700:", (t[700][1] - t[300][1]) * 60 / 400)
pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
