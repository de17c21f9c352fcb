"""GAN translation models and adversarial training in the one loop: the networks against the official code's sizes,
the discriminator and cycle objectives doing their job, the history pool, DDP, exact resume and bad input."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stylecore import gan
from stylecore.config import TrainConfig
from stylecore.data import PairStream, SyntheticImages
from stylecore.gan.base import HistoryPool
from stylecore.gan.networks import PatchDiscriminator, ResnetGenerator
from stylecore.gan.training import AdversarialTrainer, paper_config
from stylecore.synthetic import synthetic_artwork, synthetic_photo
from stylecore.training import Trainer, TrainingHooks

TINY = {"width": 8, "blocks": 2, "d_width": 8}
UGATIT_TINY = {"width": 8, "blocks": 1, "d_width": 8, "global_layers": 4, "local_layers": 3}
STARGAN_TINY = {"width": 8, "blocks": 1, "d_width": 8, "d_layers": 3, "image_size": 32}
TINY_BY_MODEL = {"cyclegan": TINY, "ugatit": UGATIT_TINY, "stargan": STARGAN_TINY}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_equal_the_official_cyclegan_networks():
    # junyanz/pytorch-CycleGAN-and-pix2pix prints "[Network G_A] Total number of parameters : 11.378 M" and
    # "[Network D_A] ... : 2.765 M" for resnet_9blocks / basic with instance norm; exactly, from the layer list:
    # G: 9,472 + 73,856 + 295,168 + 9 × 1,180,160 + 295,040 + 73,792 + 9,411; D: 3,136 + 131,200 + 524,544 +
    # 2,097,664 + 8,193
    assert _count(ResnetGenerator()) == 11_378_179
    assert _count(PatchDiscriminator()) == 2_764_737
    model = gan.build("cyclegan")
    assert _count(model) == 2 * 11_378_179 + 2 * 2_764_737
    assert set(model.generators) == {"to_target", "to_source"} and set(model.discriminators) == {"target", "source"}


def test_the_patch_discriminator_gives_one_logit_per_overlapping_patch():
    # 4 × 4 kernels, strides 2, 2, 2, 1, 1: a 256² image gives the 30 × 30 logit map of the reference (70² patches
    # every 8 pixels); instance norm couples the patches, so locality itself is not a property to test
    d = PatchDiscriminator(width=8).eval()
    assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert d(torch.rand(2, 3, 128, 96)).shape == (2, 1, 14, 10)


def test_translate_takes_any_size_and_names_the_known_domains():
    torch.manual_seed(0)
    model = gan.build("cyclegan", source="photo", target="monet", **TINY).eval()
    out = model.translate(torch.rand(2, 3, 37, 50), "monet")
    assert out.shape == (2, 3, 37, 50) and out.min() >= 0 and out.max() <= 1
    assert model.translate(torch.rand(1, 3, 16, 16), "photo").shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"unknown domain 'ukiyoe'.*monet, photo"):
        model.translate(torch.rand(1, 3, 16, 16), "ukiyoe")


def test_bad_settings_fail_before_any_compute_naming_the_key():
    with pytest.raises(ValueError, match="gan_loss='wgan_gp' is not one of lsgan, sgan, hinge"):
        gan.build("cyclegan", gan_loss="wgan_gp")
    with pytest.raises(ValueError, match="two different domain names"):
        gan.build("cyclegan", source="art", target="art")
    with pytest.raises(ValueError, match="style_loss='gram' does not apply to the GAN model 'cyclegan'"):
        TrainConfig.from_dict({"model": "cyclegan", "style_loss": "gram"})
    with pytest.raises(ValueError, match="n_critic must be ≥ 1"):
        TrainConfig.from_dict({"model": "cyclegan", "n_critic": 0})
    with pytest.raises(ValueError, match=r"model_params.*blocks"):
        TrainConfig.from_dict({"model": "cyclegan", "model_params": {"block": 3}}).check_buildable()
    TrainConfig.from_dict({"model": "cyclegan", "model_params": TINY}).check_buildable()


def test_the_history_pool_fills_then_swaps_half_the_time():
    pool = HistoryPool(size=4, seed=0)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: each new image passes through and is stored
    swapped = 0
    for n in range(200):
        new = torch.full((1, 1, 1, 1), 100.0 + n)
        out = pool.query(new)
        if not torch.equal(out, new):
            swapped += 1
            assert any(torch.equal(out[0], old) for old in first) or out.item() >= 100  # an earlier image
            assert any(torch.equal(stored, new[0]) for stored in pool.images)  # the new one took its place
    assert 70 < swapped < 130  # p = ½
    assert torch.equal(HistoryPool(size=0).query(first), first)


def test_linear_decay_is_constant_then_falls_linearly_to_nearly_zero():
    trainer = Trainer(paper_config("cyclegan", model_params=TINY, steps=10), device="cpu")
    assert isinstance(trainer, AdversarialTrainer)
    factors = [trainer._lr_factor(step) for step in range(10)]
    # CycleGAN's rule: 1 − max(0, t − start) / (steps − start + 1), start = ½ · steps
    assert factors == pytest.approx([1, 1, 1, 1, 1, 1, 1 - 1 / 6, 1 - 2 / 6, 1 - 3 / 6, 1 - 4 / 6])
    assert trainer.optimizers["generator"].defaults["betas"] == (0.5, 0.999)


def test_a_discriminator_step_lowers_its_loss_on_separable_real_and_fake():
    torch.manual_seed(0)
    model = gan.build("cyclegan", **TINY)
    optimizer = torch.optim.Adam(model.discriminators.parameters(), lr=2e-3, betas=(0.5, 0.999))
    real = torch.rand(4, 3, 32, 32) * 0.5 + 0.5  # bright
    fake = torch.rand(4, 3, 32, 32) * 0.5 - 1.0  # dark
    generated = {"fake_target": fake, "fake_source": fake}
    losses = []
    for _ in range(30):
        out = model.discriminator_losses(real, real, generated)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.2 * losses[0]
    assert out.terms["d_target_real"] > 0.7 and out.terms["d_target_fake"] < 0.3  # LSGAN targets 1 and 0
    assert all(p.grad is None for p in model.generators.parameters())  # D's step never touches G


def test_the_generator_step_leaves_the_discriminators_alone():
    torch.manual_seed(0)
    model = gan.build("cyclegan", **TINY)
    out = model.generator_losses(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1)
    out.total.backward()
    assert all(p.grad is None for p in model.discriminators.parameters())
    assert all(p.requires_grad for p in model.discriminators.parameters())  # unfrozen again for D's step
    assert all(p.grad is not None for p in model.generators.parameters())
    # the objective is the reference's: λ = 10 on each cycle term, 0.5 · λ on each identity term
    assert set(out.terms) == {"gan_target", "gan_source", "cycle_source", "cycle_target", "identity_target",
                              "identity_source"}
    assert out.total.item() == pytest.approx(sum(v.item() for v in out.terms.values()), rel=1e-5)


def test_a_cyclegan_overfits_a_tiny_two_domain_set_until_the_cycle_closes():
    torch.set_num_threads(1)
    photos = torch.stack([synthetic_photo(i, 32) for i in range(2)])
    stripes = torch.stack([synthetic_artwork(i, "stripes", 32) for i in range(2)])
    trainer = Trainer(paper_config("cyclegan", model_params={**TINY, "pool_size": 0}, steps=200, lr=2e-3,
                                   lr_schedule="constant", precision="fp32"), device="cpu")

    def cycle_error() -> float:
        back = trainer.model.translate(trainer.model.translate(photos, "art"), "photo")
        return (back - photos).abs().mean().item()

    before = cycle_error()
    results = trainer.fit([(photos, stripes)] * 200)
    assert cycle_error() < min(0.05, before / 4)
    assert results[-1].terms["discriminator"] < results[0].terms["discriminator"]
    assert {"generator", "discriminator", "d_target_real", "d_target_fake", "cycle_source"} <= set(results[-1].terms)


class _DieAt(TrainingHooks):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, result) -> None:
        if result.step == self.step:
            raise RuntimeError("killed")


def _stream() -> PairStream:
    return PairStream(SyntheticImages("photos", 6, 40), SyntheticImages("artworks", 5, 40), batch_size=2,
                      crop_size=32, seed=0)


def test_resume_after_a_kill_is_bitwise_exact_with_both_optimizers_and_the_history_pools(tmp_path):
    # pool of 2 with batches of 2: full after the first step, so every later step draws from it
    config = paper_config("cyclegan", model_params={**TINY, "pool_size": 2}, steps=6, checkpoint_every=2,
                          precision="fp32")
    straight = Trainer(config, device="cpu")
    straight.fit(_stream())
    with pytest.raises(RuntimeError, match="killed"):
        Trainer(config, device="cpu", hooks=[_DieAt(5)]).fit(_stream(), checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002", "step-000004"]
    resumed = Trainer(config, device="cpu")
    resumed.fit(_stream(), checkpoint_dir=tmp_path)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for side in ("target", "source"):
        assert all(torch.equal(a, b) for a, b in zip(straight.model.pools[side].images,
                                                     resumed.model.pools[side].images))
    for side in ("generator", "discriminator"):
        assert resumed.optimizers[side].state_dict()["state"].keys() == straight.optimizers[side].state_dict()["state"].keys()
        assert resumed.schedulers[side].get_last_lr() == straight.schedulers[side].get_last_lr()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.rand(4, 3, 32, 32, generator=generator), torch.rand(4, 3, 32, 32, generator=generator)


def _first_moments(trainer: AdversarialTrainer) -> dict:
    """Adam's first moment after one step is (1 − β1) × the gradient that step used: under DDP, the averaged one
    (compared instead of weights, whose first Adam update lr · g / (|g| + eps) magnifies rounding)."""
    return {f"{side}.{index}": optimizer.state[p]["exp_avg"].clone()
            for side, optimizer in trainer.optimizers.items()
            for index, p in enumerate(optimizer.param_groups[0]["params"])}


def _ddp_worker(rank: int, world: int, port: int, out: str, model: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        trainer = Trainer(paper_config(model, model_params=TINY_BY_MODEL[model], steps=1, precision="fp32"),
                          device="cpu")
        assert trainer.distributed
        source, target = _global_batch()
        half = source.shape[0] // world
        trainer.train_step(source[rank * half:(rank + 1) * half], target[rank * half:(rank + 1) * half])
        torch.save(_first_moments(trainer), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("model", ["cyclegan", "ugatit"])
def test_one_gan_step_under_ddp_with_two_workers_equals_the_single_process_step(tmp_path, model):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), model), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = Trainer(paper_config(model, model_params=TINY_BY_MODEL[model], steps=1, precision="fp32"), device="cpu")
    single.train_step(*_global_batch())
    expected = _first_moments(single)
    assert expected.keys() == ranks[0].keys() and any(v.abs().sum() > 0 for v in expected.values())
    # float sums in another order differ by rounding; the biases before an instance norm have a gradient of exactly
    # zero in theory (the norm removes them), so theirs is rounding alone: atol from the largest moment
    scale = max(float(v.abs().max()) for v in expected.values())
    for name, value in expected.items():
        for rank in ranks:  # both sides' gradients averaged over the ranks: the global batch's
            torch.testing.assert_close(rank[name], value, rtol=1e-3, atol=1e-5 * scale)


@pytest.mark.parametrize("model, domain, domains", [("cyclegan", "style=dots", ("dots", "photo")),
                                                     ("stargan", "style=dots,waves", ("dots", "waves", "photo"))])
def test_the_cli_trains_a_gan_on_labelled_domains_and_translates_to_one_by_name(tmp_path, capsys, model, domain,
                                                                                domains):
    from stylecore import load
    from stylecore.cli import main
    from stylecore.data import load_image, save_image
    from stylecore.shards import SourceItem, prepare_image, write_shards

    for name in ("photos", "artworks"):
        raw, items = tmp_path / f"raw-{name}", []
        for i in range(12):
            family = ("dots", "waves")[i % 2]
            image = synthetic_photo(i, 40) if name == "photos" else synthetic_artwork(i, family, 40)
            save_image(image, raw / f"{i}.png")
            items.append(SourceItem(f"{i}.png", {} if name == "photos" else {"style": family}))
        write_shards((prepare_image(raw, item, name, "train", 40, 90, 16, 10**7) for item in items),
                     tmp_path / name, name, maxcount=6)
    run = tmp_path / "run"
    tiny = [flag for key, value in TINY_BY_MODEL[model].items() for flag in ("--model-param", f"{key}={value}")]
    train = ["train", "--model", model, "--domain", domain, "--content", str(tmp_path / "photos"),
             "--style", str(tmp_path / "artworks"), "--steps", "2", "--batch-size", "2", "--size", "32",
             "--output", str(run), "--quiet", *tiny]
    assert main(train) == 0
    out = capsys.readouterr().out
    assert f"domains {' / '.join(domains)}" in out and f"style side style = {' | '.join(domains[:-1])}" in out
    assert "step 2:" in out
    loaded = load(run, device="cpu")
    assert isinstance(loaded, gan.TranslationModel) and loaded.domains == domains

    save_image(synthetic_photo(99, 36), tmp_path / "content" / "p.png")
    stylize = ["stylize", "--model", str(run), "--content", str(tmp_path / "content"), "--output", str(tmp_path / "out"),
               "--suffix", ".png", "--quiet"]
    assert main([*stylize, "--domain", "dots"]) == 0
    translated = load_image(tmp_path / "out" / "p.png")
    assert translated.shape == (3, 36, 36)
    expected = loaded.translate(load_image(tmp_path / "content" / "p.png")[None], "dots")[0]
    assert (translated - expected).abs().max() <= 0.5 / 255 + 1e-6  # the written file is the model's translation

    capsys.readouterr()
    assert main([*stylize, "--domain", "cubism", "--overwrite"]) == 2
    assert f"unknown domain 'cubism'; this model translates to {', '.join(domains)}" in capsys.readouterr().err
    assert main([*stylize, "--style", str(tmp_path / "content" / "p.png")]) == 2
    assert f"GAN translation model: give --domain (one of {', '.join(domains)})" in capsys.readouterr().err
    assert main([*train[:4], "style=cubism", *train[5:]]) == 2
    assert "no sample of" in capsys.readouterr().err
    assert main([*train, "--weights", "random:0"]) == 2
    assert f"{model} has none" in capsys.readouterr().err
    assert main(["list"]) == 0 and "  cyclegan " in capsys.readouterr().out


# -- U-GAT-IT ---------------------------------------------------------------------------------------------


def test_ugatit_parameter_counts_equal_the_official_networks():
    from stylecore.gan.ugatit import AttentionDiscriminator, AttentionGenerator

    # znxlwm/UGATIT-pytorch networks.py at its defaults (ch 64, n_res 4, img_size 256; discriminators built with
    # n_layers 7 and 5 whatever --n_dis says), counted from the layer list: the light generator 10,589,888, the
    # full one 278,959,808 (its first MLP layer alone 64² · 256 × 256 = 268,435,456); discriminators 53,130,176
    # and 3,290,560
    with torch.device("meta"):
        assert _count(AttentionGenerator(light=True)) == 10_589_888
        assert _count(AttentionGenerator(light=False)) == 278_959_808
        assert _count(AttentionDiscriminator(64, 7)) == 53_130_176
        assert _count(AttentionDiscriminator(64, 5)) == 3_290_560
        assert _count(gan.build("ugatit")) == 2 * 10_589_888 + 2 * (53_130_176 + 3_290_560)


def test_layer_instance_norm_mixes_instance_and_layer_statistics_by_rho():
    from stylecore.gan.ugatit import LayerInstanceNorm

    x = torch.randn(2, 4, 6, 5) * 3 + 1
    norm = LayerInstanceNorm(4, adaptive=True)
    gamma, beta = torch.ones(2, 4), torch.zeros(2, 4)
    norm.rho.data.fill_(1.0)  # instance norm: every channel of every image standardised (unbiased variance)
    out = norm(x, gamma, beta)
    torch.testing.assert_close(out.mean((2, 3)), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var((2, 3)), torch.ones(2, 4), atol=1e-3, rtol=0)
    norm.rho.data.fill_(0.0)  # layer norm: every image standardised as a whole, channels keep their offsets
    out = norm(x, gamma, beta)
    torch.testing.assert_close(out.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    assert out.mean((2, 3)).std() > 0.05
    # AdaLIN's γ and β are per image and channel
    scaled = norm(x, torch.full((2, 4), 2.0), torch.arange(8.0).reshape(2, 4))
    torch.testing.assert_close(scaled, 2 * out + torch.arange(8.0).reshape(2, 4, 1, 1))
    assert LayerInstanceNorm(4, adaptive=False).rho.abs().sum() == 0  # ILN starts as layer norm (the reference's)


def test_a_ugatit_step_updates_d_first_then_g_against_the_new_d_and_clips_rho():
    import copy

    torch.manual_seed(0)
    trainer = Trainer(paper_config("ugatit", model_params=UGATIT_TINY, steps=1, precision="fp32"), device="cpu")
    for module in trainer.model.generators.modules():  # out of range, so the clip shows
        if hasattr(module, "rho"):
            module.rho.data.fill_(1.5)
    reference = copy.deepcopy(trainer.model)
    source, target = _global_batch()
    result = trainer.train_step(source, target)
    # the reference's order by hand, with its optimisers: D on the current generators' fakes, then G
    # fused, as the trainer's: Adam's first step is lr·sign(g + wd·p), so the last-bit difference between Adam's
    # kernels flips the sign of near-zero entries; the order of the updates is what this test is about
    adam = dict(betas=(0.5, 0.999), weight_decay=1e-4, lr=1e-4, fused=True)
    d_optimizer = torch.optim.Adam(reference.discriminators.parameters(), **adam)
    g_optimizer = torch.optim.Adam(reference.generators.parameters(), **adam)
    signed = source * 2 - 1, target * 2 - 1
    reference.discriminator_losses(*signed, reference.generated_without_grad(*signed)).total.backward()
    d_optimizer.step()
    reference.generator_losses(*signed).total.backward()
    g_optimizer.step()
    for key, value in reference.state_dict().items():
        if "rho" in key:
            assert trainer.model.state_dict()[key].max() == 1.0  # clipped to [0, 1] after the G update
            continue
        torch.testing.assert_close(trainer.model.state_dict()[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert {"cam_target", "cam_source", "gan_target", "identity_source", "d_target_global", "d_source_local",
            "generator", "discriminator"} <= set(result.terms)


def test_ugatit_translates_any_size_light_and_the_full_model_at_its_size():
    torch.manual_seed(0)
    light = gan.build("ugatit", target="ukiyoe", **UGATIT_TINY).eval()
    assert light.translate(torch.rand(1, 3, 36, 50), "ukiyoe").shape == (1, 3, 36, 50)
    full = gan.build("ugatit", target="ukiyoe", light=False, image_size=32, **UGATIT_TINY).eval()
    assert full.translate(torch.rand(1, 3, 36, 50), "ukiyoe").shape == (1, 3, 36, 50)  # resized to 32² and back
    with pytest.raises(ValueError, match="takes 32² images only"):
        full.generators["to_target"](torch.rand(1, 3, 64, 64))


# -- StarGAN ----------------------------------------------------------------------------------------------

FAMILIES = ["dots", "waves"]


def _labelled_batch(seed: int = 0, size: int = 32) -> dict:
    """Two photos and one artwork of each family, with the labels a shard stream gives them."""
    return {"content": torch.stack([synthetic_photo(seed + i, size) for i in range(2)]),
            "style": torch.stack([synthetic_artwork(seed + i, family, size) for i, family in enumerate(FAMILIES)]),
            "style_labels": [{"style": family} for family in FAMILIES]}


def test_stargan_parameter_counts_equal_the_official_networks():
    from stylecore.gan.stargan import ClassifyingDiscriminator, ConditionalGenerator

    # yunjey/stargan model.py at its defaults (c_dim 5, g/d_conv_dim 64, g/d_repeat_num 6, image_size 128),
    # counted from the layer list: G 8,430,528, D 44,762,048; here 5 domains = the photos and 4 artwork domains
    with torch.device("meta"):
        assert _count(ConditionalGenerator(5)) == 8_430_528
        assert _count(ClassifyingDiscriminator(5)) == 44_762_048
        model = gan.build("stargan", domains=["a", "b", "c", "d"])
        assert _count(model) == 8_430_528 + 44_762_048 and model.domains == ("a", "b", "c", "d", "photo")


def test_stargan_reads_each_style_sample_domain_from_its_label_and_names_the_known_ones():
    model = gan.build("stargan", domains=FAMILIES, **STARGAN_TINY)
    assert model.batch_domains(2, [{"style": "waves"}, {"style": "dots", "artist": "x"}]).tolist() == [0, 0, 2, 1]
    with pytest.raises(ValueError, match=r"style = 'checks', which is not one of its domains dots, waves"):
        model.batch_domains(2, [{"style": "checks"}])
    with pytest.raises(ValueError, match="need each sample's 'style' label"):
        model.batch_domains(2, None)
    with pytest.raises(ValueError, match="distinct domain names"):
        gan.build("stargan", domains=["photo"])


def test_the_stargan_discriminator_learns_to_classify_the_domains():
    torch.manual_seed(0)
    model = gan.build("stargan", domains=FAMILIES, **STARGAN_TINY)
    optimizer = torch.optim.Adam(model.discriminators.parameters(), lr=1e-3, betas=(0.5, 0.999))
    batch = _labelled_batch()
    source, target = batch["content"] * 2 - 1, batch["style"] * 2 - 1
    domains = model.batch_domains(2, batch["style_labels"])
    for _ in range(40):
        out = model.discriminator_losses(source, target, model.generated_without_grad(source, target, domains),
                                         domains)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    assert out.terms["d_accuracy"] == 1.0 and out.terms["d_classification"] < 0.2
    assert all(p.grad is None for p in model.generators.parameters())


def test_stargan_trains_every_fifth_step_on_g_and_resumes_bitwise_with_its_target_draws(tmp_path):
    from stylecore.data import Batch

    batch = _labelled_batch()
    data = [Batch(batch["content"], batch["style"], ["c0", "c1"], ["s0", "s1"], batch["style_labels"])] * 10
    config = paper_config("stargan", model_params={**STARGAN_TINY, "domains": FAMILIES}, steps=10,
                          checkpoint_every=5, precision="fp32")
    straight = Trainer(config, device="cpu")
    results = straight.fit(data)
    assert [("generator" in r.terms) for r in results] == [False] * 4 + [True] + [False] * 4 + [True]  # n_critic 5
    with pytest.raises(RuntimeError, match="killed"):
        Trainer(config, device="cpu", hooks=[_DieAt(7)]).fit(data, checkpoint_dir=tmp_path)
    resumed = Trainer(config, device="cpu")
    resumed.fit(data, checkpoint_dir=tmp_path)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def _stargan_ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        trainer = Trainer(paper_config("stargan", model_params={**STARGAN_TINY, "domains": FAMILIES}, steps=1,
                                       n_critic=1, precision="fp32"), device="cpu")
        batch = _labelled_batch(seed=rank)  # each rank its own images and its own target draws
        trainer.train_step(batch["content"], batch["style"], style_labels=batch["style_labels"])
        torch.save(trainer.model.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_stargan_under_ddp_averages_both_sides_gradient_penalty_included(tmp_path):
    mp.spawn(_stargan_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    initial = gan.build("stargan", domains=FAMILIES, **STARGAN_TINY).state_dict()
    for key, value in ranks[0].items():  # different data per rank, the same weights after the step: synchronised
        torch.testing.assert_close(ranks[1][key], value, rtol=0, atol=1e-6, msg=key)
    assert any(not torch.equal(value, initial[key]) for key, value in ranks[0].items() if "generator" in key)
    assert any(not torch.equal(value, initial[key]) for key, value in ranks[0].items() if "discriminator" in key)


# -- every GAN model ---------------------------------------------------------------------------------------


class _Grids(TrainingHooks):
    def __init__(self) -> None:
        self.grids = []

    def on_images(self, trainer, step, grid) -> None:
        self.grids.append(grid)


@pytest.mark.parametrize("model", ["cyclegan", "ugatit", "stargan"])
def test_every_gan_trains_in_bf16_draws_its_sample_grid_and_pickles_for_mlflow(model):
    import io

    from stylecore.export import DomainTranslator, unwrap

    torch.manual_seed(0)
    grids = _Grids()
    params = {**TINY_BY_MODEL[model], **({"domains": FAMILIES} if model == "stargan" else {})}
    trainer = Trainer(paper_config(model, model_params=params, steps=2, sample_every=1, precision="bf16"),
                      device="cpu", hooks=[grids])
    batch = _labelled_batch()
    result = trainer.train_step(batch["content"], batch["style"], style_labels=batch["style_labels"])
    assert all(torch.isfinite(torch.tensor(v)) for v in result.terms.values())
    assert len(grids.grids) == 1 and grids.grids[0].dtype == torch.float32 and grids.grids[0].shape[0] == 3
    # MLflow's PyTorch flavour pickles the module (spectral norm's parametrizations pickle only via state_dict):
    # the translator bakes them in and translates exactly as the model does
    translator = DomainTranslator(trainer.model.eval())
    buffer = io.BytesIO()
    torch.save(translator, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)  # our own object, in memory
    photos = batch["content"]
    domain = trainer.model.domains[0]
    torch.testing.assert_close(restored(photos, domain), trainer.model.translate(photos, domain), rtol=1e-4, atol=1e-5)
    assert unwrap(restored) is restored.model
