"""Markdown to sanitized HTML for untrusted text (model output, prompts, guidelines).

The text is rendered as CommonMark with GitHub's tables and strikethrough (what
chat models write: a list right after a line of text, lists nested by two spaces,
code fenced inside a list item), with raw HTML disabled (so `<script>` in the source
shows as text, and fenced code stays code), and line breaks kept. Two responses in
the same markdown must look alike, or annotators judge the renderer. An image shows
as its alt text in brackets, never fetched (an image URL in model output would make
the annotator's browser fetch it). Then `nh3` (ammonia) cleans the HTML against an
allow-list: no script or style elements, no event-handler attributes, no
`javascript:` or `data:` URLs; links get `rel="noopener noreferrer nofollow"` and
open in a new tab (so a click never leaves the task). Two independent layers, so a
bug in one still leaves no way to run script.
"""

from html import escape

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

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
    "s",  # strikethrough (~~text~~)
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


def _image_as_text(renderer, tokens, index, options, env) -> str:
    alt = renderer.renderInlineAsText(tokens[index].children or [], options, env)
    return f"<span>[image: {escape(alt or 'no description')}]</span>"


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_text)
    return md


_MARKDOWN = _parser()  # markdown-it keeps no state between renders


def render_markdown(text: str) -> SafeString:
    """Render untrusted markdown to HTML that is safe to insert into a page."""
    return mark_safe(sanitize_html(_MARKDOWN.render(text or "")))


def sanitize_html(fragment: str) -> str:
    """Strip everything outside the allow-list from an HTML fragment."""
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
