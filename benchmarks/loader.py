"""Is data loading ever what a training step waits for? And which shard layout reads fastest for its size?

`loader`: samples/s of the prepared-shard loader exactly as the training stages build it (ShardDataset +
tasks.distributed.batches_at, and the equivalent shards.infinite_batches, with runtime.host.num_workers) against the
samples/s a fine-tuning step consumes (model, batch, loss, augmentation and optimizer of params.yaml). The headroom
loader/step must be >> 1; with num_workers 0 the loader runs inside the training loop, so 1 / (1 + headroom) is the
share of a step spent loading. For scale it also decodes the same frames from PNG and JPEG bytes (cv2.imdecode,
in memory: the file system is left out, so this is the decoders' best case), the alternative to shards.

`shard_format`: the same frames written with every compression (none / lzf / gzip) and chunk_frames (1 / 8):
file size and random-access read speed (the training access pattern), to check params.yaml's layout. Reads are
timed through ShardDataset, and through bare h5py dataset handles opened once (`cached_handles_read_rate`, the
floor of what any reader can do). ShardDataset used to look the datasets up per sample, which cost more than
decompressing a small frame; it now holds them open per process, so the two columns should agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import BenchConfig, bench_device, finetune_step, median_times, ratio, timed

COMPRESSIONS = ("none", "lzf", "gzip")
CHUNK_FRAMES = (1, 8)


def write_shard(path: Path, frames: dict[str, np.ndarray], params: Any, *, compression: str | None = None,
                chunk_frames: int | None = None, split: str = "train") -> Path:
    """A train shard of `frames` written by the pipeline's own writer (defaults: params.yaml's layout)."""
    from tasks.preprocess.shards import write_split

    d = params.data
    n = len(frames["depth"])
    batches = ({k: v[i : i + 64] for k, v in frames.items()} for i in range(0, n, 64))
    write_split(path, batches, n, {"dataset": "bench"}, split=split,
                chunk_frames=chunk_frames or d.chunk_frames, compression=compression or d.compression,
                min_depth=d.min_depth, max_depth=d.max_depth)
    return path


def loader_rate(make: Callable[[], Iterator[Any]], n_batches: int, batch_size: int) -> float:
    """Samples/s of building a batch iterator and pulling `n_batches` from it (worker start-up included)."""

    def pull() -> None:
        batches = make()
        for _ in range(n_batches):
            next(batches)

    return n_batches * batch_size / timed(pull)


def step_rate(params: Any, batch: dict[str, torch.Tensor], repeats: int) -> tuple[float, float | None]:
    """Samples/s of the fine-tuning step of tasks/finetune.py at the params.yaml model, on the training device,
    and the step's peak GPU memory in MB (None on the CPU)."""
    from tasks.checkpoints import build_model

    device = bench_device(params)
    step = finetune_step(params, build_model(params.model.model_dump()), batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rate = len(batch["rgb"]) / median_times({"step": step}, repeats, warmup=1)["step"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return rate, peak


def _encode(frames: dict[str, np.ndarray], ext: str, params: list[int]) -> list[tuple[bytes, bytes]]:
    """(RGB image, 16-bit millimetre depth PNG) bytes per frame: the usual layout of a rendered dataset."""
    out = []
    for rgb, depth in zip(frames["rgb"], frames["depth"], strict=True):
        ok_rgb, rgb_bytes = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        ok_d, depth_bytes = cv2.imencode(".png", np.round(depth * 1000).astype(np.uint16))
        assert ok_rgb and ok_d
        out.append((rgb_bytes.tobytes(), depth_bytes.tobytes()))
    return out


def _decode_sample(rgb_bytes: bytes, depth_bytes: bytes) -> dict[str, torch.Tensor]:
    """One sample decoded into the tensors ShardDataset returns, so both sides do the same amount of work."""
    bgr = cv2.imdecode(np.frombuffer(rgb_bytes, np.uint8), cv2.IMREAD_COLOR)
    depth = cv2.imdecode(np.frombuffer(depth_bytes, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
    rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div_(255.0)
    return {"rgb": rgb, "depth": torch.from_numpy(depth).unsqueeze(0)}


def random_read_rate(path: Path, order: list[int]) -> float:
    """Samples/s of ShardDataset.__getitem__ in a random order, from a freshly opened file (cold HDF5 cache)."""
    from tasks.preprocess.shards import ShardDataset

    data = ShardDataset(path)
    return len(order) / timed(lambda: [data[i] for i in order])


def cached_handles_read_rate(path: Path, order: list[int]) -> float:
    """Like random_read_rate, through bare h5py dataset objects looked up once (no ShardDataset).

    The reference ShardDataset is measured against: before it held its datasets open it looked up `file["rgb"]` and
    `file["depth"]` in every __getitem__, which at small frame sizes cost more than the read (docs/performance.md).
    """
    import h5py

    with h5py.File(path, "r") as f:
        rgb_ds, depth_ds = f["rgb"], f["depth"]

        def read(i: int) -> dict[str, torch.Tensor]:
            rgb = torch.from_numpy(rgb_ds[i]).permute(2, 0, 1).float().div_(255.0)
            return {"rgb": rgb, "depth": torch.from_numpy(depth_ds[i]).unsqueeze(0), "index": torch.tensor(i)}

        return len(order) / timed(lambda: [read(i) for i in order])


def bench_loader(cfg: BenchConfig) -> dict[str, Any]:
    """Loader samples/s vs fine-tuning step samples/s (the headroom), and per-sample shard reads vs decoding."""
    from tasks.distributed import batches_at
    from tasks.preprocess.shards import ShardDataset, infinite_batches

    p = cfg.params
    bs, workers = p.finetune.batch_size, p.runtime.host.num_workers
    frames = cfg.frames()
    shard = write_shard(cfg.workdir / "loader.h5", frames, p)
    n_batches = cfg.size(100, 8)
    data = ShardDataset(shard)
    # The two loader variants alternate, twice each, best kept (the least disturbed by other load).
    rates: dict[str, list[float]] = {"batches_at": [], "infinite_batches": []}
    for _ in range(2):
        rates["batches_at"].append(loader_rate(
            lambda: batches_at(data, bs, p.data.seed, itertools.count(), num_workers=workers), n_batches, bs))
        rates["infinite_batches"].append(loader_rate(
            lambda: infinite_batches(data, bs, p.data.seed, workers), n_batches, bs))
    loader_sps = max(rates["batches_at"])
    batch = next(batches_at(data, bs, p.data.seed, itertools.count(), num_workers=0))
    step_sps, step_gpu_mb = step_rate(p, {"rgb": batch["rgb"], "depth": batch["depth"]}, cfg.size(8, 2))

    # Per-sample decoding vs per-sample shard reads, same frames, same random order, same output tensors.
    n = len(frames["depth"])
    order = np.random.default_rng(p.data.seed).permutation(n).tolist()
    png = _encode(frames, ".png", [])
    jpeg = _encode(frames, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])
    reads: dict[str, list[float]] = {"shard": [], "shard_cached_handles": [], "png": [], "jpeg": []}
    for _ in range(cfg.size(3, 1)):
        reads["shard"].append(random_read_rate(shard, order))
        reads["shard_cached_handles"].append(cached_handles_read_rate(shard, order))
        reads["png"].append(n / timed(lambda: [_decode_sample(*png[i]) for i in order]))
        reads["jpeg"].append(n / timed(lambda: [_decode_sample(*jpeg[i]) for i in order]))
    best = {k: max(v) for k, v in reads.items()}
    return {
        "resolution": [p.data.height, p.data.width], "encoder": p.model.encoder, "batch_size": bs,
        "num_workers": workers, "frames": n, "batches_timed": n_batches,
        "loader_samples_per_s": round(loader_sps, 1),
        "infinite_batches_samples_per_s": round(max(rates["infinite_batches"]), 1),
        "step_samples_per_s": round(step_sps, 2), "step_device": str(bench_device(p)),
        "step_peak_gpu_memory_mb": None if step_gpu_mb is None else round(step_gpu_mb),
        "headroom_loader_over_step": round(ratio(loader_sps, step_sps), 1),
        "loading_share_of_step_with_workers_0": round(1 / (1 + ratio(loader_sps, step_sps)), 4),
        "random_read_samples_per_s": {k: round(v, 1) for k, v in best.items()},
        "bytes_per_frame": {"shard": round(shard.stat().st_size / n),
                            "png": round(sum(len(a) + len(b) for a, b in png) / n),
                            "jpeg": round(sum(len(a) + len(b) for a, b in jpeg) / n)},
        "shard_cached_handles_over_shard": round(ratio(best["shard_cached_handles"], best["shard"]), 2),
        "shard_over_png_decode": round(ratio(best["shard"], best["png"]), 2),
        "shard_over_jpeg_decode": round(ratio(best["shard"], best["jpeg"]), 2),
        "png_decode_over_step": round(ratio(best["png"], step_sps), 1),
        "jpeg_decode_over_step": round(ratio(best["jpeg"], step_sps), 1),
        "note": "decoders read in-memory bytes (no file system); depth as 16-bit mm PNG in both; JPEG quality 95",
    }


def bench_shard_format(cfg: BenchConfig) -> dict[str, Any]:
    """Size, random-read and write speed of every compression x chunk_frames layout, on the same frames."""
    p = cfg.params
    frames = cfg.frames()
    n = len(frames["depth"])
    order = np.random.default_rng(p.data.seed + 1).permutation(n).tolist()
    layouts = [(c, k) for c in COMPRESSIONS for k in CHUNK_FRAMES]
    paths, write_s = {}, {}
    for c, k in layouts:
        path = cfg.workdir / f"shard_{c}_{k}.h5"
        write_s[(c, k)] = timed(lambda path=path, c=c, k=k: write_shard(path, frames, p, compression=c,
                                                                         chunk_frames=k))
        paths[(c, k)] = path
    reads: dict[tuple[str, int], list[float]] = {key: [] for key in layouts}
    cached: dict[tuple[str, int], list[float]] = {key: [] for key in layouts}
    for _ in range(cfg.size(3, 1)):  # rounds over all layouts, so load changes hit every layout alike
        for key in layouts:
            reads[key].append(random_read_rate(paths[key], order))
            cached[key].append(cached_handles_read_rate(paths[key], order))
    rows = []
    for c, k in layouts:
        rows.append({"compression": c, "chunk_frames": k, "bytes": paths[(c, k)].stat().st_size,
                     "bytes_per_frame": round(paths[(c, k)].stat().st_size / n),
                     "random_read_samples_per_s": round(max(reads[(c, k)]), 1),
                     "random_read_cached_handles_per_s": round(max(cached[(c, k)]), 1),
                     "write_frames_per_s": round(n / write_s[(c, k)], 1)})
    default = next(r for r in rows if r["compression"] == p.data.compression
                   and r["chunk_frames"] == p.data.chunk_frames) if p.data.chunk_frames in CHUNK_FRAMES else None
    none_1 = next(r for r in rows if r["compression"] == "none" and r["chunk_frames"] == 1)
    out: dict[str, Any] = {"frames": n, "resolution": [p.data.height, p.data.width], "layouts": rows,
                           "default": {"compression": p.data.compression, "chunk_frames": p.data.chunk_frames}}
    if default is not None:
        out["default_size_over_uncompressed"] = round(ratio(default["bytes"], none_1["bytes"]), 3)
        out["default_read_over_uncompressed"] = round(ratio(default["random_read_samples_per_s"],
                                                            none_1["random_read_samples_per_s"]), 3)
        fastest = max(rows, key=lambda r: r["random_read_samples_per_s"])
        smallest = min(rows, key=lambda r: r["bytes"])
        out["fastest_read"] = f"{fastest['compression']}/{fastest['chunk_frames']}"
        out["smallest"] = f"{smallest['compression']}/{smallest['chunk_frames']}"
    return out
