"""Photos projected into the model for the page (``POST /api/project``).

The upload is read into memory (at most MAX_UPLOAD_BYTES, within UPLOAD_SECONDS), checked from its
header (at most MAX_PHOTO_PIXELS) and cropped and resized as ``prepare`` and ``fakefacegen project``
do, then projected by :func:`fakefacegen.project.project` in the render lane (it counts against
the same cost budget as walks). Nothing of the photo is kept: a job holds the latent, the
projection's PNG and its distances, in memory, until MAX_JOBS newer ones push it out. The photo
is never written to disk. Bad photos are one-line 4xx errors: 413 for too many bytes or pixels,
400 for anything else (not an image, corrupt, tiny, grayscale, no face found)."""

from __future__ import annotations

import asyncio
import io
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..generate import LoadedGenerator
from .lanes import Costs, Lane
from .params import MAX_PHOTO_PIXELS, MAX_UPLOAD_BYTES, PROJECT_STEPS_RANGE, BadRequest, PhotoId
from .pictures import encode_png

UPLOAD_SECONDS = 30.0  # a client that sends its photo slower than this is cut off (408)
MAX_UPLOADS = 4  # uploads read and decoded at the same time (each holds up to 16 MiB + its pixels)
MAX_JOBS = 32
CANDIDATES = 8  # seeded starting latents (the command line's default is 32; the page wants speed)


class TooLarge(HTTPException):
    def __init__(self, message: str):
        super().__init__(413, message)


@dataclass
class Job:
    """One projection: its state ('queued', 'running', 'done', 'failed') and, when done, its result."""

    id: str
    steps: int
    client: str
    state: str = "queued"
    step: int = 0
    error: str | None = None
    latent: np.ndarray | None = None
    png: bytes | None = None
    pixel_rms: float | None = None
    perceptual: float | None = None
    seconds: float | None = None
    created: float = field(default_factory=time.monotonic)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "step": self.step,
            "steps": self.steps,
            "error": self.error,
            "pixel_rms": self.pixel_rms,
            "perceptual": self.perceptual,
            "seconds": self.seconds,
        }


async def read_upload(request: Request, limit: int = MAX_UPLOAD_BYTES, seconds: float | None = None) -> bytes:
    """The request body, at most ``limit`` bytes (413) and within ``seconds`` (408; default UPLOAD_SECONDS)."""
    seconds = UPLOAD_SECONDS if seconds is None else seconds
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(f"Content-Length must be a number of bytes, got {declared[:40]!r}")
        if int(declared) > limit:
            raise TooLarge(f"photo: {int(declared):,} bytes; the limit is {limit:,} (16 MiB)")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"photo: more than {limit:,} bytes; the limit is {limit:,} (16 MiB)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), seconds)
    except asyncio.TimeoutError:
        raise HTTPException(408, f"photo: the upload took more than {seconds:g} s; send it again") from None
    return b"".join(chunks)


def decode_photo(data: bytes, size: int, face_check: bool) -> np.ndarray:
    """An uploaded photo as a uint8 (size, size, 3) face crop, as ``fakefacegen project`` makes one from
    a file (:func:`fakefacegen.project.load_photo`), or a one-line 400/413."""
    from PIL import Image

    from ..prepare.decode import ACCEPTED_FORMATS
    from ..project import ProjectError, check_face, decode_photo

    if not data:
        raise BadRequest("photo: the upload is empty; send a JPEG, PNG or WebP photo as the request body")
    with warnings.catch_warnings():  # the header alone: the pixel count before anything is decoded
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            w, h = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS).size
        except Image.DecompressionBombError:  # Pillow's own guard: over twice its MAX_IMAGE_PIXELS
            raise TooLarge(f"photo: far more than {MAX_PHOTO_PIXELS:,} pixels, the limit") from None
        except Exception:  # decode_image below names what is wrong with it
            w, h = 0, 0
    if w * h > MAX_PHOTO_PIXELS:
        raise TooLarge(f"photo: {w}x{h} = {w * h:,} pixels; the limit is {MAX_PHOTO_PIXELS:,}")
    try:
        arr = decode_photo(data, size, "photo", MAX_PHOTO_PIXELS)
    except ProjectError as e:
        raise BadRequest(str(e)) from None
    if face_check:
        try:
            check_face(arr, "upload")
        except ProjectError as e:
            raise BadRequest(str(e)) from None
    return arr


def inception_if_installed() -> str | None:
    """The verified Inception weights' file when they are on this machine (never downloads)."""
    from ..metrics.inception import InceptionWeightsError, resolve_inception_path

    try:
        return str(resolve_inception_path(download=False))
    except (InceptionWeightsError, OSError):
        return None


