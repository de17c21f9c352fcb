"""U-GAT-IT (Kim et al. 2020): unpaired translation with attention from an auxiliary classifier (CAM) in the
generators and discriminators, and adaptive layer-instance normalization (AdaLIN) in the decoder."""

from __future__ import annotations


import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from stylecore import losses
from stylecore.gan.base import AdversarialOutput, PhotoToDomain, register_gan, to_unit
from stylecore.gan.networks import ResidualBlock, instance_norm


class LayerInstanceNorm(nn.Module):
    """ρ · IN(x) + (1 − ρ) · LN(x), then a scale and shift: AdaLIN (``adaptive``: γ, β per image from the
    generator's attention features; ρ starts at 0.9) or ILN (γ, β learned; ρ starts at 0). Variances are the
    unbiased ones, as in the reference code; statistics are computed in float32 under autocast."""

    def __init__(self, channels: int, adaptive: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.adaptive, self.eps = adaptive, eps
        # one value per channel, kept 1-D: a (1, C, 1, 1) parameter would take channels_last strides its gradient
        # does not have, which DDP's buckets warn about on every step
        self.rho = nn.Parameter(torch.full((channels,), 0.9 if adaptive else 0.0))
        if not adaptive:
            self.gamma = nn.Parameter(torch.ones(channels))
            self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None) -> Tensor:
        x32 = x.float()
        instance = (x32 - x32.mean((2, 3), keepdim=True)) * torch.rsqrt(x32.var((2, 3), keepdim=True) + self.eps)
        layer = (x32 - x32.mean((1, 2, 3), keepdim=True)) * torch.rsqrt(x32.var((1, 2, 3), keepdim=True) + self.eps)
        rho = self.rho[:, None, None]
        mixed = rho * instance + (1.0 - rho) * layer
        if self.adaptive:
            out = mixed * gamma.float()[:, :, None, None] + beta.float()[:, :, None, None]
        else:
            out = mixed * self.gamma[:, None, None] + self.beta[:, None, None]
        return out.to(x.dtype)


class ClassActivation(nn.Module):
    """The CAM attention of U-GAT-IT's generator and discriminator: an auxiliary classifier on global average- and
    max-pooled features (one logit each: "is this image from the domain this network maps from / is it real"),
    whose weights then scale the feature channels; a 1×1 convolution fuses the two re-weighted maps.

    Returns (features, the two logits (B, 2), heatmap). The channels are scaled by the classifier's effective
    weight — with spectral normalization the normalized one its logit used; the reference code reads
    ``parameters()[0]``, the raw ``weight_orig``, there."""

    def __init__(self, channels: int, spectral: bool, activation: nn.Module) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda module: module)
        self.gap_fc = wrap(nn.Linear(channels, 1, bias=False))
        self.gmp_fc = wrap(nn.Linear(channels, 1, bias=False))
        self.conv1x1 = nn.Conv2d(channels * 2, channels, 1)
        self.activation = activation

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        gap = x * self.gap_fc.weight.to(x.dtype)[:, :, None, None]
        gmp = x * self.gmp_fc.weight.to(x.dtype)[:, :, None, None]
        x = self.activation(self.conv1x1(torch.cat([gap, gmp], 1)))
        return x, torch.cat([gap_logit, gmp_logit], 1), x.sum(1, keepdim=True)


