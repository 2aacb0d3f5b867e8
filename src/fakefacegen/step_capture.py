"""The whole training step as one CUDA graph (``train.cuda_graphs``): captured once, replayed every step.

At 64 px these networks are small enough that a GPU step is bound by kernel launches, not arithmetic
(an H200 ran the plain step at 14,244 img/s, 0.94x a plain fp32 loop; benchmarks/README.md). A graph
replays all the kernels of the D phase, the G phase, both optimiser steps and the step's statistics
with one launch. What a capture needs, and how the step gets it:

* Static inputs. The graph reads fixed device buffers: the uint8 batch, its flip mask, the noise and
  every random number DiffAugment draws. The host fills them each step from the step's own generators:
  the same numbers in the same order as the plain step draws them (:class:`Draws` learns the order from
  the eager steps), so a captured run sees the plain run's batches, flips, noise and augmentations. The
  batch is converted to [-1, 1] inside the graph as ``data.to_model_input`` does (:func:`model_input`).
* Nothing that waits for the host: Adam runs with ``capturable=True`` (its step count on the GPU;
  :func:`set_capturable`), autocast without its weight cache, no GradScaler (fp16 is refused by
  ``runtime.resolve_cuda_graphs``).
* One code path per graph: a step with the lazy R1/R2 penalties differs from one without, so each kind
  of step gets its own graph, captured after ``WARMUP_STEPS`` eager steps of that kind on the capture
  stream (cuDNN's autotuning, the optimisers' state, the order of the draws).
* A graph holds addresses, not tensors: whatever replaces the optimisers' state (a roll-back) must call
  :meth:`CapturedStep.reset`; the next steps then warm up and capture again.

The EMA update and the divergence check stay in the loop, outside the graph, as for the plain step.
Mode 'static' runs the same body eagerly from the static buffers, without capture, on any device: on
CPU it gives the plain step's numbers bit for bit (tests/test_step_capture.py), which is how this file is
tested where there is no GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .augment import diff_augment
from .gan_step import PlainStep, StepInputs, step_stats

WARMUP_STEPS = 3
"""Eager steps of each kind before its capture (cuDNN autotunes a shape on its first call)."""
DRAW_FUNCS: tuple[Callable[..., torch.Tensor], ...] = (torch.rand, torch.randint)
"""How augment.py draws its random numbers (always with ``generator=``)."""


@dataclass(frozen=True)
class Draw:
    """One call that draws random numbers: the function and its arguments but the generator."""

    func: Callable[..., torch.Tensor]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def __call__(self, rng: torch.Generator) -> torch.Tensor:
        return self.func(*self.args, generator=rng, **dict(self.kwargs))

    def __str__(self) -> str:
        return f"{getattr(self.func, '__name__', self.func)}{self.args}"


def _as_draw(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Draw:
    return Draw(func, tuple(args), tuple(sorted((k, v) for k, v in kwargs.items() if k != "generator")))


class _Recorder(TorchFunctionMode):
    """Notes every draw from ``rng`` made while it is active (and makes it)."""

    def __init__(self, rng: torch.Generator | None):
        super().__init__()
        self.rng = rng
        self.draws: list[Draw] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.rng is not None and func in DRAW_FUNCS and kwargs.get("generator") is self.rng:
            self.draws.append(_as_draw(func, args, kwargs))
        return func(*args, **kwargs)


class _Replayer(TorchFunctionMode):
    """Answers each draw from ``source`` with the next static buffer, checking it is the draw it was made for."""

    def __init__(self, source: torch.Generator, draws: list[Draw], buffers: list[torch.Tensor]):
        super().__init__()
        self.source, self.draws, self.buffers, self.cursor = source, draws, buffers, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in DRAW_FUNCS and kwargs.get("generator") is self.source:
            d, i = _as_draw(func, args, kwargs), self.cursor
            if i >= len(self.draws) or d != self.draws[i]:
                expected = self.draws[i] if i < len(self.draws) else "nothing more"
                raise RuntimeError(f"the step's draw {i + 1} is {d}, its eager steps drew {expected}: cannot replay it")
            self.cursor += 1
            return self.buffers[i]
        return func(*args, **kwargs)


class Draws:
    """The random draws of one kind of step, in order, and the device buffers a capture reads them from.

    The host draws them each step from the step's generator (``fill``); inside the step, the augmentation
    gets the buffers in their place (``replaying``). Buffers of one dtype are views of one flat tensor, so
    a step's draws travel to the device in one copy per dtype."""

    def __init__(self, draws: list[Draw], device: torch.device):
        self.draws = draws
        self.source = torch.Generator()  # stands for the step's generator inside the body; never drawn from
        sample = [d(torch.Generator().manual_seed(0)) for d in draws]
        self.dtypes = sorted({s.dtype for s in sample}, key=str)
        self.flat = {
            dt: torch.empty(sum(s.numel() for s in sample if s.dtype == dt), dtype=dt, device=device)
            for dt in self.dtypes
        }
        offsets = dict.fromkeys(self.dtypes, 0)
        self.buffers = []
        for s in sample:
            o = offsets[s.dtype]
            self.buffers.append(self.flat[s.dtype][o : o + s.numel()].view(s.shape))
            offsets[s.dtype] = o + s.numel()

    def host_values(self, rng: torch.Generator | None) -> dict[torch.dtype, torch.Tensor]:
        """This step's draws from ``rng``, one flat host tensor per dtype (what ``flat`` receives)."""
        if not self.draws:
            return {}
        if rng is None:
            raise RuntimeError("the step has random draws to make but no generator to make them from")
        values = [d(rng) for d in self.draws]
        return {dt: torch.cat([v.reshape(-1) for v in values if v.dtype == dt]) for dt in self.dtypes}

    def replaying(self) -> _Replayer:
        return _Replayer(self.source, self.draws, self.buffers)


