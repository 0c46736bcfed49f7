"""Markdown to sanitized HTML for untrusted text (model output, prompts, guidelines).

The text is rendered with Python-Markdown with its raw-HTML processors removed (so
`<script>` in the source shows as text, and fenced code stays code), then cleaned
with `nh3` (ammonia) against an allow-list: no script or style elements, no
event-handler attributes, no `javascript:` or `data:` URLs, no images (an image URL
in model output would make the annotator's browser fetch it); links get
`rel="noopener noreferrer nofollow"`. Two independent layers, so a bug in one still
leaves no way to run script.
"""

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "th": {"align"},
    "td": {"align"},
    "abbr": {"title"},
}
ALLOWED_URL_SCHEMES = {"http", "https", "mailto"}
MARKDOWN_EXTENSIONS = ["fenced_code", "tables", "sane_lists", "nl2br"]


def render_markdown(text: str) -> SafeString:
    """Render untrusted markdown to HTML that is safe to insert into a page.

    A new `Markdown` instance per call: instances keep state and are not thread-safe.
    """
    md = markdown.Markdown(extensions=MARKDOWN_EXTENSIONS)
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return mark_safe(sanitize_html(md.convert(text or "")))


def sanitize_html(fragment: str) -> str:
    """Strip everything outside the allow-list from an HTML fragment."""
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
