"""Untrusted markdown renders to HTML that cannot run script and keeps code."""

from html.parser import HTMLParser

import pytest

from annotation.rendering import render_markdown

PAYLOADS = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    '<svg onload="window.__pwned = 1"></svg>',
    '<a href="javascript:window.__pwned = 1">click</a>',
    "[click](javascript:window.__pwned=1)",
    "[click](JaVaScRiPt:window.__pwned=1)",
    "[click](data:text/html;base64,PHNjcmlwdD4=)",
    '<iframe src="https://evil.example"></iframe>',
    "<style>body{display:none}</style>",
    '<div style="background:url(javascript:x)">x</div>',
    '<form action="https://evil.example"><input name=x></form>',
    "![x](https://tracker.example/pixel.png)",
]

SAFE_TAGS = {"p", "a", "code", "pre", "em", "strong", "br", "ul", "ol", "li", "span"}


class TagCollector(HTMLParser):
    """Collect the real elements and attributes a browser would build."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed_tags(html: str) -> list[tuple[str, dict]]:
    collector = TagCollector()
    collector.feed(html)
    return collector.tags


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_never_becomes_active_markup(payload):
    html = render_markdown(f"Answer:\n\n{payload}\n\ninline {payload} end")
    for tag, attrs in parsed_tags(html):
        assert tag in SAFE_TAGS, html
        assert not any(name.startswith("on") or name == "style" for name in attrs)
        if tag == "a" and "href" in attrs:
            assert attrs["href"].startswith(("http://", "https://", "mailto:")), html


def test_raw_html_is_shown_as_text():
    html = render_markdown("<script>alert(1)</script>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_fenced_code_is_kept_and_escaped():
    html = render_markdown("```python\nif a < b:\n    print('<b>')\n```")
    assert "<pre><code" in html
    assert "if a &lt; b:" in html
    assert "&lt;b&gt;" in html


def test_inline_formatting_lists_and_tables_survive():
    html = render_markdown(
        "**bold** *em* `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )
    for tag in ("<strong>bold</strong>", "<em>em</em>", "<code>code</code>", "<li>"):
        assert tag in html
    assert "<table>" in html and "<td>1</td>" in html


def test_links_get_safe_rel_and_keep_https():
    html = render_markdown("[docs](https://example.org/x)")
    assert 'href="https://example.org/x"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    assert 'target="_blank"' in html  # a click never leaves the task page


def test_empty_and_none_render_to_empty():
    assert render_markdown("") == ""
    assert render_markdown(None) == ""


def test_chat_model_markdown_renders_as_commonmark_with_gfm_tables_and_strike():
    """What chat models write must look the same whichever layout they chose: a
    list right after a line, two-space nesting, code fenced inside a list item."""
    html = render_markdown(
        "Here are the steps:\n- Install\n  - nested\n- Run\n\n"
        "1. Step\n   ```bash\n   export X=1\n   ```\n\n~~old~~ new"
    )
    assert (
        "<p>Here are the steps:</p>\n<ul>\n<li>Install\n<ul>\n<li>nested</li>" in html
    )
    assert '<li>Step<pre><code class="language-bash">export X=1\n</code></pre>' in html
    assert "<s>old</s> new" in html


def test_an_image_shows_its_alt_text_and_is_never_fetched():
    html = render_markdown("See ![a cat on a mat](https://tracker.example/cat.png).")
    assert "[image: a cat on a mat]" in html
    assert "tracker.example" not in html and "<img" not in html
