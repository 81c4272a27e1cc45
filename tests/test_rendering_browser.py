"""A reply shows as the model wrote it, in JupyterLab and in the panel, in a real (headless) Chromium.

A loopback server in this test speaks the OpenAI chat API and streams one fixed reply; the notebook
connects to it with ``%exaone connect`` and asks in a ``%%exaone`` cell, so the text goes through
the real path: the remote engine, the cell renderer, JupyterLab's Markdown and MathJax, and the
panel. The reply mixes what a renderer likes to eat (prices and shell variables with ``$``, HTML
tags, a 150-character URL) with Markdown structure and real math. The checks read the page:
the text is there as written, the math is typeset, no tag was rendered, the URL fits the cell.
The saved notebook is then opened again untrusted (JupyterLab sanitizes its HTML) and checked the
same way. Notebook 7 (the ``notebook`` package, a test dependency) gets the same checks. Fast
tests of the Markdown and the panel's HTML come first. Screenshots land in ``artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from browser_helpers import (
    VISIBLE_NOTEBOOK,
    JupyterLab,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_cells_done,
    write_notebook,
)
from exaone_jupyter.chat.conversation import Conversation
from exaone_jupyter.ui import code_blocks
from exaone_jupyter.ui.markup import markdown_html
from exaone_jupyter.ui.render import as_written, code_block, reply_markdown
from exaone_jupyter.ui.reports import history_markdown

MODEL = "exaone-3.0-test"
URL = ("https://example.com/search?q=" + "0123456789abcdefghij" * 8)[:150]  # no break in it
REPLY = f"""Prices: a coffee costs $5 and a cake $10.

Shell: use $HOME and $PATH, e.g. `echo $HOME`.

- **bold** item
- *italic* item

| item | price |
|------|-------|
| tea  | $3    |

Use the <b> tag for bold; <script>alert(1)</script> stays text.

Display: $$E=mc^2$$

Inline: \\(a^2+b^2=c^2\\) and bracketed: \\[\\int_0^1 x\\,dx = \\frac{{1}}{{2}}\\]

```python
print("$5 <b>")
```

