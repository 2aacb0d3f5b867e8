"""The captured step (step_capture.py) as far as a CPU can check it: the switch's resolution, the device-side
input conversion, the replay of DiffAugment's draws from static buffers, the 'static' mode (the capture's body
run eagerly) against the plain step bit for bit, and Adam's capturable flag across checkpoints. The capture
itself needs a GPU: scripts/gpu_check.py."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fakefacegen.augment import diff_augment
from fakefacegen.checkpoint import list_checkpoints, load_checkpoint
from fakefacegen.config import ConfigError, make_config
from fakefacegen.data import StepBatchSampler, to_model_input
from fakefacegen.gan_step import GANStep, PlainStep
from fakefacegen.runtime import choose_fast_path, resolve_cuda_graphs
from fakefacegen.step_capture import CapturedStep, Draws, _Recorder, model_input, set_capturable
from fakefacegen.train import Trainer

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


# ---- the switch ------------------------------------------------------------------------------------
def test_auto_is_on_for_one_cuda_process_only():
    assert resolve_cuda_graphs("auto", CUDA) == "on"
    assert resolve_cuda_graphs("auto", CPU) == "off"
    assert resolve_cuda_graphs("auto", MPS) == "off"
    assert resolve_cuda_graphs("auto", CUDA, grad_scaler=True) == "off"
    assert resolve_cuda_graphs("auto", CUDA, processes=2) == "off"
    assert resolve_cuda_graphs("auto", CUDA, compiled=True) == "off"
    for setting in ("off", "static"):
        assert resolve_cuda_graphs(setting, CPU) == setting


@pytest.mark.parametrize(
    ("device", "kw", "why"),
    [
        (CPU, {}, "it needs a CUDA device and this run is on cpu"),
        (MPS, {}, "it needs a CUDA device and this run is on mps"),
        (CUDA, {"grad_scaler": True}, "fp16's gradient scaler syncs with the host in every step"),
        (CUDA, {"processes": 4}, "it is for one process and this run has 4"),
        (CUDA, {"compiled": True}, "train.compile=true makes its own graphs"),
    ],
)
def test_on_where_it_cannot_work_is_a_one_line_error(device, kw, why):
    with pytest.raises(ValueError) as e:
        resolve_cuda_graphs("on", device, **kw)
    assert str(e.value).startswith(f"train.cuda_graphs=on cannot be used here: {why}")
    assert str(e.value).endswith("; use auto or off") and "\n" not in str(e.value)


def test_the_cpu_fast_path_says_off():
    fast = choose_fast_path(CPU, "fp32", "auto", torch.get_num_threads(), "auto", "auto")
    assert fast.cuda_graphs == "off" and "CUDA graphs" not in fast.describe()
    fast = choose_fast_path(CPU, "fp32", "auto", torch.get_num_threads(), "auto", "static")
    assert fast.cuda_graphs == "static" and fast.describe().endswith("; CUDA graphs static")


def test_config_field_round_trips_and_is_checked():
    for value in ("auto", "on", "off", "static"):
        cfg = make_config("debug", [f"train.cuda_graphs={value}"])  # YAML reads bare on/off as booleans
        assert cfg.train.cuda_graphs == value
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))).train.cuda_graphs == value
    assert make_config("debug").train.cuda_graphs == "auto"
    with pytest.raises(ConfigError) as e:
        make_config("debug", ["train.cuda_graphs=sometimes"])
    assert str(e.value) == "train.cuda_graphs must be one of auto, on, off, static; got 'sometimes'"


def test_on_with_a_cpu_device_fails_before_a_run_folder(dataset32, tmp_path):
    cfg = make_config("debug", ["train.cuda_graphs=on"], data=str(dataset32))
    with pytest.raises(ValueError, match=r"^train\.cuda_graphs=on cannot be used here: it needs a CUDA device"):
        Trainer(cfg, outdir=tmp_path / "runs", device="cpu", progress=False)
    assert not (tmp_path / "runs").exists()


def test_capture_refuses_a_cpu_step():
    plain = PlainStep(None, device=CPU, channels_last=False, augment="", rows=(0, 1), d_net=None, g_net=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, not cpu"):
        CapturedStep(plain, capture=True)


# ---- the inputs inside the graph ---------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=6), st.booleans(), st.integers(0, 2**16))
def test_model_input_is_to_model_input_with_a_device_mask(flips, channels_last, seed):
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (len(flips), 8, 8, 3), generator=g, dtype=torch.uint8)
    flip = torch.tensor(flips)
    want = to_model_input(u8, device=CPU, channels_last=channels_last, flip=flip)
    got = model_input(u8, flip, channels_last)
    assert torch.equal(got, want) and got.stride() == want.stride()


POLICIES = ["color", "translation", "cutout"]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(POLICIES), min_size=1, max_size=3, unique=True),
    st.integers(1, 5),
    st.integers(0, 3),
    st.integers(0, 2**31),
)
def test_replayed_draws_augment_as_the_generator_does(names, n, first, seed):
    """Three augmentations (D real, D fake, G fake) from one generator, then the same from static buffers
    filled with the host's draws: equal values."""
    policy, rows = ",".join(names), (first, first + n + 2)
    xs = [torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed + i)) for i in range(3)]
    rng = torch.Generator().manual_seed(seed)
    with _Recorder(rng) as rec:
        want = [diff_augment(x, policy, rng, rows=rows) for x in xs]
    draws = Draws(rec.draws, CPU)
    for dt, values in draws.host_values(torch.Generator().manual_seed(seed)).items():
        draws.flat[dt].copy_(values)
    replayer = draws.replaying()
    with replayer:
        got = [diff_augment(x, policy, draws.source, rows=rows) for x in xs]
    assert replayer.cursor == len(rec.draws) > 0
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_a_draw_the_eager_steps_did_not_make_is_refused():
    rng = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 3, 8, 8)
    with _Recorder(rng) as rec:
        diff_augment(x, "color", rng)
    draws = Draws(rec.draws, CPU)
    with pytest.raises(
        RuntimeError, match=r"the step's draw 1 is randint\(-1, 2, \(2, 1, 1\)\), its eager steps drew rand"
    ):
        with draws.replaying():
            diff_augment(x, "translation", draws.source)


