"""The shared round 0: the evaluated segmenter's first round, computed once per (protocol,
dataset, seed) and reused by every method.

Round 0 is the same for every method: the same initial set (``initial`` stream), the same
initial weights (``weights``), the same training (``order``, ``augment``, ``torch`` streams of
round 0) and the same evaluation. The first job to reach it computes it and publishes an
artefact under the experiment folder, ``<exp>/round0/<key>.pt``; the others load it. The key is
a sha256 of everything that can change the round: protocol fingerprint, dataset fingerprint
and content hash, seed, device type (and torch's thread count on a CPU, which changes float
sums in the last bits), code version and numerics version. The artefact holds the
trained model's and optimiser's state dicts, torch's RNG state after the round, the training
result and the evaluation, and is written atomically; an exclusive ``flock`` on
``<key>.lock`` makes parallel jobs (``--jobs``, Ray on a shared folder) wait for the one
computing it instead of computing it twice.

Not shared: jobs whose method builds a training aux in round 0 (its aux learns from the
round's training, so that training must run in the job) and joint-training tracks."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from albench.io import atomic_path, file_lock

ROUND0_FORMAT = "albench-round0/1"


def round0_key(*, protocol_fingerprint: str, dataset_fingerprint: str, content_hash: str | None, seed: int,
               device_type: str, code_version: str, numerics_version: int, cpu_threads: int = 0) -> str:
    """The content address of one round 0 (hex sha256). ``cpu_threads``: torch's intra-op thread
    count on a CPU (float sums change in the last bits with it), 0 on a GPU."""
    payload = json.dumps({"format": ROUND0_FORMAT, "protocol": protocol_fingerprint, "dataset": dataset_fingerprint,
                          "content": content_hash, "seed": int(seed), "device": device_type,
                          "cpu_threads": int(cpu_threads),
                          "code": code_version, "numerics": int(numerics_version)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _load(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        art = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        warnings.warn(f"shared round 0 {path} is unreadable ({exc}); computing it again", RuntimeWarning)
        return None
    if not isinstance(art, dict) or art.get("format") != ROUND0_FORMAT or art.get("key") != key:
        warnings.warn(f"shared round 0 {path} is not the artefact of key {key[:12]}; computing it again",
                      RuntimeWarning)
        return None
    return art


def shared_round0(folder: Path, key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  compute: Callable[[], tuple[dict[str, Any], dict[str, Any]]], *,
                  device: torch.device) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Round 0's (training result, evaluation) for ``key``: loaded from ``folder`` into
    ``model`` / ``optimizer`` (and torch's RNG) when published, else computed by ``compute()``
    (which trains ``model`` in place and evaluates it) and published. The bool says whether it
    was loaded."""
    path = Path(folder) / f"{key}.pt"
    with file_lock(path.with_suffix(".lock")):
        art = _load(path, key)
        if art is not None:
            model.load_state_dict(art["model"])
            optimizer.load_state_dict(art["optimizer"])
            torch.set_rng_state(art["rng"])
            if device.type == "cuda" and art.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(art["cuda_rng"], device)
            return art["train"], art["eval"], True
        train, ev = compute()
        art = {"format": ROUND0_FORMAT, "key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "rng": torch.get_rng_state(), "train": train, "eval": ev,
               "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        with atomic_path(path) as tmp:
            torch.save(art, tmp)
        return train, ev, False
