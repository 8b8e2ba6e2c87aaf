"""Training throughput of the airbench network on this machine: images per second of forward + backward +
Nesterov SGD steps on random data, after one warm-up step.

    python benchmarks/airbench_throughput.py THREADS BATCH fp32|bf16 cl|contiguous
    python benchmarks/airbench_throughput.py 2 1000 bf16 cl
"""

import sys
import time

import torch
import torch.nn.functional as F

from dlkit.nets.classifiers import build_classifier


def main() -> None:
    threads, bs, prec, cl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "cl"
    torch.set_num_threads(threads)
    net = build_classifier("airbench", 3, 10, 32)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.85, nesterov=True)
    x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    n = max(2, 3000 // bs)
    t = time.perf_counter()
    for _ in range(n):
        step()
    dt = time.perf_counter() - t
    print(f"threads={threads} batch={bs} {prec} {'channels_last' if cl else 'contiguous'}: {n * bs / dt:.1f} img/s",
          flush=True)


if __name__ == "__main__":
    main()