def model_input(u8: torch.Tensor, flip: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``data.to_model_input`` on a batch already on the device, with the flips as a device mask (no host
    sync: rows whose flag is False are selected unchanged, so the values are the same)."""
    x = torch.where(flip[:, None, None, None], u8.flip(2), u8)
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def set_capturable(opt: torch.optim.Optimizer, on: bool) -> None:
    """Adam's ``capturable`` flag on every group, its step counts moved to the parameters' device (on) or
    to the host (off), where Adam keeps them in each case. SGD has no host state: nothing to do.

    A checkpoint holds the flag of the run that wrote it; this sets the one the resuming run needs."""
    if not isinstance(opt, torch.optim.Adam):
        return
    for group in opt.param_groups:
        group["capturable"] = on
        for p in group["params"]:
            state = opt.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(p.device if on else torch.device("cpu"))
    # The eager warm-up steps before a capture are expected: no "capturable=True ... without graph capture" warning.
    opt._warned_capturable_if_run_uncaptured = on  # type: ignore[attr-defined]


@dataclass
class _Kind:
    """A kind of step (with or without the lazy penalties): its warm-up, draws, graph and outputs."""

    eager_steps: int = 0
    step: int = -1  # a step of this kind (GANStep.regularises reads it)
    draws: Draws | None = None
    graph: Any = None  # torch.cuda.CUDAGraph
    stats: torch.Tensor | None = None
    seen: list[Draw] | None = field(default=None, repr=False)


class CapturedStep:
    """:class:`PlainStep`'s step from static buffers: captured as a CUDA graph (``capture=True``, CUDA only)
    or run eagerly from them (``capture=False``, the 'static' mode). Call it with each step's
    :class:`StepInputs`; it returns the step's statistics, valid until the next call."""

    def __init__(self, plain: PlainStep, *, capture: bool, warmup: int | None = None):
        if capture and plain.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {plain.device}")
        self.plain, self.capture = plain, capture
        self.warmup = (WARMUP_STEPS if capture else 1) if warmup is None else warmup
        self.device = plain.device
        self.stream = torch.cuda.Stream(self.device) if capture else None
        self.kinds = {False: _Kind(), True: _Kind()}
        # The static inputs, shared by both kinds (made at the first upload).
        self.u8: torch.Tensor | None = None
        self.flip: torch.Tensor | None = None
        self.z: torch.Tensor | None = None
        self._pinned: dict[str, torch.Tensor] = {}
        self._copied: Any = None  # CUDA event: the last upload has left the pinned buffers

    @property
    def graphs(self) -> int:
        """How many kinds of step are captured now."""
        return sum(k.graph is not None for k in self.kinds.values())

    def reset(self) -> None:
        """Forget the graphs and buffers (after the optimisers' state was replaced): warm up and capture again."""
        self.kinds = {False: _Kind(), True: _Kind()}
        self.u8 = self.flip = self.z = None
        self._pinned.clear()

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        kind = self.kinds[self.plain.gan_step.regularises(inputs.step)]
        if kind.eager_steps < self.warmup:
            kind.eager_steps += 1
            return self._eager(inputs, kind)
        self._upload(inputs, kind)
        if not self.capture:
            return self._body(kind)
        if kind.graph is None:
            self._capture(kind)
        kind.graph.replay()
        assert kind.stats is not None
        return kind.stats

    # ---- warm-up: the plain step, its draws noted ----------------------------------------------------
    def _eager(self, inputs: StepInputs, kind: _Kind) -> torch.Tensor:
        with _Recorder(inputs.aug_rng) as rec:
            if self.stream is None:
                stats = self.plain(inputs)
            else:  # on the capture stream, as PyTorch's notes on whole-network capture ask
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    stats = self.plain(inputs)
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
        if kind.seen is not None and rec.draws != kind.seen:
            raise RuntimeError("DiffAugment drew different numbers of values in two steps of one kind: cannot capture")
        kind.seen, kind.step = rec.draws, inputs.step
        return stats

    # ---- static buffers ---------------------------------------------------------------------------
    def _upload(self, inputs: StepInputs, kind: _Kind) -> None:
        dev = self.device
        if self.u8 is None:
            self.u8 = torch.empty(inputs.batch.shape, dtype=torch.uint8, device=dev)
            self.flip = torch.zeros(inputs.batch.shape[0], dtype=torch.bool, device=dev)
            self.z = torch.empty(inputs.z.shape, dtype=inputs.z.dtype, device=dev)
        if kind.draws is None:
            kind.draws = Draws(kind.seen or [], dev)
        if self._copied is not None:
            self._copied.synchronize()  # the previous step's copies have left the pinned buffers
        assert self.flip is not None and self.z is not None
        flip = inputs.flip if inputs.flip is not None else torch.zeros(inputs.batch.shape[0], dtype=torch.bool)
        self._put("u8", self.u8, inputs.batch)
        self._put("flip", self.flip, flip)
        self._put("z", self.z, inputs.z)
        for dt, values in kind.draws.host_values(inputs.aug_rng).items():
            self._put(f"draws-{dt}-{id(kind)}", kind.draws.flat[dt], values)
        if dev.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(dev))

    def _put(self, name: str, dst: torch.Tensor, src: torch.Tensor) -> None:
        if dst.shape != src.shape:
            raise RuntimeError(f"the step's {name} has shape {tuple(src.shape)}, its static buffer {tuple(dst.shape)}")
        if dst.device.type != "cuda":
            dst.copy_(src)
            return
        pinned = self._pinned.get(name)
        if pinned is None:
            pinned = self._pinned[name] = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
        pinned.copy_(src)
        dst.copy_(pinned, non_blocking=True)

    # ---- the step itself, from the buffers ------------------------------------------------------------
    def _body(self, kind: _Kind) -> torch.Tensor:
        p = self.plain
        assert self.u8 is not None and self.flip is not None and self.z is not None and kind.draws is not None
        real = model_input(self.u8, self.flip, p.channels_last)
        replayer = kind.draws.replaying()
        source = kind.draws.source

        def augment(x: torch.Tensor) -> torch.Tensor:
            if not p.augment:
                return x
            with replayer:
                return diff_augment(x, p.augment, source, rows=p.rows)

        out = p.gan_step(kind.step, real, self.z, augment)
        if replayer.cursor != len(kind.draws.draws):
            raise RuntimeError(
                f"the step made {replayer.cursor} random draws, its eager steps "
                f"{len(kind.draws.draws)}: cannot replay it"
            )
        return step_stats(out, p.d_net, p.g_net)

    def _capture(self, kind: _Kind) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):  # the capture stream of the warm-up; global error mode
            stats = self._body(kind)
        kind.graph, kind.stats = graph, stats
