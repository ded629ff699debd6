"""Token heatmaps: one coloured box per prompt token, shaded by the token's contribution to the answer.

A contribution ``C(x_i, y) = LP(x, y) - LP(x without x_i, y)`` is positive when the token helps the model
produce the answer and negative when it works against it. Positive values blend from white towards a
warm hue, negative ones towards a cool hue, with intensity ``|C| / scale``. Two heatmaps drawn with the
same ``scale`` (one item before and after unlearning) can therefore be compared token by token.

The colour helpers are shared by the HTML report and the console (`unpact attribute`) so that both
show the same picture.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from markupsafe import escape

POSITIVE_RGB = (214, 69, 40)  # vermilion: the token supports the answer
NEGATIVE_RGB = (37, 99, 199)  # blue: the token works against the answer
_WHITE = (255, 255, 255)
_DARK_TEXT, _LIGHT_TEXT = "#1a1a1a", "#ffffff"
# Background luminance below which white text contrasts better than _DARK_TEXT (WCAG contrast ratios
# of the two choices are equal at about 0.2).
_LIGHT_TEXT_BELOW = 0.2

# Style rules a page needs around `token_heatmap_html` output; the report embeds them in its <style>.
HEATMAP_CSS = """
.heatmap { white-space: pre-wrap; word-break: break-word; line-height: 2;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9rem; }
.heatmap .tok { border-radius: 3px; padding: 2px 0; }
.heatmap .tok.key { font-weight: 700; text-decoration: underline; text-decoration-thickness: 2px;
  outline: 1px solid #222; }
"""


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is undefined (JSON null, NaN or infinite)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def shared_scale(*contributions: Iterable[float | None]) -> float:
    """The largest ``|C|`` over all the given lists, to draw them on one scale.

    Returns 1.0 when every value is zero or undefined, so callers can always divide by the result.
    """
    peak = max(
        (abs(v) for values in contributions for v in map(_finite, values) if v is not None),
        default=0.0,
    )
    return peak if peak > 0 else 1.0


def intensity(value: float | None, scale: float) -> float:
    """``|value| / scale`` clamped to [0, 1]; 0 for an undefined value."""
    if not scale > 0:
        raise ValueError(f"heatmap scale must be positive, got {scale}")
    v = _finite(value)
    return 0.0 if v is None else min(abs(v) / scale, 1.0)


def _rgb(value: float | None, scale: float) -> tuple[int, int, int]:
    t = intensity(value, scale)
    hue = NEGATIVE_RGB if (_finite(value) or 0.0) < 0 else POSITIVE_RGB
    r, g, b = (round(w + t * (h - w)) for w, h in zip(_WHITE, hue, strict=True))
    return r, g, b


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def colour(value: float | None, scale: float) -> str:
    """Background colour (``#rrggbb``) for a contribution: white at 0, the full hue at ``|value| >= scale``."""
    r, g, b = _rgb(value, scale)
    return f"#{r:02x}{g:02x}{b:02x}"


def text_colour(value: float | None, scale: float) -> str:
    """Foreground colour that stays readable on ``colour(value, scale)``."""
    return _LIGHT_TEXT if _luminance(_rgb(value, scale)) < _LIGHT_TEXT_BELOW else _DARK_TEXT


def split_leading_space(token: str) -> tuple[str, str]:
    """Split a decoded token into (leading whitespace, rest).

    Heatmaps draw the whitespace outside the coloured box so word boundaries stay visible. A token
    that is nothing but whitespace keeps it inside, or its box would be empty and impossible to hover.
    """
    body = token.lstrip()
    if not body:
        return "", token
    return token[: len(token) - len(body)], body


def validate_heatmap(
    tokens: Sequence[str], contributions: Sequence[float | None], key: Iterable[int] = ()
) -> frozenset[int]:
    """Check that a heatmap's inputs line up; return the KeyToken positions as a set.

    Raises ValueError when there is not one contribution per token or a KeyToken index is out of range.
    """
    if len(tokens) != len(contributions):
        raise ValueError(f"{len(tokens)} tokens but {len(contributions)} contributions")
    keys = frozenset(key)
    stray = sorted(i for i in keys if not 0 <= i < len(tokens))
    if stray:
        raise ValueError(f"KeyToken indices {stray} out of range for {len(tokens)} tokens")
    return keys


def token_heatmap_html(
    tokens: Sequence[str],
    contributions: Sequence[float | None],
    key: Iterable[int] = (),
    scale: float | None = None,
) -> str:
    """Render a prompt as an HTML heatmap: ``<div class="heatmap">`` with one ``<span>`` per token.

    ``key`` holds the positions of KeyTokens (drawn bold, underlined and outlined). ``scale`` is the
    ``|C|`` drawn at full intensity; it defaults to the largest ``|C|`` among ``contributions``, so
    pass `shared_scale` over several heatmaps to make them comparable. Each span's tooltip gives the
    exact contribution. Tokens are HTML-escaped; the page needs `HEATMAP_CSS`.
    """
    keys = validate_heatmap(tokens, contributions, key)
    if scale is None:
        scale = shared_scale(contributions)
    spans = "".join(
        _token_span(token, value, i in keys, scale)
        for i, (token, value) in enumerate(zip(tokens, contributions, strict=True))
    )
    return f'<div class="heatmap">{spans}</div>'


def _token_span(token: str, value: float | None, is_key: bool, scale: float) -> str:
    lead, body = split_leading_space(token)
    v = _finite(value)
    title = "C = –" if v is None else f"C = {v:+.4f}"
    if is_key:
        title += " · KeyToken"
    css_class = "tok key" if is_key else "tok"
    style = f"background:{colour(value, scale)};color:{text_colour(value, scale)}"
    return (
        f'{escape(lead)}<span class="{css_class}" style="{style}" title="{escape(title)}">'
        f"{escape(body)}</span>"
    )
