"""Training and inference throughput of the 256-wide NeRF MLP in torch, fp32 against bf16
autocast (docs/teacher.md). Prints one line per (mode, batch).

    .venv/bin/python docs/scripts/mlp_throughput.py [WIDTH] [BATCHES]

On CPUs without native bf16 kernels (no AVX-512) bf16 falls back to a reference GEMM; the
script says which case this machine is.
"""

import sys
import time

import torch

from nerfexport.model.mlp import MLPConfig, NeRFMLP
from nerfexport.train.device import cpu_has_native_bf16


def main() -> None:
    width = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    batches = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [4096, 14336]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 kernels: {cpu_has_native_bf16()}")
    for precision in ("fp32", "bf16"):
        net = NeRFMLP(MLPConfig.uniform(8, width))
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        amp = precision == "bf16"
        for n in batches if precision == "fp32" else batches[:1]:
            pts = torch.rand(n, 3) * 2 - 1
            dirs = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)

            def train_step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    raw = net(pts, dirs)
                loss = raw.float().square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def infer():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    net(pts, dirs)

            for name, fn in (("training", train_step), ("inference", infer)):
                fn()
                ts = []
                for _ in range(3):
                    t = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t)
                ts.sort()
                print(f"{precision:5s} {name:9s} batch {n:6d}: {n / ts[1]:8.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
