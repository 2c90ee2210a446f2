"""Shared geometry for the representativeness methods (``coreset``, ``typiclust``, ``probcover``,
``clsmc``, ``ggs``; later DAL): feature sources, chunked distances, k-centre greedy, greedy
max-cover on a similarity matrix and greedy max coverage of a ball graph.

Not a method (leading underscore: the registry does not import it as one); importable as
``albench.methods._geometry``.

Why hand-written: scikit-learn and scipy have no k-centre greedy, no facility-location
(max-cover) greedy and no greedy coverage of a neighbourhood graph; k-means, agglomerative
clustering, nearest neighbours and radius neighbours come from scikit-learn, low-dimensional
latent search from scipy's ``cKDTree``.

Memory: every pairwise computation here is chunked over rows, so at most ``chunk`` x (number of
other points) distances are alive at a time; :func:`max_cover` takes a dense similarity matrix,
whose size the caller bounds (a documented candidate subset)."""

from __future__ import annotations

import heapq
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from albench.engine.method import Method
from albench.errors import MethodError
from albench.training.inference import inference_model

FEATURE_SOURCES = ("manifold", "segmenter", "latent")


# -- feature sources ---------------------------------------------------------------------------
def manifold_positions(manifold: Any, rows: Sequence[int]) -> np.ndarray:
    """Positions in ``manifold.rows`` (and so in ``manifold.latents`` / ``.features``) of store
    ``rows``, int64 (n,). A row the manifold does not know is a MethodError."""
    mrows = np.asarray(manifold.rows, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    order = np.argsort(mrows, kind="stable")
    at = np.clip(np.searchsorted(mrows[order], rows), 0, max(mrows.size - 1, 0))
    pos = order[at] if mrows.size else np.zeros(rows.shape, np.int64)
    bad = (mrows[pos] != rows) if mrows.size else np.ones(rows.shape, bool)
    if bad.any():
        raise MethodError(f"the manifold has no latents for store rows {rows[bad][:5].tolist()}")
    return pos.astype(np.int64)


@torch.no_grad()
def segmenter_features(state: Any, rows: Sequence[int], batch_size: int = 64) -> np.ndarray:
    """float32 (n, C_b): global-average-pooled U-Net bottleneck (``forward_features(x).bottleneck``
    averaged over H/16 x W/16) of store ``rows``, streamed ``batch_size`` slices at a time on
    ``state.device`` with the round's segmenter (its BatchNorm-folded eval copy)."""
    model = state.segmenter
    if model is None:
        raise MethodError(f"method {state.method!r}: no trained segmenter in round {state.round} "
                          "for bottleneck features")
    net = inference_model(model)
    out = []
    for _, imgs in state.iter_images(rows, batch_size=max(int(batch_size), 1)):
        x = torch.as_tensor(imgs, dtype=torch.float32, device=state.device)
        out.append(net.forward_features(x).bottleneck.float().mean(dim=(2, 3)).cpu().numpy())
    if not out:
        return np.zeros((0, int(getattr(model, "bottleneck_width", 0))), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def pool_features(state: Any, rows: Sequence[int], source: str, batch_size: int = 64) -> np.ndarray:
    """float32 (n, D) features of store ``rows`` from ``source``: ``"manifold"`` (the VAE's
    pre-latent GAP of the last encoder block, cached in ``state.manifold.features``),
    ``"latent"`` (the VAE latent mean mu, (n, z)) or ``"segmenter"`` (GAP of the round's U-Net
    bottleneck, computed now)."""
    if source == "segmenter":
        return segmenter_features(state, rows, batch_size)
    if source in ("manifold", "latent"):
        m = state.manifold
        table = m.features if source == "manifold" else m.latents
        return np.asarray(table, dtype=np.float32)[manifold_positions(m, rows)]
    raise MethodError(f"unknown feature source {source!r}; use one of {FEATURE_SOURCES}")


@contextmanager
def serial_neighbours() -> Iterator[None]:
    """Run scikit-learn's neighbour searches inside on one OpenMP thread.

    torch and scikit-learn each ship their own libgomp; in one process their thread pools spin
    against each other, and a k-NN query of a few hundred points took 0.05 s instead of 2 ms on
    2 cores (25x, measured). The searches are exact and computed per query row, so one thread
    gives the same neighbours and distances (``tests/test_methods_geometry.py`` checks it)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


def check_source(source: str) -> str:
    if source not in FEATURE_SOURCES:
        raise MethodError(f"features must be one of {FEATURE_SOURCES}, got {source!r}")
    return source


class SubsetFeatureMethod(Method):
    """Base of the methods that select on per-slice features of the labelled set plus a seeded
    random subset of the pool (``coreset``, ``typiclust``, ``probcover``).

    Subclasses set the public attributes ``features`` (one of :data:`FEATURE_SOURCES`),
    ``subset`` (pool slices drawn as candidates, None = the whole pool) and ``batch_size``
    (slices per segmenter pass), and leave their round summary in ``self._info``."""

    features: str = "manifold"
    subset: int | None = None
    batch_size: int = 64

    @property
    def requires(self) -> frozenset:  # type: ignore[override]
        """The VAE manifold unless the features come from the segmenter."""
        return frozenset() if self.features == "segmenter" else frozenset({"manifold"})

    def candidate_rows(self, state: Any, budget: int) -> tuple[np.ndarray, int]:
        """(rows int64: ``state.labelled`` then the candidates, number of labelled rows). The
        candidates are a subset of ``self.subset`` pool slices drawn with ``state.rng`` (the
        whole pool when the subset is None or smaller than ``budget``)."""
        pool = np.asarray(state.pool, np.int64)
        lab = np.asarray(state.labelled, np.int64)
        cand = pool[seeded_subset(state.rng, pool.size, self.subset)]
        if budget > cand.size:
            cand = pool
        return np.concatenate([lab, cand]), int(lab.size)

    def row_features(self, state: Any, rows: np.ndarray, normalise: bool = True) -> np.ndarray:
        """float32 (len(rows), D) features of ``rows`` from ``self.features``, L2-normalised
        unless ``normalise`` is False."""
        x = pool_features(state, rows, self.features, self.batch_size)
        return l2_normalise(x) if normalise else x

    def round_info(self) -> dict[str, Any]:
        return dict(getattr(self, "_info", {}))


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def seeded_subset(rng: np.random.Generator, n: int, size: int | None) -> np.ndarray:
    """Sorted positions of a uniform random subset of ``min(size, n)`` of ``range(n)`` (all of them
    when ``size`` is None or >= n)."""
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=int(size), replace=False)).astype(np.int64)


def _tensor(x: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                           dtype=torch.float32, device=device)


def pick_max(values: np.ndarray, rng: np.random.Generator | None) -> int:
    """Index of the maximum of ``values``; exact ties are broken uniformly with ``rng`` (lowest
    index when ``rng`` is None)."""
    best = np.flatnonzero(values == values.max())
    if best.size == 1 or rng is None:
        return int(best[0])
    return int(best[rng.integers(best.size)])


# -- distances ---------------------------------------------------------------------------------
def min_sq_dist(x: np.ndarray | torch.Tensor, centres: np.ndarray | torch.Tensor, *, chunk: int = 4096,
                device: torch.device | str = "cpu") -> np.ndarray:
    """float32 (n,): squared Euclidean distance of each row of ``x`` (n, D) to its nearest row of
    ``centres`` (m, D); +inf when m = 0. Chunked: at most ``chunk`` x ``chunk`` distances exist
    at a time, so memory is O(chunk^2 + (n + m) D) whatever n and m."""
    xt, ct = _tensor(x, device), _tensor(centres, device)
    n = xt.shape[0]
    best = torch.full((n,), float("inf"), device=device)
    if ct.shape[0] == 0 or n == 0:
        return best.cpu().numpy()
    xn, cn = (xt * xt).sum(1), (ct * ct).sum(1)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        for clo in range(0, ct.shape[0], chunk):
            chi = min(clo + chunk, ct.shape[0])
            d = xn[lo:hi, None] + cn[None, clo:chi] - 2.0 * (xt[lo:hi] @ ct[clo:chi].T)
            best[lo:hi] = torch.minimum(best[lo:hi], d.clamp_min_(0).min(dim=1).values)
    return best.cpu().numpy()


def k_center_greedy(x: np.ndarray, centres: Sequence[int], budget: int, rng: np.random.Generator | None, *,
                    candidates: Sequence[int] | None = None, chunk: int = 4096,
                    device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """k-centre greedy (Sener & Savarese 2018, their Alg. 1 without the robust MIP): starting from
    the centres ``centres`` (positions in ``x`` (N, D)), ``budget`` times add the candidate whose
    distance to its nearest centre is largest, then update every point's nearest-centre distance
    with the new centre (one O(N D) pass, O(N) memory).

    candidates: positions that may be picked (default: every position not in ``centres``).
    Ties (equal distance) are broken uniformly by ``rng`` (lowest position if None); with no
    centre at all, the first pick is a uniform draw from the candidates (all distances are +inf).
    Returns (picked positions int64 (budget,), their Euclidean distance to the nearest centre at
    the time they were picked, float64 (budget,))."""
    xt = _tensor(x, device)
    n = xt.shape[0]
    cand = np.ones(n, bool)
    if candidates is not None:
        cand[:] = False
        cand[np.asarray(candidates, dtype=np.int64)] = True
    centres = np.asarray(centres, dtype=np.int64)
    cand[centres] = False
    if budget > int(cand.sum()):
        raise MethodError(f"k-centre greedy: budget {budget} exceeds the {int(cand.sum())} candidates")
    d = min_sq_dist(xt, xt[torch.as_tensor(centres, device=xt.device)], chunk=chunk, device=device).astype(np.float64)
    norms = (xt * xt).sum(1)
    picks, radii = [], []
    for _ in range(int(budget)):
        masked = np.where(cand, d, -1.0)
        j = pick_max(masked, rng)
        picks.append(j)
        radii.append(float(np.sqrt(max(d[j], 0.0))) if np.isfinite(d[j]) else float("inf"))
        cand[j] = False
        new = (norms + norms[j] - 2.0 * (xt @ xt[j])).clamp_min_(0).cpu().numpy().astype(np.float64)
        new[j] = 0.0
        np.minimum(d, new, out=d)
    return np.asarray(picks, dtype=np.int64), np.asarray(radii, dtype=np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """float32 (n, m) cosine similarity of the rows of ``a`` (n, D) and ``b`` (m, D) (``b = a`` by
    default). Dense: the caller bounds n x m."""
    an = l2_normalise(a)
    bn = an if b is None else l2_normalise(b)
    return an @ bn.T


# -- max-cover (facility location) --------------------------------------------------------------
def max_cover(sim: np.ndarray, budget: int, *, rng: np.random.Generator | None = None,
              initial: np.ndarray | None = None, target: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy max-cover of a similarity matrix (the facility-location objective of Yang et al. 2017
    and Zheng et al. 2019): with ``sim`` (n_candidates, n_universe),

        F(S) = sum_u max(initial_u, max_{s in S} sim[s, u]),   F(empty) = sum_u initial_u,

    and ``initial`` = 0 by default (so F(empty) = 0 and negative similarities never count).
    Each step adds the candidate with the largest marginal gain
    ``sum_u max(sim[c, u] - cover_u, 0)``; exact ties go to the candidate with the smaller random
    key (uniform keys from ``rng``; lower index when ``rng`` is None). Stops after ``budget``
    picks or, with ``target``, as soon as F(S) >= target (the reference's per-cluster
    ``candidate_thresh * |cluster|``), whichever comes first; zero-gain candidates are still
    taken in key order while the budget lasts.

    Lazy greedy (Minoux 1978): the objective is submodular, so a candidate's gain only falls as S
    grows; candidates sit in a heap by their last computed gain and only the top one is
    recomputed. It returns exactly what the plain greedy returns with the same tie rule.
    Returns (picks: candidate indices int64 in pick order, coverage: F after each pick float64)."""
    sim = np.asarray(sim, dtype=np.float32)
    if sim.ndim != 2:
        raise MethodError(f"max_cover: sim must be 2-D (candidates, universe), got shape {sim.shape}")
    n_cand, n_univ = sim.shape
    cover = np.zeros(n_univ, np.float32) if initial is None else np.asarray(initial, np.float32).copy()
    if cover.shape != (n_univ,):
        raise MethodError(f"max_cover: initial must have shape ({n_univ},), got {cover.shape}")
    budget = min(int(budget), n_cand)
    keys = rng.permutation(n_cand) if rng is not None else np.arange(n_cand)
    total = float(cover.sum(dtype=np.float64))
    gains0 = np.concatenate([np.maximum(sim[lo:lo + 1024] - cover[None, :], 0).sum(axis=1, dtype=np.float64)
                             for lo in range(0, n_cand, 1024)]) if n_cand else np.zeros(0)
    heap = [(-float(g), int(k), int(c)) for c, (g, k) in enumerate(zip(gains0, keys))]
    heapq.heapify(heap)
    picks, curve = [], []
    while len(picks) < budget and heap:
        if target is not None and total >= target:
            break
        neg, key, c = heapq.heappop(heap)
        gain = float(np.maximum(sim[c] - cover, 0).sum(dtype=np.float64))
        if heap and (-gain, key) > heap[0][:2]:
            heapq.heappush(heap, (-gain, key, c))   # stale bound: re-insert with its true gain
            continue
        picks.append(c)
        np.maximum(cover, sim[c], out=cover)
        total = float(cover.sum(dtype=np.float64))
        curve.append(total)
    return np.asarray(picks, dtype=np.int64), np.asarray(curve, dtype=np.float64)


# -- ball graphs and greedy coverage (ProbCover) -------------------------------------------------
MAX_EDGES = 200_000_000
"""Largest delta-ball graph :func:`radius_graph` builds (800 MB of int32 indices)."""
CHUNK_NEIGHBOURS = 20_000_000
"""Neighbours alive per radius query (about 320 MB with their distances)."""


def radius_graph(x: np.ndarray, delta: float, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The delta-ball graph of the rows of ``x`` (N, D): y is in ball(x) iff ||x - y||_2 < delta
    (x itself included), as a CSR adjacency ``(indptr int64 (N+1,), indices int32 (E,))``. The
    relation is symmetric, so row y also lists the balls that contain y. Neighbours come from
    scikit-learn's ``NearestNeighbors.radius_neighbors``, queried at most ``chunk`` rows at a
    time, fewer when the balls are large (at most about :data:`CHUNK_NEIGHBOURS` neighbours per
    query), and packed to int32 at once: memory is 4 bytes per edge plus one query's lists.

    A graph beyond :data:`MAX_EDGES` edges (a delta at which balls hold a large part of the
    points: N^2 edges at worst) is a MethodError, raised as soon as the first rows' degrees
    predict it or the edges built pass it, before the memory is spent."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    nn = NearestNeighbors(radius=float(delta)).fit(x)

    def too_big(edges: float, what: str) -> MethodError:
        return MethodError(f"probcover: the delta-ball graph at delta = {delta:.4g} {what} {edges:.3g} edges over "
                           f"{n} points (limit {MAX_EDGES:.3g}: balls hold {edges / max(n, 1):.0f} points on "
                           "average); use a smaller delta, the purity rule (delta = None) or a smaller subset")

    counts, parts = [], []
    rows_per_query = min(int(chunk), 256)
    lo = total = 0
    while lo < n:
        hi = min(lo + rows_per_query, n)
        with serial_neighbours():
            dists, lists = nn.radius_neighbors(x[lo:hi], return_distance=True)
        sizes = np.fromiter((len(nb) for nb in lists), np.int64, hi - lo)
        total += int(sizes.sum())
        if lo == 0 and sizes.mean() * n > MAX_EDGES:
            raise too_big(float(sizes.mean() * n), "would hold about")
        if total > MAX_EDGES:
            raise too_big(float(total), "holds more than")
        for i, (dd, nb) in enumerate(zip(dists, lists)):
            nb = nb[dd < delta].astype(np.int32)                  # strict "< delta"
            if not (nb == lo + i).any():           # the point itself (distance 0) always belongs
                nb = np.append(nb, np.int32(lo + i))
            parts.append(np.sort(nb))
            counts.append(nb.size)
        del dists, lists
        lo = hi
        rows_per_query = int(np.clip(CHUNK_NEIGHBOURS // max(int(sizes.max()), 1), 1, int(chunk)))
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum(counts)
    indices = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    return indptr, indices


def greedy_ball_coverage(indptr: np.ndarray, indices: np.ndarray, budget: int, candidates: np.ndarray,
                         covered: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, dict]:
    """Greedy maximum coverage of a symmetric ball graph (ProbCover, Yehuda et al. 2022, Alg. 1):
    ``budget`` times pick the candidate whose ball holds the most uncovered points, mark them
    covered and lower the degree of every ball that contained them (the graph is symmetric, so
    those balls are the newly covered points' own rows; total work O(edges)).

    candidates: bool (N,), who may be picked; covered: bool (N,), points already covered (by the
    labelled set). Ties go uniformly by ``rng`` (lowest index if None). When every candidate's
    degree is 0 (everything coverable is covered) the rest of the budget is a uniform draw from
    the remaining candidates (the reference's argmax would return index 0 again and again).
    Returns (picks int64, info {"covered_fraction": after, "random_fill": count})."""
    n = indptr.size - 1
    covered = np.asarray(covered, bool).copy()
    cand = np.asarray(candidates, bool).copy()
    if budget > int(cand.sum()):
        raise MethodError(f"ball coverage: budget {budget} exceeds the {int(cand.sum())} candidates")
    rows_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    deg = np.bincount(rows_of, weights=(~covered)[indices], minlength=n).astype(np.int64)
    picks, fill = [], 0
    for _ in range(int(budget)):
        dc = np.where(cand, deg, -1)
        if dc.max() <= 0:
            rest = np.flatnonzero(cand)
            extra = rest[rng.permutation(rest.size)] if rng is not None else rest
            extra = extra[: int(budget) - len(picks)]
            picks.extend(int(e) for e in extra)
            fill = int(extra.size)
            break
        j = pick_max(dc, rng)
        picks.append(j)
        cand[j] = False
        ball = indices[indptr[j]:indptr[j + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        if new.size:
            starts, ends = indptr[new], indptr[new + 1]
            lens = ends - starts
            flat = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
            deg -= np.bincount(indices[flat], minlength=n)
    return np.asarray(picks, dtype=np.int64), {"covered_fraction": float(covered.mean()) if n else 1.0,
                                               "random_fill": fill}