# ---- the captured step's body, run eagerly ('static') -----------------------------------------------
SWITCHES = ["train.augment=color,translation,cutout", "train.r1_gamma=0.1", "train.r2_gamma=0.1", "train.r1_every=3"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "family",
    [["model.arch=tutorial", "train.ema=0.9", "model.spectral_norm=true"], ["model.arch=style", "model.max_width=16"]],
    ids=["dcgan", "style"],
)
def test_static_mode_trains_as_the_plain_step_bit_for_bit(dataset32, tmp_path, family):
    torch.set_num_threads(1)
    runs, trainers = {}, {}
    for mode in ("off", "static"):
        cfg = make_config("debug", family + SWITCHES + [f"train.cuda_graphs={mode}"], data=str(dataset32))
        trainers[mode] = Trainer(cfg, outdir=tmp_path / mode, progress=False)
        runs[mode] = trainers[mode].run()
    static = trainers["static"].run_step
    assert isinstance(static, CapturedStep) and isinstance(trainers["off"].run_step, PlainStep)
    # both kinds of step ran from the buffers (8 steps, regularised every 3rd), with their draws replayed
    assert all(k.draws is not None and len(k.draws.draws) == 21 for k in static.kinds.values())
    a, b = (load_checkpoint(list_checkpoints(runs[m])[-1]) for m in ("off", "static"))
    for key in ("G", "D", "G_ema"):
        for name in a[key] or {}:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for key in ("opt_G", "opt_D"):
        assert all(
            torch.equal(a[key]["state"][i]["exp_avg_sq"], b[key]["state"][i]["exp_avg_sq"]) for i in a[key]["state"]
        )
    logs = [[json.loads(line) for line in (runs[m] / "log.jsonl").read_text().splitlines()] for m in ("off", "static")]
    fields = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "r2")
    assert [[r[f] for f in fields] for r in logs[0]] == [[r[f] for f in fields] for r in logs[1]]
    assert len(logs[0]) == 8


