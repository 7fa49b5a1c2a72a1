"""Sampling and the public API: which room and camera a sample index gets, and rendering batches of samples."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np

from tasks.preprocess.synthetic.camera import Camera, sample_camera
from tasks.preprocess.synthetic.raycast import trace
from tasks.preprocess.synthetic.rooms import build_room
from tasks.preprocess.synthetic.scene import Scene
from tasks.preprocess.synthetic.sensor import capture
from tasks.preprocess.synthetic.shading import radiance
from tasks.preprocess.synthetic.specs import DOMAINS, DomainSpec

SCENE_STREAM, FRAME_STREAM = 0, 1  # separate seed streams for rooms and for per-frame draws


def _domain_spec(domain: str) -> DomainSpec:
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; valid domains: {sorted(DOMAINS)}")
    return DOMAINS[domain]


def _rng(seed: int, domain: str, stream: int, index: int) -> np.random.Generator:
    """Stable per-(seed, domain, index) generator: crc32 instead of hash(), which is salted per process."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(domain.encode()), stream, index]))


def build_scene(domain: str, seed: int, scene: int) -> Scene:
    """The room shared by all frames of one scene id."""
    return build_room(_domain_spec(domain), _rng(seed, domain, SCENE_STREAM, scene))


def scene_of(spec: DomainSpec, index: np.ndarray | int, scenes: int | None = None) -> np.ndarray | int:
    """The room of sample `index`: runs of frames_per_scene consecutive samples share one room.

    With `scenes`, the runs cycle over that many rooms only, so n samples show at most `scenes` distinct rooms
    (each sample still has its own camera); None, or at least as many rooms as runs, changes nothing.
    """
    if scenes is not None and scenes < 1:
        raise ValueError(f"scenes must be at least 1, got {scenes}")
    run = index // spec.frames_per_scene
    return run if scenes is None else run % scenes


def sample_view(domain: str, index: int, seed: int, height: int, width: int,
                scenes: int | None = None) -> tuple[Scene, Camera]:
    """The room and camera of sample `index`; exposed so tests can check the rendered depth against them."""
    spec = _domain_spec(domain)
    scene = build_scene(domain, seed, scene_of(spec, index, scenes))
    return scene, sample_camera(spec, scene, _rng(seed, domain, FRAME_STREAM, index), height, width)


def _render(spec: DomainSpec, scene: Scene, camera: Camera, rng: np.random.Generator, height: int,
            width: int) -> tuple[np.ndarray, np.ndarray]:
    hits = trace(scene, camera, height, width)
    rgb = capture(spec, radiance(scene, hits, spec.ao_strength), rng, height, width)
    valid = scene.materials.has_depth[hits.material] & (hits.t <= spec.max_depth_m)
    depth = np.where(valid, hits.t, 0.0).astype(np.float32).reshape(height, width)
    return rgb, depth


def render_batch(domain: str, indices: np.ndarray, seed: int, height: int, width: int,
                 scenes: int | None = None) -> dict[str, np.ndarray]:
    """Renders the given sample indices of a domain, drawn from `scenes` distinct rooms if given (scene_of).

    Returns {'rgb': (B,H,W,3) uint8 RGB, 'depth': (B,H,W) float32 metres planar (z) depth with 0 = invalid,
    'intrinsics': (B,4) float32 fx, fy, cx, cy in pixels at (height, width), 'scene': (B,) int64 scene id}.
    Each sample depends only on (domain, seed, index, scenes), so batching never changes the data.
    """
    spec = _domain_spec(domain)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    batch = len(indices)
    out = {
        "rgb": np.empty((batch, height, width, 3), np.uint8),
        "depth": np.empty((batch, height, width), np.float32),
        "intrinsics": np.empty((batch, 4), np.float32),
        "scene": scene_of(spec, indices, scenes),
    }
    rooms: dict[int, Scene] = {}  # consecutive frames usually share a room: build it once per batch
    for b, (index, scene_id) in enumerate(zip(indices.tolist(), out["scene"].tolist(), strict=True)):
        if scene_id not in rooms:
            rooms[scene_id] = build_scene(domain, seed, scene_id)
        rng = _rng(seed, domain, FRAME_STREAM, index)
        camera = sample_camera(spec, rooms[scene_id], rng, height, width)
        out["rgb"][b], out["depth"][b] = _render(spec, rooms[scene_id], camera, rng, height, width)
        out["intrinsics"][b] = camera.intrinsics
    return out


def generate(domain: str, n: int, seed: int, height: int, width: int, batch_size: int = 64,
             scenes: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Streams samples 0..n-1 in order, one render_batch at a time, so memory is bounded by batch_size.

    Arguments are checked here rather than on the first next(), so a bad domain fails where it is named.
    """
    scene_of(_domain_spec(domain), 0, scenes)  # checks scenes
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, n, batch_size):
            yield render_batch(domain, np.arange(start, min(start + batch_size, n)), seed, height, width, scenes)

    return batches()
