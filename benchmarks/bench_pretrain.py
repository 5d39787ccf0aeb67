"""Throughput of one SimCLR pretraining step, with and without channels_last, and the demo encoder's step
(resnet18, views of the `pretrain` default view_size) against the same step on views of the patch's size.

A step is what `simclr_s2.learning.simclr.pretrain` does per batch: two augmented views of each image, one
forward pass over both, NT-Xent, backward, SGD step. images/s counts input images (each is two
views through the network).

    python benchmarks/bench_pretrain.py            # resnet50 and resnet152, batch 32, 10 x 120 x 120
    python benchmarks/bench_pretrain.py --quick    # 1 warm-up + 2 timed steps per setting
"""

from __future__ import annotations

import argparse
import time

import torch
from figures import Figure, Rate, load_average, report

from simclr_s2.learning.config import ARCHS, AugmentConfig
from simclr_s2.learning.models import build_simclr, channels_last
from simclr_s2.learning.simclr import make_optimizer, simclr_step
from simclr_s2.settings.specs import Pretrain


def images_per_second(
    arch: str,
    bands: int,
    batch: int,
    size: int,
    use_channels_last: bool,
    warmup: int,
    steps: int,
    device: torch.device,
    amp: bool,
    view_size: int | None = None,
) -> float:
    torch.manual_seed(0)
    model = build_simclr(arch, bands).to(device).train()
    if use_channels_last:
        channels_last(model)
    optimizer = make_optimizer(model, "sgd", 0.1)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, bands, size, size, device=device)
    autocast_dtype = torch.bfloat16 if amp and device.type == "cuda" else None
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()  # simclr_step's loss.item() has synchronised the device
        simclr_step(
            model,
            x,
            optimizer,
            temperature=0.1,
            augment=AugmentConfig(view_size=view_size),
            generator=generator,
            channels_last=use_channels_last,
            autocast_dtype=autocast_dtype,
        )
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archs", default="resnet50,resnet152", help=f"comma-separated, from {', '.join(ARCHS)}"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--size", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps per setting")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"input={args.bands}x{args.size}x{args.size} warmup={args.warmup} steps={args.steps} amp={args.amp}"
    )
    print(f"{'arch':<10} {'channels_last':>13} {'images/s':>9} {'s/step':>7}")
    figures = []
    for arch in args.archs.split(","):
        rates, loads = {}, {}
        for use_channels_last in (False, True):
            rate = images_per_second(
                arch,
                args.bands,
                args.batch_size,
                args.size,
                use_channels_last,
                args.warmup,
                args.steps,
                device,
                args.amp,
            )
            rates[use_channels_last], loads[use_channels_last] = rate, load_average()
            print(
                f"{arch:<10} {use_channels_last!s:>13} {rate:>9.2f} {args.batch_size / rate:>7.2f}",
                flush=True,
            )
        print(f"{arch:<10} {'speed-up':>13} {rates[True] / rates[False]:>8.2f}x")
        figures.append(Figure(f"SimCLR pretraining step, {arch}, channels_last, {device} (images/s)",
                              Rate(rates[True], None, loads[True]), "the same steps, contiguous",
                              Rate(rates[False], None, loads[False])))
    demo = {view: [] for view in (Pretrain.view_size, None)}
    for _ in range(3):  # interleaved: views of the demo's size, then of the patch's
        for view, rates in demo.items():
            rates.append(images_per_second("resnet18", args.bands, args.batch_size, args.size, True, args.warmup,
                                           args.steps, device, args.amp, view))
    load = load_average()
    figures.append(Figure(f"SimCLR step, resnet18, views {Pretrain.view_size} px (the demo's), {device} (images/s)",
                          Rate(max(demo[Pretrain.view_size]), None, load), f"the same on views of {args.size} px",
                          Rate(max(demo[None]), None, load)))
    report(figures)


if __name__ == "__main__":
    main()
