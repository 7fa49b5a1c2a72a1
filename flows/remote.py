"""`metadepth run --push`: send the pipeline's DVC-tracked outputs (data, checkpoints) to a DVC remote.

Other machines then get them with `dvc pull` instead of re-computing. The remote is params.yaml's
`tracking.dvc_remote`, or DVC's default remote when that is null; it is checked before the pipeline runs, so a
typo fails in a second rather than after an hour of training.
"""

from __future__ import annotations

from pathlib import Path

from tasks.io import MetadepthError


def resolve_remote(root: Path, name: str | None) -> str:
    """The remote to push to; a one-line error naming the fix when it does not exist."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes = sorted(repo.config.get("remote", {}))
        default = repo.config.get("core", {}).get("remote")
    if name and name not in remotes:
        raise MetadepthError(f"tracking.dvc_remote: no DVC remote named {name!r} (known: {remotes or 'none'}); "
                             f"add it with `dvc remote add {name} URL`")
    if not name and not default:
        raise MetadepthError("--push: no DVC remote to push to; set tracking.dvc_remote in params.yaml or add a "
                             "default remote with `dvc remote add -d NAME URL`")
    return name or default


def dvc_push(root: Path, remote: str) -> int:
    """`dvc push -r remote` of every output in dvc.lock; returns the number of files transferred."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return repo.push(remote=remote)
    except DvcException as err:
        raise MetadepthError(f"dvc push -r {remote} failed: {str(err).splitlines()[0]}") from None
