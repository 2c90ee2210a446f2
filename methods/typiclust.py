"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022; spec section 3, "TypiClust").

1. Features of every training slice (L and P; ``features``, default ``"manifold"``: the VAE's
   pre-latent GAP feature, the spec's stand-in for the paper's self-supervised features),
   L2-normalised (spec).
2. k-means into ``min(|L| + budget, max_clusters)`` clusters (``max_clusters`` = 500, spec);
   scikit-learn ``KMeans`` up to ``minibatch_above`` = 50 clusters and ``MiniBatchKMeans`` above
   (spec, as the reference), seeded from ``state.rng``.
3. Clusters of at most ``min_cluster_size`` = 5 slices are dropped (the reference keeps
   ``size > 5``). Each pick goes to the cluster with the fewest labelled slices (labelled ones
   and this round's picks), then the largest; exact ties between clusters by ``state.rng``.
4. In that cluster, the unlabelled slice of maximal typicality
   ``1 / (mean L2 distance to its k nearest neighbours within the cluster + 1e-5)``,
   k = min(``knn`` = 20, |cluster| // 2) (self excluded; scikit-learn ``NearestNeighbors``, which
   computes distances in bounded chunks), ties by ``state.rng``. Cycle until ``budget`` picks.
5. If every cluster is dropped or used up before the budget is met, the rest is a uniform
   draw from the remaining pool (``state.rng``), counted in ``round_info()["random_fill"]``.

``subset`` (default None) bounds the work on large pools: k-means and typicality then run on the
labelled set plus a seeded random subset of the pool of that size, and only subset slices are
candidates."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from albench.engine.method import register_method
from albench.errors import MethodError
from albench.methods._geometry import SubsetFeatureMethod, check_source, pick_max, serial_neighbours


def typicality(x: np.ndarray, knn: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the ``k = min(knn, n // 2)`` nearest other rows + 1e-5) of
    every row of ``x`` (n, D), float64 (n,); a cluster of one row (k = 0) scores 1e5."""
    from sklearn.neighbors import NearestNeighbors

    n = x.shape[0]
    k = min(int(knn), n // 2)
    if k < 1:
        return np.full(n, 1e5)
    with serial_neighbours():
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


@register_method("typiclust")
class TypiClust(SubsetFeatureMethod):
    """Typical points of the largest uncovered k-means clusters; see the module docstring.

    Parameters: features ("manifold" spec / "segmenter" / "latent"), max_clusters (500),
    min_cluster_size (5: clusters of at most this size are dropped), knn (20), minibatch_above
    (MiniBatchKMeans above this many clusters, 50), subset (pool subset size, None = all),
    batch_size (slices per segmenter pass when features="segmenter")."""

    description = "typical points of the largest uncovered k-means clusters (Hacohen et al. 2022)"

    def __init__(self, features: str = "manifold", max_clusters: int = 500, min_cluster_size: int = 5,
                 knn: int = 20, minibatch_above: int = 50, subset: int | None = None, batch_size: int = 64):
        self.features = check_source(features)
        self.max_clusters = int(max_clusters)
        self.min_cluster_size = int(min_cluster_size)
        self.knn = int(knn)
        self.minibatch_above = int(minibatch_above)
        self.subset = None if subset is None else int(subset)
        self.batch_size = int(batch_size)
        if self.max_clusters < 1 or self.knn < 1 or self.batch_size < 1:
            raise MethodError(f"typiclust: max_clusters, knn and batch_size must be >= 1, got "
                              f"{self.max_clusters}, {self.knn}, {self.batch_size}")
        self._info: dict[str, Any] = {}

    def cluster(self, x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
        """k-means labels (n,) of ``x`` into ``n_clusters`` clusters (scikit-learn)."""
        from sklearn.cluster import KMeans, MiniBatchKMeans

        seed = int(rng.integers(2**31 - 1))
        if n_clusters >= x.shape[0]:
            return np.arange(x.shape[0])
        if n_clusters > self.minibatch_above:
            km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=4096)
        else:
            km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
        return km.fit_predict(x).astype(np.int64)

    def suggest(self, state: Any, budget: int) -> Sequence[int]:
        rng = state.rng
        rows, n_lab = self.candidate_rows(state, budget)
        x = self.row_features(state, rows)
        n_clusters = min(n_lab + int(budget), self.max_clusters)
        labels = self.cluster(x, n_clusters, rng)
        is_lab = np.zeros(rows.size, bool)
        is_lab[:n_lab] = True
        sizes = np.bincount(labels, minlength=n_clusters)
        used = np.bincount(labels[is_lab], minlength=n_clusters)
        untaken = np.bincount(labels[~is_lab], minlength=n_clusters)
        alive = sizes > self.min_cluster_size
        by_cluster = np.argsort(labels, kind="stable")            # members of c, ascending
        starts = np.concatenate([[0], np.cumsum(sizes)])
        taken = is_lab.copy()
        typ: dict[int, np.ndarray] = {}
        picks: list[int] = []
        clusters_used: set[int] = set()
        while len(picks) < budget:
            free = alive & (untaken > 0)
            if not free.any():
                break
            # fewest labelled first, then largest: maximise (-used, size)
            score = np.where(free, -used * (rows.size + 1) + sizes, np.iinfo(np.int64).min)
            c = pick_max(score, rng)
            members = by_cluster[starts[c]:starts[c + 1]]
            if c not in typ:
                typ[c] = typicality(x[members], self.knn)
            t = np.where(taken[members], -np.inf, typ[c])
            j = int(members[pick_max(t, rng)])
            picks.append(j)
            taken[j] = True
            used[c] += 1
            untaken[c] -= 1
            clusters_used.add(c)
        fill = 0
        if len(picks) < budget:
            rest = np.flatnonzero(~taken)
            extra = rest[rng.permutation(rest.size)][: budget - len(picks)]
            picks.extend(int(e) for e in extra)
            fill = int(extra.size)
        self._info = {"features": self.features, "clusters": int(n_clusters), "clusters_kept": int(alive.sum()),
                      "clusters_picked": len(clusters_used), "random_fill": fill, "candidates": int(rows.size - n_lab)}
        return rows[np.asarray(picks, np.int64)]
