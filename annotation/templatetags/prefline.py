"""Template filters: safe markdown and readable statistics (`nan` shows as a dash)."""

import math

from django import template
from django.utils.html import format_html

from annotation.rendering import render_markdown
from annotation.stats import Proportion

register = template.Library()

MISSING = "—"


@register.filter(name="markdown")
def markdown_filter(text: str):
    """Render untrusted markdown through the sanitizer (see `annotation.rendering`)."""
    return render_markdown(text)


@register.filter
def number(value, digits: int = 2) -> str:
    """Format a float with `digits` decimals; `None`/`nan` become a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{int(digits)}f}"


@register.filter
def percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{100 * value:.0f}%"


@register.filter
def proportion(value: Proportion):
    """`72% [61–81%] n=40` with the interval as a tooltip-free, readable suffix."""
    if value is None or value.n == 0:
        return format_html('<span class="muted" title="no data">{}</span>', MISSING)
    return format_html(
        '{} <span class="ci">[{}–{}]</span> <span class="muted">n={}</span>',
        percent(value.rate),
        percent(value.low),
        percent(value.high),
        value.n,
    )
