"""The removal's settings, in one frozen object: how much of each patch is subtracted and what
is added back (Eq. 19/21 with the class prior, the rule's scale and a class offset).

``z = log M(x) - strength * sum_j (G'_j(x) - [keep] log pi_j) + offset``, fair = softmax(z),

where ``G'_j = scales[j] * (log G_j - log pi_j) + log pi_j`` is patch j with its bias-dependent
part scaled (:func:`ruleeraser.rule_scale.scale_rule`), ``pi_j`` the class prior it holds, and
``[keep]`` is 1 for ``prior="keep"`` (the model keeps its own class prior) and 0 for
``"balanced"`` (the paper's Eq. 19, which removes the prior with the bias). ``offset`` is a
log-space shift per class (a decision threshold for two classes). The eraser, the fair proxy
and the goal's choice (:mod:`ruleeraser.choice`) all apply a :class:`Removal`;
:func:`ruleeraser.remove.remove_log` computes the combine.

Example
-------
>>> import numpy as np
>>> removal = Removal(strength=1.0, prior="balanced", scales=(1.0,), offset=(0.0, 0.0))
>>> log_model, log_patch = np.log([[0.9, 0.1]]), np.log([[0.9, 0.1]])
>>> removal.apply(log_model, [log_patch], np.log([[0.5, 0.5]])).round(3)
array([[0.5, 0.5]])
>>> removal.replace(strength=0.0).apply(log_model, [log_patch], np.log([[0.5, 0.5]])).round(3)
array([[0.9, 0.1]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ruleeraser.remove import remove_log
from ruleeraser.rule_scale import scale_rule

Prior = Literal["balanced", "keep"]
PRIORS = ("balanced", "keep")


@dataclasses.dataclass(frozen=True)
class Removal:
    """What the removal subtracts and adds back (see the module's docstring).

    Attributes
    ----------
    strength: how much of the patches is subtracted (0: the model itself; 1: Eq. 19).
    prior: ``"balanced"`` (Eq. 19: the class prior goes with the bias) or ``"keep"``.
    scales: per patch, the scale of its bias-dependent part (1: the paper's patch).
    offset: per class, a log-space shift added before the softmax (zeros: none).
    """

    strength: float
    prior: Prior
    scales: tuple[float, ...]
    offset: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"strength must be a finite number >= 0; got {self.strength}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}; got {self.prior!r}")
        if not all(np.isfinite(s) and s >= 0 for s in self.scales):
            raise ValueError(f"scales must be finite numbers >= 0; got {list(self.scales)}")
        if not all(np.isfinite(o) for o in self.offset):
            raise ValueError(f"offset must be finite numbers; got {list(self.offset)}")

    @classmethod
    def plain(cls, strength: float, prior: Prior, scales: Sequence[float], k: int) -> Removal:
        """A removal without an offset, from an eraser's parameters."""
        scales = tuple(float(s) for s in scales)
        return cls(float(strength), prior, scales, (0.0,) * k)

    def replace(self, **changes: Any) -> Removal:
        """A copy with ``changes`` (e.g. another ``strength``)."""
        return dataclasses.replace(self, **changes)

    def scale_patches(
        self, log_patches: Sequence[np.ndarray], log_priors: np.ndarray | None
    ) -> list[np.ndarray]:
        """Each ``log G_j`` with its bias-dependent part at ``scales[j]`` (``log_priors``
        may be None where every scale is 1)."""
        if all(s == 1.0 for s in self.scales):
            return [np.asarray(log_g, np.float64) for log_g in log_patches]
        return [
            scale_rule(log_g, log_priors[j], s) if s != 1.0 else np.asarray(log_g, np.float64)
            for j, (log_g, s) in enumerate(zip(log_patches, self.scales, strict=True))
        ]

    def combine(
        self, log_model: np.ndarray, scaled: Sequence[np.ndarray], log_priors: np.ndarray | None
    ) -> np.ndarray:
        """Fair probabilities from ``log M`` and the already scaled patches."""
        if self.prior == "keep" and log_priors is None:
            raise ValueError(
                "prior='keep' needs the class prior the patches hold, which this eraser lacks "
                "(saved before it was recorded): fit it again, or use prior='balanced'"
            )
        return remove_log(
            log_model,
            *scaled,
            strength=self.strength,
            log_prior=log_priors if self.prior == "keep" else None,
            offset=self.offset if any(self.offset) else None,
        )

    def apply(
        self, log_model: np.ndarray, log_patches: Sequence[np.ndarray], log_priors: np.ndarray
    ) -> np.ndarray:
        """Fair probabilities from ``log M`` and the patches as distilled (unscaled)."""
        return self.combine(log_model, self.scale_patches(log_patches, log_priors), log_priors)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        return {
            "strength": self.strength,
            "prior": self.prior,
            "scales": list(self.scales),
            "offset": list(self.offset),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Removal:
        """Back from :meth:`to_dict` (``ValueError`` naming a bad field)."""
        fields = ("strength", "prior", "scales", "offset")
        if not isinstance(data, dict) or sorted(data) != sorted(fields):
            raise ValueError(f"a removal is an object of {list(fields)}; got {data!r}")
        return cls(
            float(data["strength"]),
            data["prior"],
            tuple(float(s) for s in data["scales"]),
            tuple(float(o) for o in data["offset"]),
        )