Read {URL} for more."""
LITERAL = [
    "$5 and a cake $10",
    "$HOME and $PATH",
    "echo $HOME",
    "Use the <b> tag",
    "<script>alert(1)</script>",
    'print("$5 <b>")',
    URL,
]
MATH = 3  # $$E=mc^2$$, \(a^2+b^2=c^2\), \[\int_0^1 x\,dx = \frac{1}{2}\]
TIMEOUT_MS = 60_000

assert len(URL) == 150


# -- the Markdown itself (no browser) --------------------------------------------------------------
MATH_SPAN = '<span class="mathjax_process tex2jax_process">'
NO_MATH = (
    '<div class="mathjax_ignore tex2jax_ignore" '
    'style="overflow-wrap:break-word;overflow-wrap:anywhere">'
)


@pytest.mark.parametrize(
    "text, markdown, wrap",
    [
        ("A coffee costs $5 and a cake $10.", r"A coffee costs \$5 and a cake \$10.", True),
        ("Use $HOME and $PATH", r"Use \$HOME and \$PATH", True),
        ("$$E=mc^2$$", MATH_SPAN + "$$E=mc^2$$</span>", True),
        (r"\(a^2+b^2=c^2\)", MATH_SPAN + r"\\(a^2+b^2=c^2\\)</span>", True),
        (r"so \[x_1 * y_1\] holds", "so " + MATH_SPAN + r"\\[x_1 * y_1\\]</span> holds", True),
        (r"\begin{align}a&=b\end{align}", MATH_SPAN + r"\begin{align}a&=b\end{align}</span>", True),
        ("Use the <b> tag", r"Use the \<b> tag", False),
        ("<script>alert(1)</script>", r"\<script>alert(1)\</script>", False),
        ("&amp; and &#36; and AT&T", r"\&amp; and \&#36; and AT&T", False),
        ("Read " + URL, "Read " + URL, True),  # kept; the block lets it wrap
        # code is verbatim: Markdown shows it literally, and no frontend typesets it
        ("`$HOME` and `a<b` cost $1", r"`$HOME` and `a<b` cost \$1", True),
        ("``a ` $b``", "``a ` $b``", False),
        ("```sh\necho $HOME <b>\n```\n$5", "```sh\necho $HOME <b>\n```\n\\$5", True),
        ("~~~\n$x\n", "~~~\n$x\n", False),  # still open: still code
        # a fence in a list item sits at the item's indentation: still code, blank lines and all
        (
            "1. Run:\n\n    ```sh\n    a=$1\n\n    echo $HOME <b>\n    ```\n2. It costs $5",
            "1. Run:\n\n    ```sh\n    a=$1\n\n    echo $HOME <b>\n    ```\n2. It costs \\$5",
            True,
        ),
        ("- a\n  - b:\n    ~~~\n    $x\n    ~~~", "- a\n  - b:\n    ~~~\n    $x\n    ~~~", False),
        # a line further left ends the item and its block; a fence there opens a block of its own
        ("1. Run:\n    ```\n    $x\nThen $5", "1. Run:\n    ```\n    $x\nThen \\$5", True),
        ("1. Run:\n    ```\n    $x\n```\n$5", "1. Run:\n    ```\n    $x\n```\n$5", False),
        # four spaces after a blank line: an indented code block, unless a list came first
        (
            "Run:\n\n    echo $HOME <b>\n\nIt costs $5",
            "Run:\n\n    echo $HOME <b>\n\nIt costs \\$5",
            True,
        ),
        ("- Run:\n\n    it costs $5 <b>", "- Run:\n\n    it costs \\$5 \\<b>", True),
        ("Run:\n    it costs $5", "Run:\n    it costs \\$5", True),  # no blank line: prose
        ("```\na\n```\n    $b <c>", "```\na\n```\n    $b <c>", False),  # after a fence: code
        # the model's own escapes stay Markdown escapes; a lone \( keeps its backslash
        (r"\*not bold\* and \$5", r"\*not bold\* and \$5", True),
        (r"a lone \( here", r"a lone \\( here", False),
        ("$$ not closed", r"\$\$ not closed", True),
        ("$$a\n\nb$$", "\\$\\$a\n\nb\\$\\$", True),  # math stays within a paragraph
        (
            "**bold**, *italic*, 1. lists, | tables |",
            "**bold**, *italic*, 1. lists, | tables |",
            False,
        ),
    ],
)
def test_markdown_keeps_what_the_model_wrote(text, markdown, wrap):
    assert as_written(text) == (markdown, wrap)


def test_reply_markdown_wraps_only_replies_that_need_it():
    plain = "Seoul is the capital.\n\n- one\n- two"
    assert reply_markdown(plain, finish_reason="stop") == plain  # unchanged: plain Markdown
    assert reply_markdown("Use <b>", live=True) == r"Use \<b>▌"
    assert reply_markdown("It costs $5", live=True) == f"{NO_MATH}\n\nIt costs \\$5▌\n\n</div>"
    assert reply_markdown("```sh\necho $HOME", finish_reason="interrupted") == (
        "```sh\necho $HOME\n```\n\n*⏹ interrupted*"
    )
    markdown = reply_markdown("ok", "cost $5", finish_reason="stop")  # the reasoning needs it
    assert markdown.startswith(NO_MATH) and "cost \\$5" in markdown and markdown.endswith("</div>")
    markdown = reply_markdown("It costs $5", finish_reason="interrupted")  # the note comes last
    assert markdown == f"{NO_MATH}\n\nIt costs \\$5\n\n</div>\n\n*⏹ interrupted*"


@pytest.mark.parametrize(
    "text, fence",
    [("a = 1", "```"), ("```sh\necho $5\n```", "````"), ("a ````` b", "``````")],
)
def test_code_block_fence_outruns_the_backticks_in_the_text(text, fence):
    assert code_block(text, "text") == f"{fence}text\n{text}\n{fence}"


def test_history_shows_each_message_as_a_reply_is_shown():
    conversation = Conversation(
        system="Answer with prices in $.",
        messages=[
            {"role": "user", "content": "Is <b>bold</b> ok?", "cell": "c1", "run": 3},
            {"role": "assistant", "content": "```sh\necho $HOME", "interrupted": True},
            {"role": "user", "content": "It costs $5 and $10."},
        ],
    )
    assert history_markdown(conversation) == (
        f"**system**:\n\n{NO_MATH}\n\nAnswer with prices in \\$.\n\n</div>\n\n"
        "**user** *(cell In [3])*:\n\nIs \\<b>bold\\</b> ok?\n\n"
        "**assistant** *(interrupted)*:\n\n```sh\necho $HOME\n```\n\n"
        f"**user**:\n\n{NO_MATH}\n\nIt costs \\$5 and \\$10.\n\n</div>"
    )


def test_nbconvert_html_shows_the_reply_as_written():
    """The saved output, in nbconvert's HTML (MathJax 2 reads the tex2jax_ classes)."""
    import nbconvert
    import nbformat

    cell = nbformat.v4.new_code_cell("%%exaone\nShow me the tricky text.")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/markdown": reply_markdown(REPLY, finish_reason="stop"),
                "text/plain": REPLY,
            },
        )
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    page, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    ignored = page[page.index(NO_MATH) :]
    assert "costs $5 and a cake $10" in ignored and "use $HOME and $PATH" in ignored
    assert "Use the &lt;b&gt; tag" in ignored and "&lt;script&gt;alert(1)&lt;/script&gt;" in ignored
    assert "<script>alert" not in page and "<b>" not in ignored
    assert f"{MATH_SPAN}$$E=mc^2$$</span>" in ignored
    assert f"{MATH_SPAN}$a^2+b^2=c^2$</span>" in ignored  # mistune's math: MathJax 2 typesets it
    assert "<table>" in ignored and "<li><strong>bold</strong> item</li>" in ignored


