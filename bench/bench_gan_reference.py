"""stylecore's CycleGAN, U-GAT-IT and StarGAN training steps against their public reference implementations, side
by side.

The reference networks are imported at run time from a checkout of each official repository (nothing of theirs is
in stylecore): ``--cyclegan`` a checkout (or bare git directory) of junyanz/pytorch-CycleGAN-and-pix2pix
(``models/networks.py``), ``--ugatit`` one of znxlwm/UGATIT-pytorch (``networks.py``), ``--stargan`` one of
yunjey/stargan (``model.py``). Their iteration is re-created here from their training code (CycleGAN:
``optimize_parameters``, G with LSGAN, cycle ×10 and identity ×5 terms while the discriminators are frozen, then
each D on the real and a history-pool fake, halved; U-GAT-IT: D on real and fake of both domains, global and local,
then G with adversarial, cycle, identity and CAM terms, then the ρ clip; StarGAN: D with the gradient penalty and
the classification term, then G), with the same optimisers and sizes (StarGAN's reference batch is 2 × ``--batch``: stylecore's step reads a batch of photos
and one of artworks). Both sides time one full step (D and G every step: ``n_critic = 1`` on both), fp32,
in interleaved rounds in one process; the figure is the median per step.

    python bench/bench_gan_reference.py --cyclegan /path/to/pytorch-CycleGAN-and-pix2pix \
        --ugatit /path/to/UGATIT-pytorch --stargan /path/to/stargan
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.gan.base import HistoryPool  # noqa: E402
from stylecore.gan.training import paper_config  # noqa: E402
from stylecore.training import Trainer  # noqa: E402


def import_reference(location: Path, filename: str, scratch: Path):
    """``filename`` of a checkout (a working tree, or a bare git directory: read from HEAD) as a module."""
    source = location / filename
    if not source.is_file():
        text = subprocess.run(["git", f"--git-dir={location}", "show", f"HEAD:{filename}"], check=True,
                              capture_output=True, text=True).stdout
        source = scratch / f"{location.name}-{filename.replace('/', '-')}"
        source.write_text(text)
    spec = importlib.util.spec_from_file_location(f"reference_{source.stem}_{abs(hash(str(location)))}", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cyclegan_reference_step(networks, size: int, batch: int):
    """One iteration of the CycleGAN reference's optimize_parameters(): resnet_9blocks generators and basic 70×70
    PatchGANs with instance norm, the official defaults, LSGAN. The history pools are stylecore's (the same rule:
    half the time an earlier fake), which cost nothing next to the networks."""
    g_a, g_b = (networks.define_G(3, 3, 64, "resnet_9blocks", norm="instance", use_dropout=False) for _ in range(2))
    d_a, d_b = (networks.define_D(3, 64, "basic", norm="instance", use_sigmoid=False) for _ in range(2))
    gan, l1 = networks.GANLoss(use_lsgan=True), nn.L1Loss()
    g_optim = torch.optim.Adam([*g_a.parameters(), *g_b.parameters()], lr=2e-4, betas=(0.5, 0.999))
    d_optim = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=2e-4, betas=(0.5, 0.999))
    pool_a, pool_b = HistoryPool(50), HistoryPool(50)
    g = torch.Generator().manual_seed(0)
    real_a = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    real_b = torch.rand(batch, 3, size, size, generator=g) * 2 - 1

    def frozen(flag: bool) -> None:
        for parameter in (*d_a.parameters(), *d_b.parameters()):
            parameter.requires_grad_(not flag)

    def step():
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        frozen(True)
        g_optim.zero_grad()
        identity = l1(g_a(real_b), real_b) * 10 * 0.5 + l1(g_b(real_a), real_a) * 10 * 0.5
        g_loss = gan(d_a(fake_b), True) + gan(d_b(fake_a), True) + l1(rec_a, real_a) * 10 + l1(rec_b, real_b) * 10
        (g_loss + identity).backward()
        g_optim.step()
        frozen(False)
        d_optim.zero_grad()
        for critic, real, pool, fake in ((d_a, real_b, pool_b, fake_b), (d_b, real_a, pool_a, fake_a)):
            pooled = pool.query(fake.detach())
            ((gan(critic(real), True) + gan(critic(pooled), False)) * 0.5).backward()
        d_optim.step()

    return step


def ugatit_reference_step(networks, size: int, batch: int):
    """One iteration of the U-GAT-IT reference's train(), light variant, official sizes."""
    gen_ab = networks.ResnetGenerator(3, 3, 64, 4, size, light=True)
    gen_ba = networks.ResnetGenerator(3, 3, 64, 4, size, light=True)
    dis_ga, dis_gb = networks.Discriminator(3, 64, 7), networks.Discriminator(3, 64, 7)
    dis_la, dis_lb = networks.Discriminator(3, 64, 5), networks.Discriminator(3, 64, 5)
    adam = dict(lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    g_optim = torch.optim.Adam([*gen_ab.parameters(), *gen_ba.parameters()], **adam)
    d_optim = torch.optim.Adam([p for d in (dis_ga, dis_gb, dis_la, dis_lb) for p in d.parameters()], **adam)
    clip = networks.RhoClipper(0, 1)
    g = torch.Generator().manual_seed(0)
    real_a = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    real_b = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    mse, l1, bce = nn.MSELoss(), nn.L1Loss(), nn.BCEWithLogitsLoss()

    def ls_real(x):
        return mse(x, torch.ones_like(x))

    def ls_fake(x):
        return mse(x, torch.zeros_like(x))

    def step():
        d_optim.zero_grad()
        fake_ab, _, _ = gen_ab(real_a)
        fake_ba, _, _ = gen_ba(real_b)
        d_loss = 0.0
        for dis, real, fake in ((dis_ga, real_a, fake_ba), (dis_la, real_a, fake_ba), (dis_gb, real_b, fake_ab),
                                (dis_lb, real_b, fake_ab)):
            real_logit, real_cam, _ = dis(real)
            fake_logit, fake_cam, _ = dis(fake.detach())
            d_loss = d_loss + ls_real(real_logit) + ls_fake(fake_logit) + ls_real(real_cam) + ls_fake(fake_cam)
        d_loss.backward()
        d_optim.step()
        g_optim.zero_grad()
        fake_ab, cam_ab, _ = gen_ab(real_a)
        fake_ba, cam_ba, _ = gen_ba(real_b)
        back_a, _, _ = gen_ba(fake_ab)
        back_b, _, _ = gen_ab(fake_ba)
        same_a, cam_aa, _ = gen_ba(real_a)
        same_b, cam_bb, _ = gen_ab(real_b)
        g_loss = 0.0
        for dis, fake in ((dis_ga, fake_ba), (dis_la, fake_ba), (dis_gb, fake_ab), (dis_lb, fake_ab)):
            logit, cam, _ = dis(fake)
            g_loss = g_loss + ls_real(logit) + ls_real(cam)
        g_loss = g_loss + 10 * (l1(back_a, real_a) + l1(back_b, real_b)) + 10 * (l1(same_a, real_a) + l1(same_b, real_b))
        g_loss = g_loss + 1000 * (bce(cam_ba, torch.ones_like(cam_ba)) + bce(cam_aa, torch.zeros_like(cam_aa))
                                  + bce(cam_ab, torch.ones_like(cam_ab)) + bce(cam_bb, torch.zeros_like(cam_bb)))
        g_loss.backward()
        g_optim.step()
        gen_ab.apply(clip)
        gen_ba.apply(clip)

    return step


def stargan_reference_step(model, size: int, batch: int, domains: int):
    """One iteration of the StarGAN reference's train() (RaFD-style one-hot labels), with G updated every step."""
    generator, critic = model.Generator(64, domains, 6), model.Discriminator(size, 64, domains, 6)
    g_optim = torch.optim.Adam(generator.parameters(), 1e-4, betas=(0.5, 0.999))
    d_optim = torch.optim.Adam(critic.parameters(), 1e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    x_real = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    label_org = torch.randint(domains, (batch,), generator=g)

    def step():
        label_trg = label_org[torch.randperm(batch)]
        c_org, c_trg = F.one_hot(label_org, domains).float(), F.one_hot(label_trg, domains).float()
        out_src, out_cls = critic(x_real)
        d_loss = -out_src.mean() + F.cross_entropy(out_cls, label_org)
        x_fake = generator(x_real, c_trg)
        out_src, _ = critic(x_fake.detach())
        d_loss = d_loss + out_src.mean()
        alpha = torch.rand(batch, 1, 1, 1)
        x_hat = (alpha * x_real.data + (1 - alpha) * x_fake.data).requires_grad_(True)
        out_src, _ = critic(x_hat)
        (grad,) = torch.autograd.grad(out_src, x_hat, torch.ones_like(out_src), retain_graph=True, create_graph=True)
        d_loss = d_loss + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        g_optim.zero_grad()
        d_optim.zero_grad()
        d_loss.backward()
        d_optim.step()
        x_fake = generator(x_real, c_trg)
        out_src, out_cls = critic(x_fake)
        g_loss = -out_src.mean() + F.cross_entropy(out_cls, label_trg)
        g_loss = g_loss + 10 * (x_real - generator(x_fake, c_org)).abs().mean()
        g_optim.zero_grad()
        d_optim.zero_grad()
        g_loss.backward()
        g_optim.step()

    return step


def ours_step(model: str, size: int, batch: int, params: dict, labels: list[dict] | None):
    trainer = Trainer(paper_config(model, model_params=params, n_critic=1, precision="fp32", steps=10**6),
                      device="cpu")
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(batch, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)
    return lambda: trainer.train_step(content, style, style_labels=labels)


def interleaved(steps: dict, rounds: int, warmup: int = 1) -> dict[str, float]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cyclegan", type=Path,
                        help="a checkout (or bare git dir) of junyanz/pytorch-CycleGAN-and-pix2pix")
    parser.add_argument("--cyclegan-size", type=int, default=256, help="the reference's crop size (default 256)")
    parser.add_argument("--ugatit", type=Path, help="a checkout (or bare git dir) of znxlwm/UGATIT-pytorch")
    parser.add_argument("--stargan", type=Path, help="a checkout (or bare git dir) of yunjey/stargan")
    parser.add_argument("--ugatit-size", type=int, default=256, help="the reference's img_size (default 256)")
    parser.add_argument("--stargan-size", type=int, default=128, help="the reference's image_size (default 128)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}; fp32, batch {args.batch}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.cyclegan:
            networks = import_reference(args.cyclegan, "models/networks.py", Path(tmp))
            size = args.cyclegan_size
            medians = interleaved({"reference": cyclegan_reference_step(networks, size, args.batch),
                                   "stylecore": ours_step("cyclegan", size, args.batch, {}, None)}, args.rounds)
            rows.append({"model": "cyclegan", "size": size, **{f"{k}_ms": 1000 * v for k, v in medians.items()}})
        if args.ugatit:
            networks = import_reference(args.ugatit, "networks.py", Path(tmp))
            size = args.ugatit_size
            medians = interleaved({"reference": ugatit_reference_step(networks, size, args.batch),
                                   "stylecore": ours_step("ugatit", size, args.batch, {"image_size": size}, None)},
                                  args.rounds)
            rows.append({"model": "ugatit (light)", "size": size, **{f"{k}_ms": 1000 * v for k, v in medians.items()}})
        if args.stargan:
            model = import_reference(args.stargan, "model.py", Path(tmp))
            size = args.stargan_size
            # stylecore's step reads batch photos and batch artworks, one batch of 2 × batch images for StarGAN
            medians = interleaved({"reference": stargan_reference_step(model, size, 2 * args.batch, 2),
                                   "stylecore": ours_step("stargan", size, args.batch,
                                                          {"domains": ["art"], "image_size": size},
                                                          [{"style": "art"}] * args.batch)}, args.rounds)
            rows.append({"model": "stargan (2 domains)", "size": size, **{f"{k}_ms": 1000 * v for k, v in medians.items()}})
    for row in rows:
        row["stylecore_speed_vs_reference"] = row["reference_ms"] / row["stylecore_ms"]
        print(f"  {row['model']:<20} {row['size']}²  reference {row['reference_ms']:8.0f} ms  stylecore "
              f"{row['stylecore_ms']:8.0f} ms  ({row['stylecore_speed_vs_reference']:.2f}× the reference's speed)",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
