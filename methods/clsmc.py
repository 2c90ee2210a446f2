"""ClsMC / representative annotation (Zheng et al., AAAI 2019), as Dai et al. 2022 re-implemented
it (spec section 2.3): clustering plus max-cover on the VAE's pre-latent features, one-shot.

On a seeded random subset of at most ``subset`` = 5,000 slices (the N^2 cosine similarity is
the bound; spec):

1. Agglomerative clustering (scikit-learn ``AgglomerativeClustering``, ``n_clusters`` = 3 as the
   reference, ``linkage`` = "ward") of the L2-normalised features (``features``, default
   ``"manifold"``: GAP of the last VAE encoder block, spec: z itself is too low-dimensional for
   cosine similarity).
2. Within each cluster, greedy max-cover with cosine similarity
   (``albench.methods._geometry.max_cover``) adds slices until
   sum_{u in cluster} max_s cos(s, u) >= ``threshold`` * |cluster| (0.9, the reference's
   ``candidate_thresh``). The union of these picks is the candidate set.
3. Greedy max-cover over the candidate set (universe: the whole subset) ranks the candidates;
   the ranking then continues greedily over the rest of the subset.

``one_shot=True`` (default; the paper: "the suggestion is made one-time only", no model in the
loop): steps 1-3 run once on the whole training split, with no labels and seeds derived from
``state.seed`` alone (not ``state.rng``), giving a fixed order of every training slice: the
ranked subset, then the other slices in a seeded random order. Every round hands out the first
``budget`` slices of that order that are still unlabelled. So the round-r picks of a resumed job
(a new instance) are recomputed exactly, and all rounds together are the one-shot selection of
the total budget; the engine's random initial set is simply skipped where it appears in the
order (Zheng et al. start from nothing).

``one_shot=False`` (per-round variant): every round reruns steps 1-3 on the labelled set plus a
subset of the pool drawn with ``state.rng``; the labelled slices cover their neighbours from the
start (the max-cover objective starts at max_{l in L} cos(l, u) instead of 0) and only pool
slices are candidates. A budget beyond the subset is filled by a uniform draw (``state.rng``).

Max-cover objective: F(S) = sum_u max(0, max_{s in S} cos(s, u)), F(empty) = 0; exact gain
ties by a seeded random order."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods._geometry import check_source, l2_normalise, max_cover, pool_features, seeded_subset

ONE_SHOT_KEY = 0x636C736D   # "clsm": spawn key of the one-shot stream (independent of state.rng)
LINKAGES = ("ward", "average", "complete", "single")


def one_shot_rng(seed: int) -> np.random.Generator:
    """The one-shot selection's generator: a function of the job's seed only."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(ONE_SHOT_KEY,)))