def test_panel_html_shows_the_reply_as_written():
    """The panel's own Markdown: escaped first, so tags are text and ``$`` stays; math as written."""
    out = markdown_html(REPLY)
    assert "costs $5 and a cake $10" in out and "use $HOME and $PATH" in out
    assert "Use the &lt;b&gt; tag" in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<b>" not in out and "<script" not in out
    math = "<span class='exaone-math mathjax_process tex2jax_process'"
    assert out.count(math) == 3 and r"\(a^2+b^2=c^2\)</span>" in out
    assert "<li><strong>bold</strong> item</li><li><em>italic</em> item</li>" in out
    assert "<th" in out and ">tea</td>" in out and ">$3</td>" in out
    assert "<code>print(&quot;$5 &lt;b&gt;&quot;)</code></pre>" in out
    nested = markdown_html("1. one\n2. two\n   - a *b*\n   - `c*d*`\n3. three\n\n> quoted")
    assert nested.count("<ol") == 1 and nested.count("<ul") == 1
    assert (
        "<li>a <em>b</em></li>" in nested
        and ">c*d*</code></li></ul></li><li>three</li></ol>" in nested
    )
    assert "quoted</p></div>" in nested
    assert "<em>" not in markdown_html(r"\(a*b*c\) and $$x *y* z$$")  # math is left alone


def test_panel_html_shows_a_list_items_code_block_as_code():
    """A fence indented with its list item opens a block, as in the cell, less that indent."""
    out = markdown_html('1. Run this:\n\n    ```bash\n    echo "$5"\n      two\n    ```\n2. Done')
    assert "<code>echo &quot;$5&quot;\n  two</code></pre>" in out
    assert "bash" not in out and "<li>Done</li>" in out


PRE = "<pre style='{}'><code>".format(
    "background:rgba(127,127,127,0.12);border-radius:4px;padding:6px 8px;margin:4px 0;"
    "white-space:pre-wrap;font-size:0.92em"
)


