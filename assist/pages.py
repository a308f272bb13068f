"""The people's pages of `callwise serve`: login, the agent's sidebar, the supervisor's live list.

Plain files in assist/static (no build step, nothing from a CDN), served with a strict
Content-Security-Policy: scripts and styles from this origin only, no inline code. The sidebar
(and the login it falls back to) may be framed by the origins in CALLWISE_FRAME_ANCESTORS, the
contact center's agent desktop; every other page refuses to be framed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")
_HTML = "text/html; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_BASE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
             "img-src 'self' data:; base-uri 'none'; form-action 'self'")
EMBEDDABLE = frozenset({"/sidebar", "/login"})


@dataclass(frozen=True)
class Pages:
    files: dict[str, tuple[str, str]]  # URL -> (file in STATIC_DIR, content type)

    def load(self, static_dir: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
        """URL -> (body, content type), read once at start-up."""
        return {url: ((static_dir / name).read_bytes(), ctype)
                for url, (name, ctype) in self.files.items()}


PAGES = Pages({
    "/login": ("login.html", _HTML),
    "/sidebar": ("sidebar.html", _HTML),
    "/live": ("live.html", _HTML),
    "/app/common.js": ("common.js", _JS),
    "/app/login.js": ("login.js", _JS),
    "/app/sidebar.js": ("sidebar.js", _JS),
    "/app/live.js": ("live.js", _JS),
    "/app/callwise.css": ("callwise.css", _CSS),
})


def page_csp(frame_ancestors: list[str] | None = None) -> str:
    """The policy of a page; `frame_ancestors` None: it may not be framed at all."""
    if frame_ancestors is None:
        return f"{_BASE_CSP}; frame-ancestors 'none'"
    sources = " ".join(["'self'", *frame_ancestors])
    return f"{_BASE_CSP}; frame-ancestors {sources}"


def csp_for(path: str, frame_ancestors: list[str]) -> str:
    return page_csp(frame_ancestors if path in EMBEDDABLE else None)
