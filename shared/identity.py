"""A model's identity: what made a collection's vectors, recorded with the collection and checked on use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelIdentity:
    """What made a collection's vectors; stored with the collection and compared on every use."""

    name: str
    digest: str  # sha256 of the weights, first 16 hex digits
    dim: int
    clip: dict[str, Any]
    mel: dict[str, Any]
    # {"weight": W, "dims": C} when the vector's last C numbers are the class probabilities appended at weight W
    posterior: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "digest": self.digest, "dim": self.dim, "clip": self.clip, "mel": self.mel}
        return d | ({"posterior": self.posterior} if self.posterior else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(name=d["name"], digest=d["digest"], dim=int(d["dim"]), clip=dict(d["clip"]), mel=dict(d["mel"]),
                   posterior=d.get("posterior"))  # fmt: skip

    def same_vectors(self, other: ModelIdentity) -> bool:
        """Whether the two make the same vectors from the same file (the name may differ)."""
        return (self.digest, self.dim, self.clip, self.mel) == (other.digest, other.dim, other.clip, other.mel)