class AdaLINBlock(nn.Module):
    """The decoder's residual block: reflect pad, conv 3×3, AdaLIN, ReLU, reflect pad, conv 3×3, AdaLIN, + x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False))
        self.norm1 = LayerInstanceNorm(channels, adaptive=True)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False))
        self.norm2 = LayerInstanceNorm(channels, adaptive=True)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(out), gamma, beta)


class AttentionGenerator(nn.Module):
    """U-GAT-IT's generator: an encoder (c7s1-64, two stride-2 downsamplings, ``blocks`` residual blocks), the CAM
    attention, γ and β for AdaLIN from an MLP on the attended features — on their global average (``light``) or
    on all of them flattened (the full model, which therefore takes ``image_size``² inputs only) —, ``blocks``
    AdaLIN residual blocks, two nearest-upsampling + conv + ILN stages and c7s1-3, tanh. No biases before a norm.

    Returns (image, CAM logits, heatmap). Parameters at ``width=64, blocks=4`` (the official ``ch 64, n_res 4``):
    10,589,888 light, 278,959,808 full at ``image_size=256``."""

    def __init__(self, width: int = 64, blocks: int = 4, light: bool = True, image_size: int = 256) -> None:
        super().__init__()
        self.light, self.image_size = light, image_size
        down: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, width, 7, bias=False), instance_norm(width),
                                 nn.ReLU(True)]
        for factor in (1, 2):
            down += [nn.ReflectionPad2d(1), nn.Conv2d(width * factor, width * factor * 2, 3, stride=2, bias=False),
                     instance_norm(width * factor * 2), nn.ReLU(True)]
        channels = width * 4
        down += [ResidualBlock(channels, bias=False) for _ in range(blocks)]
        self.encoder = nn.Sequential(*down)
        self.attention = ClassActivation(channels, spectral=False, activation=nn.ReLU(True))
        features = channels if light else (image_size // 4) ** 2 * channels
        self.mlp = nn.Sequential(nn.Linear(features, channels, bias=False), nn.ReLU(True),
                                 nn.Linear(channels, channels, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(channels, channels, bias=False)
        self.beta = nn.Linear(channels, channels, bias=False)
        self.decoder_blocks = nn.ModuleList(AdaLINBlock(channels) for _ in range(blocks))
        up: list[nn.Module] = []
        for factor in (4, 2):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(width * factor, width * factor // 2, 3, bias=False),
                   LayerInstanceNorm(width * factor // 2, adaptive=False), nn.ReLU(True)]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(width, 3, 7, bias=False), nn.Tanh()]
        self.upsample = nn.Sequential(*up)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not self.light and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"the full U-GAT-IT generator takes {self.image_size}² images only (its MLP reads every "
                             f"feature); got {tuple(x.shape[-2:])}: crop to that size or use light=True")
        x, cam_logits, heatmap = self.attention(self.encoder(x))
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1) if self.light else x.flatten(1)
        hidden = self.mlp(pooled)
        gamma, beta = self.gamma(hidden), self.beta(hidden)
        for block in self.decoder_blocks:
            x = block(x, gamma, beta)
        return self.upsample(x), cam_logits, heatmap


class AttentionDiscriminator(nn.Module):
    """U-GAT-IT's discriminator: ``layers`` − 2 stride-2 and one stride-1 spectrally normalized 4×4 convolutions
    (reflect padding, LeakyReLU 0.2), the CAM attention, a last 4×4 convolution to one logit per patch. The global
    discriminator has ``layers=7`` (5 downsamplings), the local one ``layers=5`` (3). Returns (patch logits, CAM
    logits, heatmap). Parameters at ``width=64``: 53,130,176 global, 3,290,560 local (the official code's)."""

    def __init__(self, width: int = 64, layers: int = 7) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(f"ugatit: a discriminator needs at least 3 layers; got {layers}")
        modules: list[nn.Module] = [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(3, width, 4, stride=2)),
                                    nn.LeakyReLU(0.2, True)]
        channels = width
        for _ in range(layers - 3):
            modules += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, channels * 2, 4, stride=2)),
                        nn.LeakyReLU(0.2, True)]
            channels *= 2
        modules += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, channels * 2, 4, stride=1)),
                    nn.LeakyReLU(0.2, True)]
        channels *= 2
        self.body = nn.Sequential(*modules)
        self.attention = ClassActivation(channels, spectral=True, activation=nn.LeakyReLU(0.2, True))
        self.head = nn.Sequential(nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, 1, 4, bias=False)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, cam_logits, heatmap = self.attention(self.body(x))
        return self.head(x), cam_logits, heatmap


