"""The personalized reward model: the one definition of the network.

Imports torch at module level, so only worker code paths import this module
(lazily, inside functions). A checkpoint is a dict with the state dict *and* the
constructor config, backbone key and target normalisation (nanoGPT style):
``TasteModel.from_checkpoint`` rebuilds it without re-declaring anything.

Score of annotator a for an image with (standardised) embedding x, in that
annotator's normalised units::

    s(a, x) = exp(log_scale_a) * (pop(x) + u_a · P x) + bias_a
    u_a     = D demographics_a + delta_a

``pop`` is the population component (an MLP), ``P`` maps the embedding into a
low-rank taste space (linear plus a non-linear path through the shared trunk),
``u_a`` is the annotator's taste vector: a demographic prior
``D`` plus a learned offset. An unseen annotator gets ``u = D demographics`` (cold
start; zero without demographics, i.e. the population), and
``rewardmodel.adapt.adapt_taste`` fits ``u`` from k ratings in closed form
(ridge towards that prior).
External population scores train ``pop`` through a per-source affine calibration.
"""

from __future__ import annotations

import torch
from torch import nn


class TasteModel(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        n_annotators: int,
        n_demographics: int = 0,
        n_sources: int = 0,
        rank: int = 16,
        hidden: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.config = {
            "dim": dim,
            "n_annotators": n_annotators,
            "n_demographics": n_demographics,
            "n_sources": n_sources,
            "rank": rank,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        # A shared non-linear trunk feeds both the population score and the taste
        # space; the linear ``project`` path keeps the taste space close to the
        # embedding when data are scarce.
        self.trunk = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.population = nn.Linear(hidden, 1)
        self.taste_head = nn.Linear(hidden, rank, bias=False)
        self.project = nn.Linear(dim, rank, bias=False)
        self.taste = nn.Embedding(max(n_annotators, 1), rank)
        self.bias = nn.Embedding(max(n_annotators, 1), 1)
        self.log_scale = nn.Embedding(max(n_annotators, 1), 1)
        self.demo = nn.Linear(max(n_demographics, 1), rank, bias=False)
        self.register_buffer(
            "demographics", torch.zeros(max(n_annotators, 1), max(n_demographics, 1))
        )
        self.source_scale = nn.Parameter(torch.ones(max(n_sources, 1)))
        self.source_bias = nn.Parameter(torch.zeros(max(n_sources, 1)))
        for emb in (self.taste, self.bias, self.log_scale):
            nn.init.zeros_(emb.weight)
        nn.init.zeros_(self.demo.weight)

    # -- pieces ---------------------------------------------------------------

    def image_features(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(population score, taste-space projection) per image."""
        x = (emb - self.feat_mean) / self.feat_std
        h = self.trunk(x)
        return self.population(h).squeeze(-1), self.project(x) + self.taste_head(h)

    def prior_taste(self, demo: torch.Tensor) -> torch.Tensor:
        return self.demo(demo)

    def taste_vectors(self, ann: torch.Tensor) -> torch.Tensor:
        return self.taste(ann) + self.prior_taste(self.demographics[ann])

    def score(
        self, pop: torch.Tensor, z: torch.Tensor, ann: torch.Tensor
    ) -> torch.Tensor:
        u = self.taste_vectors(ann)
        raw = pop + (u * z).sum(-1)
        return torch.exp(self.log_scale(ann).squeeze(-1)) * raw + self.bias(
            ann
        ).squeeze(-1)

    def forward(self, emb: torch.Tensor, ann: torch.Tensor) -> torch.Tensor:
        pop, z = self.image_features(emb)
        return self.score(pop, z, ann)

    def external(self, emb: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        pop, _ = self.image_features(emb)
        return self.source_scale[src] * pop + self.source_bias[src]

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self, **extra) -> dict:
        return {
            "state_dict": self.state_dict(),
            "model_config": dict(self.config),
            **extra,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TasteModel:
        model = cls(**ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        return model