def _tiny_trainer(dataset32, tmp_path, mode="static", steps=4):
    cfg = make_config("debug", SWITCHES + [f"train.steps={steps}", f"train.cuda_graphs={mode}"], data=str(dataset32))
    return Trainer(cfg, outdir=tmp_path, progress=False)


@pytest.mark.slow
def test_reset_warms_up_again_and_a_changed_batch_is_refused(dataset32, tmp_path):
    torch.set_num_threads(1)
    tr = _tiny_trainer(dataset32, tmp_path)
    tr.run()
    step = tr.run_step
    assert isinstance(step, CapturedStep) and step.plain is tr.plain_step and tr.plain_step.rows == (0, 8)
    assert isinstance(tr.plain_step.gan_step, GANStep)
    assert step.kinds[False].eager_steps == 1 and step.u8 is not None
    step.reset()
    assert step.kinds[False].eager_steps == 0 and step.kinds[False].draws is None and step.u8 is None
    sampler = StepBatchSampler(len(tr.dataset), tr.local_batch, seed=0)
    step(tr._step_inputs(sampler, 1))  # eager again: the warm-up that learns the draws
    assert step.kinds[False].eager_steps == 1 and step.u8 is None
    stats = step(tr._step_inputs(sampler, 2))  # from the static buffers
    assert step.u8 is not None and stats.shape == (7,) and torch.isfinite(stats).all()
    inputs = tr._step_inputs(sampler, 4)
    inputs.batch = inputs.batch[:4]
    with pytest.raises(
        RuntimeError, match=r"the step's u8 has shape \(4, 32, 32, 3\), its static buffer \(8, 32, 32, 3\)"
    ):
        step(inputs)
    tr.lock.release()


@pytest.mark.slow
def test_a_checkpoint_written_with_capturable_adam_resumes_on_cpu_exactly(dataset32, tmp_path):
    """A GPU run with graphs writes Adam's groups with capturable=True; a CPU resume must clear it (CPU Adam
    refuses capturable) and go on as the uninterrupted run."""
    torch.set_num_threads(1)
    over = ["train.steps=4", "train.ckpt_every=2", "train.augment=color", "train.r1_gamma=0.1", "train.r1_every=2"]
    cfg = make_config("debug", over, data=str(dataset32))
    full = Trainer(cfg, outdir=tmp_path / "a", progress=False).run()
    part = Trainer(cfg, outdir=tmp_path / "b", progress=False, stop_after=2).run()
    ck = list_checkpoints(part)[-1]
    state = load_checkpoint(ck)
    for key in ("opt_G", "opt_D"):
        for group in state[key]["param_groups"]:
            group["capturable"] = True
    torch.save(state, ck)
    resumed = Trainer(resume=part, progress=False)
    assert all(g["capturable"] is False for opt in (resumed.opt_g, resumed.opt_d) for g in opt.param_groups)
    resumed.run()
    a, b = load_checkpoint(list_checkpoints(full)[-1]), load_checkpoint(list_checkpoints(part)[-1])
    assert a["step"] == b["step"] == 4
    for key in ("G", "D"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"


def test_set_capturable_moves_adams_step_count():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], foreach=True)
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["capturable"] = True  # as a checkpoint of a GPU run with graphs loads
    set_capturable(opt, False)
    assert opt.param_groups[0]["capturable"] is False and opt.state[p]["step"].device.type == "cpu"
    opt.step()  # capturable on a CPU parameter would raise
    assert float(opt.state[p]["step"]) == 2.0
    sgd = torch.optim.SGD([p], lr=0.1)
    set_capturable(sgd, True)  # nothing to set
    assert "capturable" not in sgd.param_groups[0]
