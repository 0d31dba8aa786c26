"""FaLA: refit the personal diagonal Λ = diag(θ) of the new model to the old model's logits.

Before a swap the device snapshots its personalized logits ẑ on examples chosen by
correlation clustering of the OLD embeddings; after the swap it runs one frozen forward per
chosen example and solves a ridge problem anchored at θ₀ = 1 (the global model) in closed
form. Nothing but the device's own data and stored logits is used. See ALGORITHMS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.base import CostReport, LocalStrategy, StrategyConfig, TrackState
from strategies.fala.ridge import (
    ANCHORS,
    OBJECTIVES,
    SOLVERS,
    FullRankPersonalMatrix,
    PersonalMatrix,
    parse_lam_grid,
)
from strategies.fala.selection import SELECTORS, select_examples
from strategies.registry import register, register_variant


@dataclass
class FalaConfig(StrategyConfig):
    lam: float = 1e-3  # ridge strength (the system is E Eᵀ + nλ I), used when lam_grid is ""
    # λ per user by closed-form leave-one-out over this grid (mse objective only)
    lam_grid: str = "0.0001 0.001 0.01 0.1 1"
    solver: str = "anchored"  # "anchored" (θ₀ = 1) | "plain" (toward 0) | "adam" (iterative)
    anchor: str = "ones"  # "ones" | "random" (the random-init ablation)
    objective: str = "mse"  # "mse" | "ce-labels" | "ce-distill" | "mse+ce"
    selection: str = "kwikbucks"  # see strategies/fala/selection.py
    max_examples: int = 64
    k_neighbors: int = 5  # strong signal: same label AND top-k cosine neighbour
    edge_rule: str = "and"  # "and" (default) | "or" (the paper's literal wording)
    query_budget: int | None = None
    n_steps: int = 200  # adam solver
    lr: float = 1e-3  # adam solver
    full_rank: bool = False  # full d×d Λ by kernel ridge (ablation)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.selection not in SELECTORS:
            raise ValueError(f"selection must be one of {sorted(SELECTORS)}, got "
                             f"{self.selection!r}")
        if self.edge_rule not in ("and", "or"):
            raise ValueError(f"edge_rule must be 'and' or 'or', got {self.edge_rule!r}")
        if self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {self.max_examples}")
        for option, choices in (("solver", SOLVERS), ("anchor", ANCHORS),
                                ("objective", OBJECTIVES)):
            if getattr(self, option) not in choices:
                raise ValueError(f"{option} must be one of {sorted(choices)}, got "
                                 f"{getattr(self, option)!r}")
        if self.lam_values() is not None and self.objective != "mse":
            raise ValueError(
                f"lam_grid (leave-one-out λ) needs objective 'mse'; for {self.objective!r} set "
                "a fixed λ, e.g. fala.lam-grid= fala.lam=0.001"
            )

    def lam_values(self) -> list[float] | None:
        return parse_lam_grid(self.lam_grid)

    def make_solver(
        self, random_state: int | None = None
    ) -> PersonalMatrix | FullRankPersonalMatrix:
        if self.full_rank:
            return FullRankPersonalMatrix(lam=self.lam, lam_grid=self.lam_values())
        return PersonalMatrix(
            lam=self.lam, anchor=self.anchor, solver=self.solver, objective=self.objective,
            lam_grid=self.lam_values(), n_steps=self.n_steps, lr=self.lr,
            random_state=random_state,
        )


@register("fala", config=FalaConfig)
class Fala(LocalStrategy):
    """Fast Linear Adaptation: refit Λ = diag(θ) to the old model's logits (closed form)."""

    extra_metrics = ("lambda",)

    def before_swap(self, state, old_model, data):
        """Choose examples by the OLD embeddings and keep their old personalized logits (all
        C outputs of each chosen example)."""
        batch = data.finetune
        old_logits = self.predict(state, old_model, data, batch)
        similarity = old_model.design(data, batch).similarity
        seed = int(state.meta.get("seed", 0))
        chosen = select_examples(
            self.config.selection, similarity, batch.labels,
            max_examples=self.config.max_examples, k_neighbors=self.config.k_neighbors,
            edge_rule=self.config.edge_rule, query_budget=self.config.query_budget,
            random_state=seed,
        )
        return state.replace(
            {"selected": chosen.indices.astype(np.int64),
             "old_logits": old_logits[chosen.indices].astype(np.float32)},
            strong_queries=int(chosen.n_strong_queries), clusters=int(chosen.n_clusters),
        )

    def fit(self, state, new_model, data, rng):
        if "selected" not in state.arrays:
            raise RuntimeError("fala.fit needs before_swap first (no snapshot of old logits)")
        cost = CostReport()
        with cost.timed():
            batch = data.finetune.subset(state.arrays["selected"])
            design = new_model.design(data, batch, cost)
            n, n_outputs, dim = design.left.shape
            # every (example, output) is one row of the regression (ALGORITHMS.md)
            old_logits = state.arrays["old_logits"].reshape(-1)
            offset = design.offset.reshape(-1)
            solver = self.config.make_solver(random_state=int(rng.integers(2**31)))
            if self.config.full_rank:
                solver.fit(design.left.reshape(-1, dim), design.right.reshape(-1, dim),
                           old_logits - offset)
                arrays = {"dual_coef": solver.dual_coef_, "support_left": solver.U_,
                          "support_right": solver.V_}
            else:
                targets = new_model.task.label_targets(batch.labels, n_outputs).reshape(-1)
                solver.fit(design.rows.reshape(-1, dim), z=old_logits, y=targets,
                           offset=offset)
                arrays = {"theta": solver.coef_.astype(np.float32)}
        cost.solver_flops = int(solver.solver_flops_)
        cost.examples_used = len(batch)
        cost.strong_queries = int(state.meta.get("strong_queries", 0))
        cost.clusters = int(state.meta.get("clusters", 0))
        cost.fit_error = float(solver.fit_error_)
        cost.extra["lambda"] = float(solver.lam_)
        if self.config.full_rank:  # Λ = I + Δ lives in the dual coefficients
            arrays["theta"] = np.ones(new_model.dim, dtype=np.float32)
        meta = {k: v for k, v in state.meta.items() if k not in ("strong_queries", "clusters")}
        return TrackState(arrays, {**meta, "fitted-version": new_model.version}), cost

    def predict(self, state, model, data, batch, cost=None):
        if "dual_coef" not in state.arrays or state.meta.get("fitted-version") != model.version:
            return super().predict(state, model, data, batch, cost)
        design = model.design(data, batch)
        n, n_outputs, dim = design.left.shape
        solver = FullRankPersonalMatrix(lam=self.config.lam)
        solver.dual_coef_ = state.arrays["dual_coef"]
        solver.U_, solver.V_ = state.arrays["support_left"], state.arrays["support_right"]
        base = solver.predict(design.left.reshape(-1, dim), design.right.reshape(-1, dim))
        return (base + design.offset.reshape(-1)).reshape(n, n_outputs)


register_variant("fala-random-init", "fala", anchor="random",
                 help="FaLA ablation: θ₀ random instead of 1 (anchored solver)")
register_variant("fala-full-rank", "fala", full_rank=True,
                 help="FaLA ablation: full d×d Λ by kernel ridge")
register_variant("fala-all-examples", "fala", selection="all",
                 help="FaLA ablation: every fine-tune example, no clustering")
register_variant("fala-kmeans", "fala", selection="kmeans",
                 help="FaLA ablation: k-means centroids' nearest examples instead of KwikBucks")
register_variant("fala-k", "fala", selection="fala-k",
                 help="FaLA-K: fixed budget of K examples (pivots first, then random)")
