"""Gradient-guided sampling (GGS), the seed method of Dai et al., MedIA 2022, Sec. 2.3 (spec
section 1, "Selection round"): step every labelled slice up the gradient of its segmentation
loss in image space, project both the slice and the stepped slice onto the VAE manifold, and
suggest the nearest unlabelled slice "ahead" of the stepped point.

For each labelled slice x_i with label y_i (the round's U-Net f, eval mode, BN frozen):

1. g_i = d L(f(x_i), y_i) / d x_i, the gradient w.r.t. the normalised input IMAGE of the per-slice
   training loss (``loss="dice"``: per-image soft Dice, ``albench.training.losses.soft_dice_loss``
   with ``reduction="none"``, the paper's Eq. 2 up to a constant; ``loss="dice_ce"``: plus the
   pixel cross-entropy, for protocols that train with it). Computed with
   ``torch.autograd.grad`` on the image only, in float32 (no autocast: the gradient is tiny),
   so the segmenter's parameters get no ``.grad``.
2. Ascent (paper Eq. 3): x'_i = x_i + alpha * N(g_i), alpha = 1e-3, N = ``grad_norm``:
   ``"none"`` (paper), ``"l2"`` (g / ||g||_2 * sqrt(numel), a zero gradient stays zero) or
   ``"sign"`` (sign(g)).
3. z_i = mu(x_i), z'_i = mu(x'_i) with the manifold's encoder (eval mode), both in one float32
   batch so that they go through identical kernels; d_i = z'_i - z_i.
4. Candidates: the unlabelled pool minus the slices already picked this round, with the latents
   ``state.manifold.latents``. Walk them by ascending ||z_j - z'_i||_2 (paper Eq. 5) and take the
   first with cos angle(z_j - r_i, d_i) >= cos(angle) (paper Eq. 6, angle = pi/3), where the
   reference point r_i is z'_i (``angle_ref="z_prime"``, paper Eq. 6) or z_i (``"z"``). A
   candidate exactly at r_i passes for ``z_prime`` (it *is* the target) and fails for ``z``
   (no displacement from the labelled slice). A zero step (d_i = 0 exactly) has no direction:
   no candidate passes. Exact distance ties go to the lower store row (``tie_break="row"``,
   spec) or to a random order drawn from ``state.rng`` (``"random"``).
5. No candidate passes: ``fallback="skip"`` (spec default: x_i adds nothing), ``"nearest"`` (the
   unconstrained nearest remaining candidate) or ``"random"`` (a uniform draw from the remaining
   pool). ``angular=False`` is the paper's ablation "Euclidean distance only" (Table 2).
6. Each pick leaves the candidate set at once (sequential greedy over L). L is processed in a
   seeded random order (``order="random"``, spec default), by descending ||g_i|| (``"grad_norm"``)
   or by ascending store row (``"row"``). Each labelled slice picks ``picks_per_slice`` slices per
   pass (paper: 1). A budget smaller than |L| stops after ``budget`` picks; a larger one loops over
   L again with the updated candidate set (``repeat="loop"``, spec) or stops after one pass
   (``repeat="once"``). Whatever the rules leave of the budget (every slice skipped, or
   ``repeat="once"``) is filled by ``fill``: ``"random"`` (uniform, ``state.rng``) or ``"nearest"``
   (round-robin over L in order, the nearest remaining candidate to z'_i, angle ignored).

Latent search (why hand-written: no library does "nearest neighbour subject to a cone
condition"): one scipy ``cKDTree`` over the pool latents per round; all z'_i are queried at
once for their ``k0`` nearest candidates, sorted by (distance, tie key), and the cone test is
vectorised over those. A slice whose list runs out (all taken or outside the cone) is queried
again with 4x the k; past ``brute_k`` neighbours it switches to one vectorised O(n) scan of the
whole pool (exact, ~10 ms at 10^6 in 3-D). ``max_candidates`` (default None = the whole pool,
the paper's reading) caps how many nearest candidates are examined per slice. With latents of
2-3 dimensions about a quarter (3-D) to a third (2-D) of all directions lie in the pi/3 cone, so
the first query almost always answers: one round on a 10^6 pool takes well under a second given
the latents (``tests/bench/test_bench_ggs.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods._geometry import manifold_positions
from albench.training.losses import segmentation_loss

GRAD_NORMS = ("none", "l2", "sign")
ANGLE_REFS = ("z_prime", "z")
FALLBACKS = ("skip", "nearest", "random")
ORDERS = ("random", "grad_norm", "row")
REPEATS = ("loop", "once")
FILLS = ("random", "nearest")
TIE_BREAKS = ("row", "random")
LOSSES = ("protocol", "dice", "dice_ce")
ZERO_STEP_REL = 1e-6


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise MethodError(f"ggs: {name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def _stats(v: np.ndarray) -> dict[str, float]:
    if v.size == 0:
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max())}


# -- step 1-2: image gradient and ascent step ----------------------------------------------------
def normalise_gradient(g: torch.Tensor, mode: str) -> torch.Tensor:
    """``g`` (n, C, H, W) per slice: ``"none"`` as is, ``"l2"`` g / ||g||_2 * sqrt(C H W) (so the
    RMS per voxel is 1; a zero gradient stays zero), ``"sign"`` sign(g)."""
    if mode == "none":
        return g
    if mode == "sign":
        return torch.sign(g)
    if mode == "l2":
        flat = g.flatten(1)
        norm = flat.norm(dim=1)
        scale = torch.where(norm > 0, math.sqrt(flat.shape[1]) / norm.clamp_min(torch.finfo(g.dtype).tiny),
                            torch.zeros_like(norm))
        return g * scale.view(-1, *([1] * (g.dim() - 1)))
    raise MethodError(f"ggs: grad_norm must be one of {GRAD_NORMS}, got {mode!r}")


def loss_gradient(segmenter: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  loss: str = "dice") -> tuple[torch.Tensor, torch.Tensor]:
    """(per-slice loss (n,), gradient dL_i/dx_i (n, C, H, W)) of the segmenter in its current (eval)
    mode, in float32. In eval mode the slices of a batch are independent, so the gradient of the
    summed loss is every slice's own gradient. Only the image is differentiated
    (``torch.autograd.grad``): no parameter's ``.grad`` changes."""
    x = x.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = segmenter(x)
        per = segmentation_loss(logits.float(), y.long(), num_classes, kind=loss, reduction="none")
        (g,) = torch.autograd.grad(per.sum(), x)
    return per.detach(), g.detach()


