"""Who is the agent and who is the customer.

Three rules, strongest first: a channel map (stereo recordings and two-track media streams
carry each party on its own channel); an enrolled agent voice print matched against the call's
speakers; a stated rule that the first speaker heard is the agent (inbound calls answered with a
greeting) or the customer (outbound calls answered with "hello?"). With none of them, or when
the voice match is not clear, the role is `unknown`: a wrong label is worse than none.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from .events import Role


class RoleConfig(BaseModel):
    channel_roles: list[Role] = Field(
        default_factory=lambda: ["agent", "customer"],
        description="stereo: role of channel 0, 1, ...",
    )
    first_speaker: Role | None = Field(None, description="mono: role of the first voice heard")
    agent_voice: list[float] | None = Field(None, description="enrolled agent voice print")
    agent_match: float = Field(0.25, description="max cosine distance to the enrolled voice")
    agent_margin: float = Field(0.05, description="how much closer than any other speaker")


def opposite(role: Role) -> Role:
    return {"agent": "customer", "customer": "agent"}.get(role, "unknown")  # type: ignore[return-value]


class RoleAssigner:
    """Roles of the diarized speakers of one mono call; a decided role never changes."""

    def __init__(self, config: RoleConfig) -> None:
        self.config = config
        self._decided: dict[str, Role] = {}

    def channel_role(self, channel: int) -> Role:
        roles = self.config.channel_roles
        return roles[channel] if channel < len(roles) else "unknown"

    def role(self, speaker: str | None, speakers: list[str], centroids: list[np.ndarray]) -> Role:
        role = self.guess(speaker, speakers, centroids)
        if speaker is not None and role != "unknown":
            self._decided[speaker] = role
        return role

    def guess(self, speaker: str | None, speakers: list[str], centroids: list[np.ndarray]
              ) -> Role:
        """The role as things stand, without deciding it for good (a provisional final)."""
        if speaker is None:
            return "unknown"
        if speaker in self._decided:
            return self._decided[speaker]
        cfg = self.config
        role: Role = "unknown"
        if cfg.agent_voice is not None and centroids:
            voice = np.asarray(cfg.agent_voice, dtype=np.float32)
            voice /= np.linalg.norm(voice)
            distances = [1.0 - float(voice @ c) for c in centroids]
            best = int(np.argmin(distances))
            others = [d for i, d in enumerate(distances) if i != best]
            clear = distances[best] <= cfg.agent_match and all(
                d - distances[best] >= cfg.agent_margin for d in others
            )
            if clear:
                role = "agent" if speakers[best] == speaker else "customer"
        elif cfg.first_speaker is not None and speakers:
            role = cfg.first_speaker if speaker == speakers[0] else opposite(cfg.first_speaker)
        return role