@register_gan("ugatit")
class UGATIT(PhotoToDomain):
    """U-GAT-IT (Kim et al. 2020): two attention generators (source → target, target → source) and, per domain, a
    global and a local attention discriminator; LSGAN on the patch logits and on the discriminators' CAM logits,
    cycle and identity L1, and the generators' CAM loss (BCE: an input from the domain a generator maps from → 1,
    one already in its output domain → 0).

        L_G = λ_adv Σ_D [GAN(D(fake)) + GAN(η_D(fake))] + λ_cyc (cycle) + λ_id (identity) + λ_cam (CAM)
        L_D = λ_adv Σ_D [GAN_D(D(real), D(fake)) + GAN_D(η_D(real), η_D(fake))]

    The official defaults (znxlwm/UGATIT-pytorch): ``ch 64, n_res 4``, discriminators of 7 and 5 layers, λ_adv 1,
    λ_cyc 10, λ_id 10, λ_cam 1000, Adam lr 1e-4, β (0.5, 0.999), weight decay 1e-4, linear decay over the second
    half; D is updated before G each step, and ρ is clipped to [0, 1] after every G update. ``light=True`` (its
    ``--light`` variant, γ and β from pooled features) is the default here: the full generator's MLP alone has
    268 M parameters. Parameters at the defaults: 2 × 10,589,888 (generators) + 2 × (53,130,176 + 3,290,560)
    (discriminators) = 134,021,248; with ``light=False`` 670,761,088 (the official code builds the same).
    """

    discriminator_first = True
    gan_losses = ("lsgan", "sgan", "hinge")
    paper_training = {"lr": 1e-4, "betas": (0.5, 0.999), "weight_decay": 1e-4, "lr_schedule": "linear_decay",
                      "decay_start": 0.5}

    def __init__(self, source: str = "photo", target: str = "art", width: int = 64, blocks: int = 4,
                 light: bool = True, image_size: int = 256, d_width: int = 64, global_layers: int = 7,
                 local_layers: int = 5, gan_loss: str = "lsgan", adversarial_weight: float = 1.0,
                 cycle_weight: float = 10.0, identity_weight: float = 10.0, cam_weight: float = 1000.0) -> None:
        super().__init__(source=source, target=target, width=width, blocks=blocks, light=light,
                         image_size=image_size, d_width=d_width, global_layers=global_layers,
                         local_layers=local_layers, gan_loss=gan_loss, adversarial_weight=adversarial_weight,
                         cycle_weight=cycle_weight, identity_weight=identity_weight, cam_weight=cam_weight)
        self.check_settings(gan_loss, ("adversarial_weight", "cycle_weight", "identity_weight", "cam_weight"))
        if not light and image_size % 4:
            raise ValueError(f"ugatit: image_size must be a multiple of 4; got {image_size}")
        self.generators["to_target"] = AttentionGenerator(width, blocks, light, image_size)
        self.generators["to_source"] = AttentionGenerator(width, blocks, light, image_size)
        for domain in ("target", "source"):
            self.discriminators[f"{domain}_global"] = AttentionDiscriminator(d_width, global_layers)
            self.discriminators[f"{domain}_local"] = AttentionDiscriminator(d_width, local_layers)
        self.gan = losses.build(gan_loss, weight=adversarial_weight)
        self.cycle = losses.build("cycle", weight=cycle_weight)
        self.identity = losses.build("identity", weight=identity_weight)
        self.cam = losses.build("cam", weight=cam_weight)

    def generate(self, images: Tensor, domain: str) -> Tensor:
        generator = self.generator_for(domain)
        if generator.light or tuple(images.shape[-2:]) == (generator.image_size,) * 2:
            return generator(images)[0]
        # the full model reads a fixed size: translate at that size, then back to the input's
        side = generator.image_size
        out = generator(F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False))[0]
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def _adversarial(self, side: str, fake: Tensor) -> Tensor:
        total = fake.new_zeros((), dtype=torch.float32)
        for scale in ("global", "local"):
            logits, cam_logits, _ = self.discriminators[f"{side}_{scale}"](fake)
            total = total + self.gan(logits) + self.gan(cam_logits)
        return self.gan.weight * total

    def generator_losses(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                         ) -> AdversarialOutput:
        g, f = self.generators["to_target"], self.generators["to_source"]
        with self.discriminators_frozen():  # the discriminators are fixed critics here
            fake_target, cam_g_source, _ = g(source)  # G on its own input domain: CAM logits → 1
            fake_source, cam_f_target, _ = f(target)
            same_target, cam_g_target, _ = g(target)  # G on images already in its output domain: → 0, identity
            same_source, cam_f_source, _ = f(source)
            terms = {
                "gan_target": self._adversarial("target", fake_target),
                "gan_source": self._adversarial("source", fake_source),
                "cycle_source": self.cycle.weight * self.cycle(f(fake_target)[0], source),
                "cycle_target": self.cycle.weight * self.cycle(g(fake_source)[0], target),
                "identity_target": self.identity.weight * self.identity(same_target, target),
                "identity_source": self.identity.weight * self.identity(same_source, source),
                "cam_target": self.cam.weight * self.cam(cam_g_source.float(), cam_g_target.float()),
                "cam_source": self.cam.weight * self.cam(cam_f_target.float(), cam_f_source.float()),
            }
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return AdversarialOutput(total, {k: v.detach() for k, v in terms.items()},
                                 {"fake_target": fake_target, "fake_source": fake_source})

    @torch.no_grad()
    def generated_without_grad(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                               ) -> dict[str, Tensor]:
        return {"fake_target": self.generators["to_target"](source)[0],
                "fake_source": self.generators["to_source"](target)[0]}

    def discriminator_losses(self, source: Tensor, target: Tensor, generated: dict[str, Tensor],
                             domains: Tensor | None = None) -> AdversarialOutput:
        terms, scores = {}, {}
        for side, real, fake in (("target", target, generated["fake_target"]),
                                 ("source", source, generated["fake_source"])):
            for scale in ("global", "local"):
                # no normalization in these discriminators: one forward of real and fake is two forwards' logits
                logits, cam_logits, _ = self.discriminators[f"{side}_{scale}"](
                    torch.cat([real, fake.detach().to(real.dtype)]))
                real_logits, fake_logits = logits.split([real.shape[0], fake.shape[0]])
                real_cam, fake_cam = cam_logits.split([real.shape[0], fake.shape[0]])
                terms[f"d_{side}_{scale}"] = self.gan.weight * (self.gan.discriminator(real_logits, fake_logits)
                                                                + self.gan.discriminator(real_cam, fake_cam))
                scores[f"d_{side}_{scale}_real"] = real_logits.detach().float().mean()
                scores[f"d_{side}_{scale}_fake"] = fake_logits.detach().float().mean()
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return AdversarialOutput(total, {**{k: v.detach() for k, v in terms.items()}, **scores})

    def after_generator_step(self) -> None:
        with torch.no_grad():  # the reference's RhoClipper(0, 1)
            for module in self.generators.modules():
                if isinstance(module, LayerInstanceNorm):
                    module.rho.clamp_(0.0, 1.0)

    def sample_grid_images(self, source: Tensor, target: Tensor, generated: dict[str, Tensor]) -> list[Tensor]:
        """photo | its attention heatmap | → domain | back: the reference's sample columns."""
        with torch.no_grad():
            _, _, heatmap = self.generators["to_target"](source)
            back = self.generators["to_source"](generated["fake_target"])[0]
        heat = F.interpolate(heatmap.float(), size=source.shape[-2:], mode="bilinear", align_corners=False)
        low, high = heat.amin((1, 2, 3), keepdim=True), heat.amax((1, 2, 3), keepdim=True)
        heat = ((heat - low) / (high - low).clamp_min(1e-8)).expand(-1, 3, -1, -1)
        return [to_unit(source), heat, to_unit(generated["fake_target"]), to_unit(back)]
