"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022; spec section 3, "ProbCover").

1. Features (``features``, default ``"manifold"``: the VAE pre-latent GAP feature), L2-normalised.
2. The delta-ball graph: y in ball(x) iff ||x - y||_2 < delta (x included);
   ``albench.methods._geometry.radius_graph`` (scikit-learn radius neighbours, chunked, 4 bytes
   per edge). Points in the ball of a labelled slice are covered from the start.
3. Greedy maximum coverage (``_geometry.greedy_ball_coverage``, hand-written: no library has
   it): pick the pool slice whose ball holds the most uncovered points, mark them covered,
   repeat; exact ties by ``state.rng``. Once nothing uncovered is reachable (every degree 0) the
   rest of the budget is a uniform random draw from the pool (spec: the reference's ``argmax``
   would return index 0 over and over), counted in ``round_info()["random_fill"]``.

delta (default None = chosen by purity, spec): the largest delta whose balls are at least
``purity`` = 95 % pure with respect to k-means pseudo-labels (``purity_clusters`` = 10 clusters
for slices, spec [ours]; scikit-learn ``KMeans`` seeded from ``state.rng``). A ball is pure when
every point in it has its centre's pseudo-label, i.e. when delta <= d_x, the distance from x to
the nearest point of another pseudo-label; so the fraction of pure balls at delta is the
fraction of points with d_x >= delta, and the largest delta with purity >= alpha is exactly the
``ceil(alpha N)``-th largest d_x (computed with scikit-learn nearest neighbours, one query per
pseudo-label; no grid search). A float ``delta`` is used as given (unit-norm features, so
0 < delta <= 2 is the useful range). The chosen delta is in ``round_info()["delta"]``.

Memory bound: the graph is built on the labelled set plus a seeded random subset of at most
``subset`` = 20,000 pool slices (drawn with ``state.rng``; None = the whole pool), so it holds at
most subset^2 edges; with a 95 %-pure delta balls rarely cross clusters and the graph stays far
smaller. Only subset slices are candidates."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from albench.engine.method import register_method
from albench.errors import MethodError
from albench.methods._geometry import (SubsetFeatureMethod, check_source, greedy_ball_coverage, radius_graph,
                                       serial_neighbours)


def other_label_distance(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 (n,): Euclidean distance from each row of ``x`` to the nearest row with another
    label (+inf when every row has the same label); scikit-learn ``NearestNeighbors`` fitted on
    the rows of the other labels, one per label."""
    from sklearn.neighbors import NearestNeighbors

    out = np.full(x.shape[0], np.inf)
    for c in np.unique(labels):
        inside = labels == c
        if inside.all():
            continue
        with serial_neighbours():
            dist, _ = NearestNeighbors(n_neighbors=1).fit(x[~inside]).kneighbors(x[inside])
        out[inside] = dist[:, 0]
    return out


def purity_delta(x: np.ndarray, pseudo: np.ndarray, purity: float) -> float:
    """The largest delta at which at least ``purity`` of the open delta-balls around the rows of
    ``x`` are pure w.r.t. ``pseudo`` labels: the ceil(purity n)-th largest other-label distance."""
    d = np.sort(other_label_distance(x, pseudo))[::-1]
    m = min(max(int(math.ceil(purity * d.size)), 1), d.size)
    return float(d[m - 1])


@register_method("probcover")
class ProbCover(SubsetFeatureMethod):
    """Greedy max coverage of delta-balls; see the module docstring.

    Parameters: features ("manifold" spec / "segmenter" / "latent"), delta (ball radius on
    L2-normalised features; None = the purity rule), purity (0.95), purity_clusters (10),
    subset (pool subset size, 20,000; None = all), batch_size (slices per segmenter pass)."""

    description = "greedy coverage of delta-balls on normalised features (Yehuda et al. 2022)"

    def __init__(self, features: str = "manifold", delta: float | None = None, purity: float = 0.95,
                 purity_clusters: int = 10, subset: int | None = 20000, batch_size: int = 64):
        self.features = check_source(features)
        self.delta = None if delta is None else float(delta)
        self.purity = float(purity)
        self.purity_clusters = int(purity_clusters)
        self.subset = None if subset is None else int(subset)
        self.batch_size = int(batch_size)
        if not 0 < self.purity <= 1 or self.purity_clusters < 2 or (self.delta is not None and self.delta <= 0):
            raise MethodError(f"probcover: need 0 < purity <= 1, purity_clusters >= 2, delta > 0; got "
                              f"{self.purity}, {self.purity_clusters}, {self.delta}")
        self._info: dict[str, Any] = {}

    def choose_delta(self, x: np.ndarray, rng: np.random.Generator) -> float:
        """delta by the purity rule (module docstring) on the rows of ``x``."""
        from sklearn.cluster import KMeans

        k = min(self.purity_clusters, x.shape[0])
        if k < 2:
            return 1.0
        pseudo = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit_predict(x)
        delta = purity_delta(x, pseudo, self.purity)
        return delta if np.isfinite(delta) and delta > 0 else 1.0

    def suggest(self, state: Any, budget: int) -> Sequence[int]:
        rng = state.rng
        rows, n_lab = self.candidate_rows(state, budget)
        x = self.row_features(state, rows)
        delta = self.delta if self.delta is not None else self.choose_delta(x, rng)
        indptr, indices = radius_graph(x, delta)
        covered = np.zeros(rows.size, bool)
        for i in range(n_lab):
            covered[indices[indptr[i]:indptr[i + 1]]] = True
        cand = np.zeros(rows.size, bool)
        cand[n_lab:] = True
        covered_before = float(covered.mean()) if rows.size else 1.0
        picks, info = greedy_ball_coverage(indptr, indices, int(budget), cand, covered, rng)
        self._info = {"features": self.features, "delta": float(delta),
                      "delta_rule": "given" if self.delta is not None else f"purity {self.purity:g}",
                      "edges": int(indices.size), "mean_degree": float(indices.size / max(rows.size, 1)),
                      "covered_by_labelled": covered_before, "covered_after": info["covered_fraction"],
                      "random_fill": int(info["random_fill"]), "candidates": int(rows.size - n_lab)}
        return rows[picks]
