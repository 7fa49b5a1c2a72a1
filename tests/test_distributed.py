"""Training beyond one process (tasks/distributed.py): 2 CPU ranks with gloo, launched by the real stage functions.

The fast tests pin down the data-stream layout without starting processes; the slow ones go through torchrun exactly
as `metadepth stage meta_init meta` does with runtime.numerics.nproc_per_node 2.
"""

from __future__ import annotations

import itertools
import math
import shutil
import threading
import time

import pandas as pd
import pytest
import torch
from tiny_project import ROOT
from torch.utils.data import Dataset

from tasks.checkpoints import load_checkpoint
from tasks.dispatch import run_stage
from tasks.distributed import DUMP_ENV, batches_at, meta_positions, stream_seed
from tasks.io import MetadepthError
from tasks.meta_init import run_meta_init
from tasks.params import load_params
from tasks.preprocess.shards import infinite_batches


class Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(i), "x": torch.full((2,), float(i))}


def indices(batch: dict[str, torch.Tensor]) -> list[int]:
    return batch["index"].tolist()


@pytest.mark.parametrize("start", [0, 5])
def test_batches_at_consecutive_positions_is_infinite_batches(start):
    """A 1-process run reads exactly the stream it always read (across epoch boundaries, after a resume)."""
    data = Numbers(23)  # 5 batches of 4 per epoch, 3 frames dropped
    ours = batches_at(data, 4, seed=7, positions=itertools.count(start))
    theirs = infinite_batches(data, 4, seed=7, start_batch=start)
    for _ in range(12):
        a, b = next(ours), next(theirs)
        assert indices(a) == indices(b) and torch.equal(a["x"], b["x"])


def test_rank_slices_partition_every_global_batch():
    data = Numbers(16)
    whole = batches_at(data, 4, seed=1, positions=itertools.count())
    parts = [batches_at(data, 4, seed=1, positions=itertools.count(), part=(r, 2)) for r in range(2)]
    for _ in range(6):
        assert indices(next(whole)) == indices(next(parts[0])) + indices(next(parts[1]))
    with pytest.raises(MetadepthError, match="multiple of runtime.numerics.nproc_per_node"):
        batches_at(data, 3, seed=1, positions=itertools.count(), part=(0, 2))