@pytest.mark.parametrize(
    "text, shown",
    [
        # indented code, blank lines and all, less its four spaces (or tab)
        (
            "Run:\n\n    a = $1 <b>\n\n\n\tb = 2\n\nDone",
            ["Run:", "a = $1 &lt;b&gt;\n\n\nb = 2", "Done"],
        ),
        ("```\na\n```\n    b", ["a", "b"]),  # after a closing fence too
        ("Run:\n    b", ["Run:<br>    b"]),  # no blank line: the paragraph goes on
        ("- Run:\n\n    b", ["Run:", "    b"]),  # in a list: the item's text, not code
        # a line further left ends the list item, and the block the item held
        ("1. Run:\n    ```\n    $x\nThen $5", ["Run:", "$x", "Then $5"]),
        ("~~~\na\n```\n", ["a\n```\n"]),  # only its own kind of fence closes a block
    ],
)
def test_panel_shows_code_where_the_cell_does(text, shown):
    """The panel's blocks are the lines the cell keeps as code (``as_written``'s cases above),
    less their fences and the indentation that made them code; the rest is its prose."""
    out = markdown_html(text)
    blocks = re.findall(re.escape(PRE) + r"(.*?)</code></pre>", out, re.S)
    prose = re.findall(r"(?:<p [^>]*>|<li>)(.*?)</(?:p|li)>", out, re.S)
    assert sorted(blocks + prose) == sorted(shown)
    assert len(blocks) == sum(code for code, _ in code_blocks.runs(text))


class _Handler(BaseHTTPRequestHandler):
    """/v1/models lists one model; /v1/chat/completions streams REPLY in small pieces."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(
                {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]}
            )
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions" or not request.get("stream"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        pieces = [REPLY[i : i + 12] for i in range(0, len(REPLY), 12)]
        for i, piece in enumerate(pieces + [""]):
            last = i == len(pieces)
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "delta": {} if last else {"content": piece},
                        "finish_reason": "stop" if last else None,
                    }
                ],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)  # a few live updates on the way
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def stub_server():
    """The URL of this module's loopback stub of the OpenAI chat API."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _check_rendered(page, output, name: str) -> None:
    """The reply ``output`` shows every literal text, the math typeset, no tag rendered, the URL
    wrapped inside the cell; then a screenshot."""
    output.locator("mjx-container").nth(MATH - 1).wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)  # MathJax settles
    text = output.inner_text()
    for literal in LITERAL:
        assert literal.replace(" ", "") in text.replace(" ", "").replace("\n", ""), literal
    assert output.locator("mjx-container").count() == MATH  # no price or variable became math
    assert output.locator("b, script").count() == 0
    assert output.locator("strong").filter(has_text="bold").count() == 1
    assert output.locator("em").filter(has_text="italic").count() == 1
    assert output.locator("li").count() == 2 and output.locator("table td").count() == 2
    assert output.locator("pre code").filter(has_text='print("$5 <b>")').count() == 1
    url = output.locator("a", has_text=URL[:40])
    assert url.count() == 1
    box, area = url.bounding_box(), output.bounding_box()
    assert box and area and box["x"] + box["width"] <= area["x"] + area["width"] + 1, (box, area)
    assert box["height"] > 30  # it wrapped onto more lines
    screenshot(output, name)