def clsmc_rank(x: np.ndarray, rng: np.random.Generator, *, n_clusters: int = 3, threshold: float = 0.9,
               linkage: str = "ward", candidates: np.ndarray | None = None,
               initial: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Steps 1-3 of the module docstring on the rows of ``x`` (n, D).

    candidates: bool (n,), the rows that may be ranked (default all). initial: float (n,), the
    coverage each row already has (default 0). Returns (every candidate row index, in rank order:
    the max-cover candidates first, then the other candidates, int64), info (cluster sizes,
    candidate count)."""
    from sklearn.cluster import AgglomerativeClustering

    n = x.shape[0]
    xn = l2_normalise(x)
    cand = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    cover0 = np.zeros(n, np.float32) if initial is None else np.asarray(initial, np.float32)
    k = min(int(n_clusters), n)
    labels = (AgglomerativeClustering(n_clusters=k, linkage=linkage).fit_predict(xn) if k >= 2
              else np.zeros(n, np.int64))
    chosen: list[int] = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        cm = members[cand[members]]
        if cm.size == 0:
            continue
        sim = xn[cm] @ xn[members].T
        picks, _ = max_cover(sim, cm.size, rng=rng, initial=cover0[members], target=threshold * members.size)
        chosen.extend(cm[picks].tolist())
    chosen_arr = np.asarray(chosen, np.int64)
    order, _ = max_cover(xn[chosen_arr] @ xn.T, chosen_arr.size, rng=rng, initial=cover0)
    ranked = chosen_arr[order]
    cover = cover0.copy()
    if ranked.size:
        np.maximum(cover, (xn[ranked] @ xn.T).max(axis=0), out=cover)
    rest = np.flatnonzero(cand & ~np.isin(np.arange(n), ranked))
    if rest.size:
        more, _ = max_cover(xn[rest] @ xn.T, rest.size, rng=rng, initial=cover)
        ranked = np.concatenate([ranked, rest[more]])
    info = {"cluster_sizes": np.bincount(labels, minlength=k).tolist(), "candidates": int(chosen_arr.size)}
    return ranked.astype(np.int64), info


@register_method("clsmc")
class ClsMC(Method):
    """Clustering + max-cover representative annotation, one-shot by default; see the module docstring.

    Parameters: n_clusters (3), threshold (per-cluster cover fraction, 0.9), subset (slices in
    the similarity computations, 5,000), linkage ("ward"), features ("manifold" spec / "latent" /
    "segmenter", the latter only with one_shot=False), one_shot (True = the paper's one-time
    selection handed out per round; False = per-round), batch_size (segmenter pass)."""

    description = "agglomerative clustering + max-cover on VAE features, one-shot (Zheng et al. 2019)"

    def __init__(self, n_clusters: int = 3, threshold: float = 0.9, subset: int = 5000, linkage: str = "ward",
                 features: str = "manifold", one_shot: bool = True, batch_size: int = 64):
        self.n_clusters = int(n_clusters)
        self.threshold = float(threshold)
        self.subset = int(subset)
        self.linkage = str(linkage)
        self.features = check_source(features)
        self.one_shot = bool(one_shot)
        self.batch_size = int(batch_size)
        if self.n_clusters < 1 or self.subset < 1 or not 0 < self.threshold <= 1 or self.linkage not in LINKAGES:
            raise MethodError(f"clsmc: need n_clusters >= 1, subset >= 1, 0 < threshold <= 1, linkage in "
                              f"{LINKAGES}; got {self.n_clusters}, {self.subset}, {self.threshold}, {self.linkage!r}")
        if self.one_shot and self.features == "segmenter":
            raise MethodError("clsmc: one_shot selection has no model in the loop; use features='manifold' or "
                              "'latent', or one_shot=False")
        self._cache: tuple[Any, np.ndarray] | None = None
        self._info: dict[str, Any] = {}

    @property
    def requires(self) -> frozenset:  # type: ignore[override]
        """The VAE manifold unless the features come from the segmenter."""
        return frozenset() if self.features == "segmenter" else frozenset({"manifold"})

    def one_shot_order(self, state: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Every training row (``state.manifold.rows``) in one-shot selection order; a function of
        ``state.seed`` and the manifold only (cached per instance)."""
        m = state.manifold
        key = (state.seed, getattr(m, "fingerprint", None))
        if self._cache is not None and self._cache[0][0] == key:
            return self._cache[1], self._cache[0][1]
        rng = one_shot_rng(state.seed)
        rows = np.asarray(m.rows, np.int64)
        pos = seeded_subset(rng, rows.size, self.subset)
        table = m.features if self.features == "manifold" else m.latents
        ranked, info = clsmc_rank(np.asarray(table, np.float32)[pos], rng, n_clusters=self.n_clusters,
                                  threshold=self.threshold, linkage=self.linkage)
        others = np.setdiff1d(np.arange(rows.size), pos)
        order = np.concatenate([rows[pos[ranked]], rows[others[rng.permutation(others.size)]]])
        info = {**info, "ranked": int(ranked.size)}
        self._cache = ((key, info), order)
        return order, info

    def suggest(self, state: Any, budget: int) -> Sequence[int]:
        pool = np.asarray(state.pool, np.int64)
        if self.one_shot:
            order, info = self.one_shot_order(state)
            avail = order[np.isin(order, pool)]
            picks = avail[: int(budget)]
            if picks.size < budget:
                raise MethodError(f"clsmc: the one-shot order holds {avail.size} pool rows, budget {budget}")
            start = int(np.flatnonzero(np.isin(order, pool))[0]) if avail.size else 0
            self._info = {"mode": "one_shot", **info, "order_start": start,
                          "beyond_ranked": int(np.isin(picks, order[info["ranked"]:]).sum())}
            return picks
        rng = state.rng
        lab = np.asarray(state.labelled, np.int64)
        cand_rows = pool[seeded_subset(rng, pool.size, max(self.subset - lab.size, 1))]
        rows = np.concatenate([lab, cand_rows])
        xn = l2_normalise(pool_features(state, rows, self.features, self.batch_size))
        initial = (np.maximum((xn[: lab.size] @ xn.T).max(axis=0), 0) if lab.size
                   else np.zeros(rows.size, np.float32))
        cand = np.zeros(rows.size, bool)
        cand[lab.size:] = True
        ranked, info = clsmc_rank(xn, rng, n_clusters=self.n_clusters, threshold=self.threshold,
                                  linkage=self.linkage, candidates=cand, initial=initial)
        picks = rows[ranked[: int(budget)]]
        fill = 0
        if picks.size < budget:
            rest = np.setdiff1d(pool, picks)
            extra = rest[rng.permutation(rest.size)][: int(budget) - picks.size]
            picks = np.concatenate([picks, extra])
            fill = int(extra.size)
        self._info = {"mode": "per_round", **info, "random_fill": fill}
        return picks

    def round_info(self) -> dict[str, Any]:
        return dict(self._info)