# -- step 4-6: latent search ---------------------------------------------------------------------
def latent_search(z: np.ndarray, z_prime: np.ndarray, pool_latents: np.ndarray, budget: int, *,
                  order: Sequence[int] | None = None, angular: bool = True, angle: float = math.pi / 3,
                  angle_ref: str = "z_prime", fallback: str = "skip", repeat: str = "loop", fill: str = "random",
                  picks_per_slice: int = 1, tie_key: np.ndarray | None = None,
                  rng: np.random.Generator | None = None, k0: int = 16, brute_k: int = 4096,
                  max_candidates: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The GGS search in latent space (module docstring, steps 4-6), on given latents.

    z, z_prime: (m, D) latents of the labelled slices and of their stepped versions.
    pool_latents: (n, D) latents of the candidate slices. budget: picks wanted (<= n).
    order: processing order of the m labelled slices (default 0..m-1). tie_key: int (n,), the
    secondary sort key of exact distance ties (default: position). rng: for ``fallback="random"``
    and ``fill="random"``.
    Returns (positions into ``pool_latents`` int64 (budget,), info) with info: ``source`` (int64
    (budget,), the labelled slice index behind each pick, -1 for random picks), ``rule`` (str per
    pick: "angle", "nearest" (angular=False), "fallback" or "fill"), ``no_candidate`` (labelled
    slices without a passing candidate when they were first served), ``exhausted`` (labelled
    slices that ran out of passing candidates in any pass), ``zero_direction``
    (labelled slices with d_i = 0 exactly), ``fallback``, ``fill``, ``passes``, ``examined``
    (largest candidate list examined for one slice), ``brute`` (O(n) scans)."""
    from scipy.spatial import cKDTree

    z = np.asarray(z, np.float64)
    zp = np.asarray(z_prime, np.float64)
    pts = np.asarray(pool_latents, np.float64)
    m, n = z.shape[0], pts.shape[0]
    budget = int(budget)
    if budget > n:
        raise MethodError(f"ggs: budget {budget} exceeds the {n} candidates")
    order = np.arange(m) if order is None else np.asarray(order, np.int64)
    tie = np.arange(n, dtype=np.int64) if tie_key is None else np.asarray(tie_key, np.int64)
    direction = zp - z
    dnorm = np.linalg.norm(direction, axis=1)
    ref = zp if angle_ref == "z_prime" else z
    cos_t = math.cos(angle)
    taken = np.zeros(n, bool)
    picks: list[int] = []
    source: list[int] = []
    rule: list[str] = []
    info: dict[str, Any] = {"no_candidate": 0, "zero_direction": int((dnorm == 0).sum()), "fallback": 0, "fill": 0,
                            "passes": 0, "examined": 0, "brute": 0}
    if budget == 0:
        return np.zeros(0, np.int64), {**info, "source": np.zeros(0, np.int64), "rule": []}
    cap = n if max_candidates is None else max(1, min(int(max_candidates), n))
    tree = cKDTree(pts, balanced_tree=False, compact_nodes=False) if m else None   # ~2x faster build
    lists: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}   # i -> (idx, dist, cone ok)

    def cone_rows(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """bool (len(rows), k): candidates idx[r] inside the cone of labelled slice rows[r]."""
        v = pts[idx] - ref[rows][:, None, :]
        vn = np.sqrt(np.einsum("rkd,rkd->rk", v, v))
        ok = np.einsum("rkd,rd->rk", v, direction[rows]) >= cos_t * vn * dnorm[rows][:, None]
        ok &= (dnorm[rows] > 0)[:, None]
        if angle_ref == "z":
            ok &= vn > 0
        return ok

    def cone(i: int, idx: np.ndarray) -> np.ndarray:
        return cone_rows(np.array([i]), idx[None, :])[0]

    def sort_rows(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o = np.lexsort((tie[idx], dist), axis=-1)
        return np.take_along_axis(idx, o, -1), np.take_along_axis(dist, o, -1)

    def query(i: int, k: int) -> None:
        dist, idx = tree.query(zp[i], k=k)
        idx, dist = sort_rows(np.atleast_1d(dist), np.atleast_1d(idx).astype(np.int64))
        lists[i] = (idx, dist, cone(i, idx))
        info["examined"] = max(info["examined"], k)

    if m:   # one batched query for every labelled slice
        k = min(k0, n, cap)
        dist, idx = tree.query(zp, k=k)
        dist, idx = dist.reshape(m, k), idx.reshape(m, k).astype(np.int64)
        idx, dist = sort_rows(dist, idx)
        ok = cone_rows(np.arange(m), idx)
        for i in range(m):
            lists[i] = (idx[i], dist[i], ok[i])
        info["examined"] = k

    def brute(i: int, constrained: bool) -> int | None:
        info["brute"] += 1
        ok = ~taken
        if constrained:
            ok &= cone(i, np.arange(n))
        if not ok.any():
            return None
        cand = np.flatnonzero(ok)
        dist = np.linalg.norm(pts[cand] - zp[i], axis=1)
        best = cand[dist == dist.min()]
        return int(best[np.argmin(tie[best])])

    scanned: set[int] = set()   # slices whose list ran past brute_k: scan the pool directly

    def first(i: int, constrained: bool) -> int | None:
        """Nearest remaining candidate of slice i (in the cone when ``constrained``)."""
        if i in scanned:
            return brute(i, constrained)
        while True:
            idx, dist, ok = lists[i]
            good = ~taken[idx]
            if constrained:
                good &= ok
            hits = np.flatnonzero(good)
            k = idx.size
            if hits.size:
                h = hits[0]
                # an equal-distance candidate beyond the list could have a lower tie key
                if not (dist[h] == dist[-1] and k < min(n, cap)):
                    return int(idx[h])
            if k >= min(n, cap):
                return None
            k_next = min(k * 4, n, cap)
            if k_next > brute_k and cap >= n:
                scanned.add(i)
                return brute(i, constrained)
            query(i, k_next)

    exhausted = np.zeros(m, bool)   # no passing candidate left (the candidate set only shrinks)
    served = np.zeros(m, bool)
    while len(picks) < budget and m:
        info["passes"] += 1
        got = 0
        for i in order.tolist():
            if len(picks) >= budget:
                break
            for _ in range(max(int(picks_per_slice), 1)):
                if len(picks) >= budget:
                    break
                j = None if exhausted[i] else first(i, angular)
                kind = "angle" if angular else "nearest"
                if j is None:
                    exhausted[i] = True
                    if not served[i]:
                        info["no_candidate"] += 1
                    if fallback == "nearest":
                        j, kind = first(i, False), "fallback"
                    elif fallback == "random" and not taken.all():
                        rest = np.flatnonzero(~taken)
                        j, kind = int(rest[rng.integers(rest.size)] if rng is not None else rest[0]), "fallback"
                served[i] = True
                if j is None:
                    break
                taken[j] = True
                picks.append(j)
                source.append(i)
                rule.append(kind)
                got += 1
                if kind == "fallback":
                    info["fallback"] += 1
        if repeat == "once" or got == 0:
            break
    # fill what the rules left of the budget
    while len(picks) < budget:
        if fill == "nearest" and m:
            for i in order.tolist():
                if len(picks) >= budget:
                    break
                j = first(i, False)
                taken[j] = True
                picks.append(j)
                source.append(i)
                rule.append("fill")
                info["fill"] += 1
        else:
            rest = np.flatnonzero(~taken)
            extra = rest[rng.permutation(rest.size)] if rng is not None else rest
            extra = extra[: budget - len(picks)]
            taken[extra] = True
            picks.extend(int(e) for e in extra)
            source.extend([-1] * extra.size)
            rule.extend(["fill"] * extra.size)
            info["fill"] += int(extra.size)
    info["exhausted"] = int(exhausted.sum())
    info["source"] = np.asarray(source, np.int64)
    info["rule"] = rule
    return np.asarray(picks, np.int64), info


@register_method("ggs")
class GradientGuidedSampling(Method):
    """Gradient-guided sampling (Dai et al. 2022; spec section 1); see the module docstring.

    Parameters: alpha (step length in normalised-intensity units per unit gradient, paper 1e-3),
    angular (the angular condition on/off, paper on), angle (cone half-angle in radians, paper
    pi/3), angle_ref ("z_prime" paper Eq. 6 / "z"), grad_norm ("none" paper / "l2" / "sign"),
    fallback ("skip" spec / "nearest" / "random"), order ("random" spec / "grad_norm" / "row"),
    picks_per_slice (paper 1), repeat ("loop" spec / "once"), fill ("random" / "nearest"),
    z_dim (None = the protocol's manifold; an int asks the engine for a manifold of that latent
    size, trained once per (dataset, manifold settings) and cached like the protocol's: Table 1's
    ablation), tie_break ("row" spec / "random"), loss ("protocol": the per-slice form of the protocol's
    training loss, ``state.training_loss``, the default; or "dice" / "dice_ce"), max_candidates (None =
    whole pool), batch_size (slices per gradient / encoder batch), keep_arrows (record
    (z_i, z'_i, z_j) of every pick in ``round_info`` for the report's Fig. 5)."""

    description = "gradient-guided sampling in the VAE latent space (Dai et al. 2022, the seed method)"
    requires = frozenset({"manifold"})

    def __init__(self, alpha: float = 1e-3, angular: bool = True, angle: float = math.pi / 3,
                 angle_ref: str = "z_prime", grad_norm: str = "none", fallback: str = "skip",
                 order: str = "random", picks_per_slice: int = 1, repeat: str = "loop", fill: str = "random",
                 tie_break: str = "row", loss: str = "protocol", max_candidates: int | None = None,
                 batch_size: int = 32, keep_arrows: bool = False, z_dim: int | None = None):
        self.alpha = float(alpha)
        self.z_dim = None if z_dim is None else int(z_dim)
        if self.z_dim is not None and self.z_dim < 1:
            raise ValueError(f"ggs: z_dim must be >= 1 or None, got {z_dim}")
        self.angular = bool(angular)
        self.angle = float(angle)
        self.angle_ref = _choice("angle_ref", angle_ref, ANGLE_REFS)
        self.grad_norm = _choice("grad_norm", grad_norm, GRAD_NORMS)
        self.fallback = _choice("fallback", fallback, FALLBACKS)
        self.order = _choice("order", order, ORDERS)
        self.picks_per_slice = int(picks_per_slice)
        self.repeat = _choice("repeat", repeat, REPEATS)
        self.fill = _choice("fill", fill, FILLS)
        self.tie_break = _choice("tie_break", tie_break, TIE_BREAKS)
        self.loss = _choice("loss", loss, LOSSES)
        self.max_candidates = None if max_candidates is None else int(max_candidates)
        self.batch_size = int(batch_size)
        self.keep_arrows = bool(keep_arrows)
        if self.picks_per_slice < 1 or self.batch_size < 1 or not 0 < self.angle <= math.pi:
            raise MethodError(f"ggs: picks_per_slice and batch_size must be >= 1 and angle in (0, pi], got "
                              f"{self.picks_per_slice}, {self.batch_size}, {self.angle}")
        self._info: dict[str, Any] = {}
        self._used_loss = "dice"

    # -- steps 1-3 ------------------------------------------------------------------------------
    def stepped_latents(self, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z (m, D), z' (m, D), ||g_i||_2 (m,)) of the labelled slices, in ``state.labelled`` order."""
        enc = state.manifold.encoder
        seg = state.segmenter
        if seg is None:
            raise MethodError(f"ggs: no trained segmenter in round {state.round}")
        seg_dev = next((p.device for p in seg.parameters()), state.device)
        enc_dev = next((p.device for p in enc.parameters()), state.device)
        zs, zps, gn = [], [], []
        rows = state.labelled
        for lo in range(0, rows.size, self.batch_size):
            chunk = rows[lo:lo + self.batch_size]
            x = torch.as_tensor(state.images(chunk), dtype=torch.float32, device=seg_dev)
            y = torch.as_tensor(state.labelled_labels(chunk), device=seg_dev)
            _, g = loss_gradient(seg, x, y, state.num_classes, self._loss_kind(state))
            gn.append(g.flatten(1).norm(dim=1).cpu().numpy())
            xp = x + self.alpha * normalise_gradient(g, self.grad_norm)
            with torch.inference_mode():
                mu, _ = enc.encode(torch.cat([x, xp]).to(enc_dev).float())
            mu = mu.float().cpu().numpy().astype(np.float64)
            zs.append(mu[: chunk.size])
            zps.append(mu[chunk.size:])
        zdim = int(np.asarray(state.manifold.latents).shape[1])
        cat = (lambda a, w: np.concatenate(a) if a else np.zeros((0, w)))
        return cat(zs, zdim), cat(zps, zdim), (np.concatenate(gn) if gn else np.zeros(0))

    def suggest(self, state: Any, budget: int) -> Sequence[int]:
        pool = np.asarray(state.pool, np.int64)
        rng = state.rng
        z, zp, gnorm = self.stepped_latents(state)
        m = z.shape[0]
        if self.order == "random":
            order = rng.permutation(m)
        elif self.order == "grad_norm":
            order = np.lexsort((state.labelled, -gnorm))
        else:
            order = np.argsort(state.labelled, kind="stable")
        tie = pool if self.tie_break == "row" else rng.permutation(pool.size)
        latents = np.asarray(state.manifold.latents)[manifold_positions(state.manifold, pool)]
        picks, info = latent_search(z, zp, latents, budget, order=order, angular=self.angular, angle=self.angle,
                                    angle_ref=self.angle_ref, fallback=self.fallback, repeat=self.repeat,
                                    fill=self.fill, picks_per_slice=self.picks_per_slice, tie_key=tie, rng=rng,
                                    max_candidates=self.max_candidates)
        step = np.linalg.norm(zp - z, axis=1)
        znorm = np.linalg.norm(z, axis=1)
        zero = step < ZERO_STEP_REL * np.maximum(znorm, np.finfo(np.float64).tiny)
        if zero.any():
            warnings.warn(f"ggs round {state.round}: {int(zero.sum())} of {m} latent steps ||z'-z|| are below "
                          f"{ZERO_STEP_REL:g} ||z|| (numerically zero; the angle test is noise there). "
                          "Try grad_norm='l2' or 'sign'", RuntimeWarning, stacklevel=2)
        rules = info["rule"]
        self._info = {
            "loss": "per-image soft Dice" + (" + pixel cross-entropy" if self._used_loss == "dice_ce" else ""),
            "loss_kind": self._used_loss,
            "z_dim": int(np.asarray(state.manifold.latents).shape[1]),
            "labelled": int(m),
            "step": _stats(step),
            "relative_step": _stats(step / np.maximum(znorm, np.finfo(np.float64).tiny)),
            "grad_l2": _stats(gnorm),
            "zero_steps": int(zero.sum()),
            "step_warning": bool(zero.any()),
            "no_candidate": int(info["no_candidate"]),
            "exhausted": int(info["exhausted"]),
            "zero_direction": int(info["zero_direction"]),
            "fallback": int(info["fallback"]),
            "fill": int(info["fill"]),
            "by_rule": {r: int(rules.count(r)) for r in ("angle", "nearest", "fallback", "fill")},
            "passes": int(info["passes"]),
            "brute_scans": int(info["brute"]),
        }
        if self.keep_arrows:
            src = info["source"]
            self._info["arrows"] = [
                {"labelled_row": int(state.labelled[s]) if s >= 0 else None, "row": int(pool[j]), "rule": r,
                 "z": z[s].tolist() if s >= 0 else None, "z_prime": zp[s].tolist() if s >= 0 else None,
                 "z_j": latents[j].astype(float).tolist()}
                for j, s, r in zip(picks.tolist(), src.tolist(), rules)
            ]
        return pool[picks]

    def _loss_kind(self, state: Any) -> str:
        kind = self.loss if self.loss != "protocol" else getattr(state, "training_loss", "dice")
        if kind not in ("dice", "dice_ce"):
            kind = "dice"
        self._used_loss = kind
        return kind

    def round_info(self) -> dict[str, Any]:
        return dict(self._info)