@pytest.mark.timeout(300)
def test_reply_renders_as_written_in_jupyterlab_and_panel(
    stub_server, jupyterlab, chromium_browser
):
    lab = jupyterlab
    write_notebook(
        lab.root / "render.ipynb",
        [
            "%load_ext exaone_jupyter",
            f"%exaone connect {stub_server} --model {MODEL}",
            "%exaone panel",
            "%%exaone -t 0\nShow me the tricky text.",
        ],
    )
    page = chromium_browser.new_page(viewport={"width": 1000, "height": 1400})
    try:
        open_notebook(page, lab, "render.ipynb")
        run_all_cells(page)
        wait_cells_done(page)
        cells = page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell")
        answer = (
            cells.nth(3)
            .locator(".jp-OutputArea-output.jp-RenderedMarkdown")
            .filter(has_text="Prices:")
        )
        _check_rendered(page, answer, "render_jupyterlab.png")

        # the panel shows the same turn: literal text, no tag rendered, the URL wrapped
        panel = page.locator(f"{VISIBLE_NOTEBOOK} .exaone-panel")
        transcript = panel.locator(".exaone-transcript")
        transcript.filter(has_text="stays text").wait_for(timeout=TIMEOUT_MS)
        turn = transcript.locator(".exaone-assistant").last
        text = turn.inner_text()
        for literal in LITERAL:
            assert literal.replace(" ", "") in text.replace(" ", "").replace("\n", ""), literal
        assert turn.locator("b, script").count() == 0
        assert turn.locator("strong").filter(has_text="bold").count() == 1
        assert turn.locator("li").count() == 2 and turn.locator("table td").count() == 2
        assert turn.locator("pre code").filter(has_text='print("$5 <b>")').count() == 1
        # the math as written (the panel's HTML widget does not typeset), marked for MathJax
        assert turn.locator(".exaone-math").all_inner_texts() == [
            "$$E=mc^2$$",
            r"\(a^2+b^2=c^2\)",
            r"\[\int_0^1 x\,dx = \frac{1}{2}\]",
        ]
        body = transcript.locator(".exaone-transcript-body")
        assert body.evaluate("e => e.scrollWidth <= e.clientWidth")  # nothing runs off the side
        url = turn.locator("p", has_text=URL[:40])
        box, area = url.bounding_box(), body.bounding_box()
        assert box and area and box["x"] + box["width"] <= area["x"] + area["width"] + 1
        assert box["height"] > 30  # the URL wrapped
        panel.scroll_into_view_if_needed()
        screenshot(panel, "render_panel.png")

        # the saved notebook, opened again without trust: sanitized HTML, the same text
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        saved = lab.root / "render.ipynb"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "mathjax_ignore" not in saved.read_text("utf-8"):
            time.sleep(0.2)
        notebook = json.loads(saved.read_text("utf-8"))
        notebook["metadata"].pop("signature", None)
        outputs = [
            o for o in notebook["cells"][3]["outputs"] if "text/markdown" in o.get("data", {})
        ]
        assert "".join(outputs[0]["data"]["text/plain"]) == REPLY  # the model's text, exactly
        notebook["cells"] = [notebook["cells"][3]]
        (lab.root / "untrusted.ipynb").write_text(json.dumps(notebook), "utf-8")
        page.goto(f"{lab.url}/lab/tree/untrusted.ipynb?reset", timeout=TIMEOUT_MS)
        page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!w && !!w.context && w.context.path === 'untrusted.ipynb'"
            " && w.context.isReady; }",
            timeout=TIMEOUT_MS,
            polling=250,
        )
        assert (
            page.evaluate(
                "() => window.jupyterapp.shell.currentWidget.content.model.cells.get(0).trusted"
            )
            is False
        )  # so its HTML is sanitized
        reopened = page.locator(
            f"{VISIBLE_NOTEBOOK} .jp-OutputArea-output.jp-RenderedMarkdown"
        ).filter(has_text="Prices:")
        reopened.wait_for(timeout=TIMEOUT_MS)
        assert page.locator(f"{VISIBLE_NOTEBOOK} .jp-Cell").count() == 1
        _check_rendered(page, reopened, "render_jupyterlab_untrusted.png")
    finally:
        page.close()


@pytest.mark.timeout(300)
def test_reply_renders_as_written_in_notebook7(stub_server, chromium_browser, tmp_path):
    """The same reply in Notebook 7 (same renderers as JupyterLab; run where it is installed)."""
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    write_notebook(
        root / "render.ipynb",
        [
            "%load_ext exaone_jupyter",
            f"%exaone connect {stub_server} --model {MODEL}",
            "%%exaone -t 0\nShow me the tricky text.",
        ],
    )
    notebook = JupyterLab(root, home, app="notebook7")
    page = chromium_browser.new_page(viewport={"width": 1000, "height": 1400})
    try:
        page.goto(f"{notebook.url}/notebooks/render.ipynb", timeout=TIMEOUT_MS)
        page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session"
            " && w.sessionContext.session.kernel;"
            " return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
            timeout=TIMEOUT_MS,
            polling=250,
        )
        run_all_cells(page)
        wait_cells_done(page)
        answer = (
            page.locator(".jp-Cell")
            .nth(2)
            .locator(".jp-OutputArea-output.jp-RenderedMarkdown")
            .filter(has_text="Prices:")
        )
        _check_rendered(page, answer, "render_notebook7.png")
    finally:
        page.close()
        notebook.stop()