@pytest.mark.parametrize("partners", [False, True])
def test_ranks_split_the_tasks_of_a_one_process_step(partners):
    """W ranks x T tasks take the positions, and the task/partner pairs, of 1 rank x W*T tasks."""
    t, world, steps = 2, 3, 4
    single = list(itertools.islice(meta_positions(0, t * world, 0, 1, partners), steps * t * world * (1 + partners)))
    per_rank = [list(itertools.islice(meta_positions(0, t, r, world, partners), steps * t * (1 + partners)))
                for r in range(world)]
    chunk = t * (2 if partners else 1)
    for step in range(steps):
        whole = single[step * len(single) // steps : (step + 1) * len(single) // steps]
        g = t * world
        tasks, mates = whole[:g], whole[g:]
        for r in range(world):
            mine = per_rank[r][step * chunk : (step + 1) * chunk]
            assert mine[:t] == tasks[r * t : (r + 1) * t]
            assert mine[t:] == (mates[r * t : (r + 1) * t] if partners else [])
    # resuming at step 3 continues the same layout
    assert list(itertools.islice(meta_positions(3, t, 1, world, partners), chunk)) == per_rank[1][3 * chunk :]


def test_stream_seeds_differ_for_nearby_keys():
    seeds = {stream_seed(0, step, rank) for step in range(50) for rank in range(4)}
    assert len(seeds) == 200 and stream_seed(0, 1, 2) == stream_seed(0, 1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Through torchrun


TWO_RANKS = {"host": {"num_threads": 1}, "numerics": {"nproc_per_node": 2}}


@pytest.fixture(scope="module")
def meta_two_ranks(tiny_project):
    """One 2-rank meta_init with everything on (online and task augmentation), through the real stage function."""
    root, params = tiny_project(meta={"settings": {"steps": 2, "batch_size": 4, "log_every": 1, "tasks_per_step": 1}},
                                runtime=TWO_RANKS)
    dumps = root / "rank_weights"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DUMP_ENV, str(dumps))
        started = time.time()
        result = run_stage(params, root, ("meta_init", "meta", "0"))
    print(f"2-rank meta_init: {time.time() - started:.1f} s")
    return root, params, result, dumps


@pytest.mark.slow
def test_two_rank_meta_init_leaves_identical_weights_on_both_ranks(meta_two_ranks):
    root, params, result, dumps = meta_two_ranks
    assert result.world_size == 2 and len(set(result.rank_weight_digests)) == 1
    ranks = [torch.load(dumps / f"meta_init_meta.rank{r}.pt") for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    ck = load_checkpoint(root / "data" / "checkpoints" / "seed0" / "meta.pt")
    assert ck["step"] == params.meta.settings.steps and ck["info"]["world_size"] == 2
    for k, v in ck["model"].items():
        assert torch.equal(v, ranks[0][k]), k
    init = load_checkpoint(root / "data" / "checkpoints" / "seed0" / "scratch.pt")["model"]
    assert any(not torch.equal(init[k], v) for k, v in ck["model"].items())
    assert not list((root / "data" / "checkpoints" / "seed0").glob("*.resume.pt"))


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_twice_the_tasks(meta_two_ranks, tiny_project, single_thread):
    """The 1-process reference runs here, with the 1 thread each worker has."""
    root, params, _, _ = meta_two_ranks
    single, single_params = tiny_project(
        meta={"settings": {"steps": 2, "batch_size": 4, "log_every": 1, "tasks_per_step": 2}},
        runtime={"host": {"num_threads": 1}, "numerics": {"nproc_per_node": 1}})
    result = run_meta_init(single_params, single, "meta")
    assert result.final["num_tasks"] == 2 and result.world_size == 1 and not result.rank_weight_digests
    a = load_checkpoint(root / "data" / "checkpoints" / "seed0" / "meta.pt")["model"]
    b = load_checkpoint(single / "data" / "checkpoints" / "seed0" / "meta.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), k
    curve_a = pd.read_csv(root / "data" / "curves" / "seed0" / "meta.csv")
    curve_b = pd.read_csv(single / "data" / "curves" / "seed0" / "meta.csv")
    pd.testing.assert_frame_equal(curve_a, curve_b, rtol=1e-5)


class Recorder:
    def __init__(self):
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))


FT_STEPS = 6


@pytest.fixture(scope="module")
def finetune_two_ranks(tiny_project, tmp_path_factory):
    """One 2-rank DDP finetune through the real stage function, keeping a copy of the first resume snapshot it
    writes (rank 0 deletes it on success)."""
    root, params = tiny_project(finetune={"steps": FT_STEPS, "batch_size": 4, "settings": {"log_every": 1}},
                                runtime={**TWO_RANKS, "host": {"num_threads": 1, "resume_every": 2}})
    snapshot = root / "data" / "checkpoints" / "seed0" / "ft_scratch.resume.pt"
    copy = tmp_path_factory.mktemp("dist_ft") / "snapshot.pt"
    tracker, outcome = Recorder(), {}
    run = threading.Thread(target=lambda: outcome.update(result=run_stage(params, root, ("finetune", "scratch", "0"),
                                                                          tracker)))
    started = time.time()
    run.start()
    while run.is_alive() and not copy.exists():
        if snapshot.exists():
            try:
                shutil.copy(snapshot, copy)
            except FileNotFoundError:  # replaced or removed between the check and the copy
                pass
        time.sleep(0.01)
    run.join()
    print(f"2-rank finetune: {time.time() - started:.1f} s")
    return root, params, outcome["result"], tracker, copy


@pytest.mark.slow
def test_two_rank_finetune_writes_one_checkpoint(finetune_two_ranks):
    root, params, result, tracker, _ = finetune_two_ranks
    assert result.world_size == 2 and result.steps == FT_STEPS and math.isfinite(result.final["loss"])
    assert len(set(result.rank_weight_digests)) == 1
    ck_dir = root / "data" / "checkpoints" / "seed0"
    assert sorted(p.name for p in ck_dir.iterdir()) == ["ft_scratch.pt", "scratch.pt"]
    ck = load_checkpoint(ck_dir / "ft_scratch.pt")
    assert ck["step"] == FT_STEPS and ck["info"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in ck["model"])  # the unwrapped model, not the DDP wrapper
    curve = pd.read_csv(root / "data" / "curves" / "seed0" / "ft_scratch.csv")
    assert list(curve["step"]) == list(range(FT_STEPS))
    # the parent logged the curve rank 0 wrote into its own tracker
    assert [s for s, _ in tracker.metrics] == list(range(FT_STEPS))
    assert tracker.metrics[-1][1]["train_loss"] == pytest.approx(result.final["loss"])


@pytest.mark.slow
def test_two_rank_finetune_resumes_from_rank_0_snapshot(finetune_two_ranks, capfd):
    """Both ranks load the snapshot rank 0 saved, and the run ends where the uninterrupted one did."""
    root, params, _, _, copy = finetune_two_ranks
    assert copy.exists(), "no resume snapshot was seen during the first run"
    ck_dir = root / "data" / "checkpoints" / "seed0"
    reference = load_checkpoint(ck_dir / "ft_scratch.pt")
    curve = pd.read_csv(root / "data" / "curves" / "seed0" / "ft_scratch.csv")
    (ck_dir / "ft_scratch.pt").unlink()
    shutil.copy(copy, ck_dir / "ft_scratch.resume.pt")
    capfd.readouterr()
    run_stage(params, root, ("finetune", "scratch", "0"))
    assert capfd.readouterr().out.count("resuming from") == 2  # one line per rank
    assert not (ck_dir / "ft_scratch.resume.pt").exists()
    resumed = load_checkpoint(ck_dir / "ft_scratch.pt")
    for k in reference["model"]:
        assert torch.equal(resumed["model"][k], reference["model"][k]), k
    assert pd.read_csv(root / "data" / "curves" / "seed0" / "ft_scratch.csv").equals(curve)


@pytest.mark.slow
def test_a_worker_error_is_the_parent_error(tmp_path):
    """A MetadepthError in the workers comes back as the same one-line error, not as torchrun's traceback."""
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={"runtime": params.runtime.model_copy(update={
        "numerics": params.runtime.numerics.model_copy(update={"nproc_per_node": 2})})})
    with pytest.raises(MetadepthError, match=r"^.*scratch.pt: checkpoint not found; run the stage"):
        run_stage(params, tmp_path, ("meta_init", "meta", "0"))