class Projections:
    """The projections of this server: decode uploads, run :func:`fakefacegen.project.project` in
    ``lane``, keep the results (latent + PNG) of the last MAX_JOBS in memory."""

    def __init__(
        self,
        G: LoadedGenerator,
        lane: Lane,
        costs: Costs,
        *,
        perceptual: bool | None = None,
        face_check: bool = True,
        candidates: int = CANDIDATES,
        max_jobs: int = MAX_JOBS,
    ):
        self.G, self.lane, self.costs = G, lane, costs
        self.inception = inception_if_installed() if perceptual is not False else None
        self.perceptual = self.inception is not None
        self.face_check = face_check
        self.candidates, self.max_jobs = candidates, max_jobs
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.uploads = 0
        self._decode = threading.Semaphore(2)

    def cost_ms(self, steps: int) -> float:
        return self.costs.projection(steps, self.candidates, self.perceptual)

    def max_steps(self) -> int:
        """The most steps one projection may have on this server (its cost within one request's budget)."""
        per_step = self.cost_ms(1) - self.cost_ms(0)
        most = int((self.lane.max_request_ms - self.cost_ms(0)) // per_step)
        return max(PROJECT_STEPS_RANGE[0], min(PROJECT_STEPS_RANGE[1], most))

    def check_cost(self, steps: int) -> float:
        """The estimated cost of a projection of ``steps``; a 400 when one request may not cost that much."""
        cost = self.cost_ms(steps)
        if cost > self.lane.max_request_ms:
            raise BadRequest(
                f"steps={steps} would take about {cost / 1000:.0f} s of this server's time; the limit per request "
                f"is {self.lane.max_request_ms / 1000:.0f} s (at most about {self.max_steps()} steps here)"
            )
        return cost

    async def submit(self, request: Request, steps: int, client: str) -> Job:
        """Read, check and decode the upload (4xx on a bad photo), then queue its projection (503 when full)."""
        cost = self.check_cost(steps)
        if self.uploads >= MAX_UPLOADS:
            raise HTTPException(
                503, "server busy: other photos are being uploaded; retry in a moment", {"Retry-After": "2"}
            )
        self.lane.check(cost, client)  # no room: say so before the upload is read
        self.uploads += 1
        try:
            data = await read_upload(request)
            face = await asyncio.get_running_loop().run_in_executor(None, self._decode_bounded, data)
            del data
        finally:
            self.uploads -= 1
        self._make_room()
        job = Job(secrets.token_hex(8), steps, client)
        fut = self.lane.submit(lambda: self._run(job, face), cost, client)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures are kept on the job
        self.jobs[job.id] = job
        return job

    def _decode_bounded(self, data: bytes) -> np.ndarray:
        with self._decode:
            return decode_photo(data, self.G.resolution, self.face_check)

    def _make_room(self) -> None:
        while len(self.jobs) >= self.max_jobs:
            old = next((k for k, j in self.jobs.items() if j.state in ("done", "failed")), None)
            if old is None:
                raise HTTPException(503, "server busy: too many photos in progress; retry later", {"Retry-After": "10"})
            del self.jobs[old]

    def _run(self, job: Job, face: np.ndarray) -> None:
        """On the lane's thread: project ``face``, keep the result on ``job``."""
        from ..project import ProjectError, project

        job.state = "running"
        t0 = time.perf_counter()
        try:
            res = project(
                self.G,
                np.array(face[None]),  # writable: torch.from_numpy wants it
                steps=job.steps,
                candidates=self.candidates,
                perceptual_weight=1.0 if self.perceptual else 0.0,
                inception=self.inception,
                seed=0,
                progress=lambda step, _loss: setattr(job, "step", step),
            )
            job.latent = res.latents[0]
            job.png = encode_png(res.images[0])
            job.pixel_rms = float(res.pixel_rms[0])
            job.perceptual = None if res.perceptual is None else float(res.perceptual[0])
            job.state = "done"
        except ProjectError as e:
            job.error, job.state = str(e).splitlines()[0], "failed"
        except Exception as e:  # the page gets one line, never a path or a trace
            job.error, job.state = f"projection failed: {type(e).__name__}", "failed"
        finally:
            job.seconds = round(time.perf_counter() - t0, 2)

    def get(self, pid: PhotoId) -> Job:
        job = self.jobs.get(pid.id)
        if job is None:
            raise HTTPException(404, f"no projection {pid.id} on this server (it may have been replaced by newer ones)")
        return job

    def latent(self, pid: PhotoId) -> np.ndarray:
        job = self.get(pid)
        if job.latent is None:
            raise HTTPException(
                409,
                f"projection {pid.id} is {job.state}, not done; wait for it" + (f" ({job.error})" if job.error else ""),
            )
        return job.latent
