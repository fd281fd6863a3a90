"""The self-contained HTML report (--html FILE, --format html) and the classic figure.

The page is checked twice: as text (self-contained, a CSP that forbids every request, the data
the charts need) and rendered in a real headless browser (Debian's chromium): the DOM after the
page's script ran must hold a histogram for every layer and one profile point per layer, the
page must record no error (its script writes window errors, console.error calls and CSP
violations into #page-errors), and the browser's network log must show no request started by the
page. The browser tests skip, saying why, where chromium is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from models import mlp

import initaudit
from initaudit.cli import main
from initaudit.graph import Activation
from initaudit.histograms import weight_histogram
from initaudit.probe.stats import HISTOGRAM_SAMPLE, site_stats
from initaudit.reporters import html as html_report

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                   "(apt-get install chromium; .ci/run installs it)")
# --virtual-time-budget: the browser runs the page's timers on virtual time and dumps or shoots
# only once they are spent (deterministic, independent of load); the page says it has drawn
# everything by <body data-rendered="1">, which browse() requires.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--virtual-time-budget=30000"]
# Wall-clock limit per browser run: a start and a dump take 3-10 s on a loaded 2-core machine;
# this only stops a hung browser.
BROWSER_TIMEOUT = 600


# ---- helpers ---------------------------------------------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, tag: str | None = None, cls: str | None = None, **attrs):
        return [n for n in self.walk() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]


class _Tree(HTMLParser):
    VOID = {"meta", "br", "input", "img", "link", "hr", "wbr", "col", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text += data


def parse(text: str) -> Node:
    tree = _Tree()
    tree.feed(text)
    return tree.root


def text_of(node: Node) -> str:
    return "".join(n.text for n in node.walk())


def browse(page: Path, screenshot: Path | None = None, size: str = "1320,2400",
           fragment: str = "") -> tuple[Node, list[str]]:
    """Load ``page`` (with ``#fragment``) in headless chromium: (the DOM after its scripts ran,
    URLs the page asked for according to the network log). Also writes ``screenshot`` when given.
    Fails unless the page reports that it has drawn everything (``data-rendered="1"``)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory() as profile:
        netlog = Path(profile) / "netlog.json"
        out = _chromium(f"--user-data-dir={profile}/p", f"--log-net-log={netlog}", "--dump-dom", url)
        dom = parse(out.stdout)
        body = dom.find("body")
        assert body and body[0].attrs.get("data-rendered") == "1", \
            f"the page did not finish drawing: {errors_of(dom) if dom.find(id='page-errors') else out.stderr[-2000:]}"
        requests = page_requests(netlog)
        if screenshot is not None:
            _chromium(f"--user-data-dir={profile}/s", f"--window-size={size}", f"--screenshot={screenshot}", url)
            assert screenshot.is_file(), f"chromium wrote no screenshot {screenshot}"
    return dom, requests


def _chromium(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=BROWSER_TIMEOUT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def page_requests(netlog: Path) -> list[str]:
    """URLs of network requests started by a page: the browser's own background requests
    (update checks and the like) have no initiating origin and are left out.

    Read line by line (chromium writes the constants on the first line, then one event per
    line): a log the browser stopped writing mid-line still yields every complete event."""
    if not netlog.is_file():
        return []
    lines = netlog.read_text().splitlines()
    head = '{"constants":'
    assert lines and lines[0].startswith(head), "not a chromium net log"
    constants = json.loads(lines[0][len(head):].rstrip().rstrip(","))
    names = {v: k for k, v in constants["logEventTypes"].items()}
    urls = []
    for line in lines[1:]:
        try:
            e = json.loads(line.rstrip().rstrip(","))
        except json.JSONDecodeError:  # '"events": [', the closing lines, a cut-off last event
            continue
        if not isinstance(e, dict) or "type" not in e:
            continue
        p = e.get("params") or {}
        if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in p \
                and p.get("initiator") != "not an origin":
            urls.append(p["url"])
    return urls


def errors_of(dom: Node) -> list[str]:
    box = dom.find(id="page-errors")
    assert box, "the page's error list is missing"
    return [text_of(li) for li in box[0].find("li")]


def _tanh_collapse() -> nn.Module:
    return mlp(depth=5, width=40, act="tanh", init="normal001")


@pytest.fixture(scope="module")
def probed():
    """A 5-layer tanh MLP with N(0, 0.01^2) weights, probed with histograms."""
    return initaudit.audit(_tanh_collapse(), probe_histograms=True, probe_batch_size=32)


@pytest.fixture(scope="module")
def static_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(mlp(depth=4, width=32, act="relu", init="normal1").state_dict(), path)
    return path


# ---- the page as text --------------------------------------------------------------------------

def test_page_is_self_contained(probed):
    page = html_report.render(probed)
    assert page.startswith("<!DOCTYPE html>")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp and "connect-src" not in csp
    # Nothing that could fetch: no external script/style/image/link/frame, no CSS url() or @import.
    assert not re.search(r"<(link|iframe|img|object|embed|audio|video)\b", page)
    assert not re.search(r"<script[^>]+src=", page)
    assert "url(" not in page and "@import" not in page and "fetch(" not in page
    assert "XMLHttpRequest" not in page and "WebSocket" not in page


def test_data_block_holds_what_the_charts_draw(probed):
    data = html_report.report_data(probed)
    assert data["probe"]["ran"] and data["probe"]["histograms"] and data["probe"]["grads"]
    assert len(data["layers"]) == 5 and len(data["signal"]) == 5
    hidden, head = data["layers"][:4], data["layers"][4]
    for layer in hidden:  # pre-activation and tanh output, weights, the gradient ratio
        assert layer["pre"]["c"] and layer["post"]["c"] and layer["w"]["c"]
        assert -1 <= layer["post"]["lo"] <= layer["post"]["hi"] <= 1  # tanh outputs
        assert layer["grad_ratio"] > 0 and layer["site_act_name"] == "tanh"
    assert head["pre"] is None and head["post"]["c"]  # no activation follows the head
    assert data["bands"]["vanishing"] == {"warn": 0.2, "error": 0.01, "rules": ["IA109", "IA204"]}
    assert "IA109" in data["rules"] and "What it checks" in data["rules"]["IA109"]["doc"]
    assert set(data["regions"]["sat_pre"]) >= {"tanh", "sigmoid"}
    assert all(layer["flags"] for layer in hidden)  # IA104 on every N(0, 0.01^2) layer


def test_nothing_in_the_data_can_close_the_script():
    page = html_report.page("t", {"kind": "report", "x": "</script><script>alert(1)</script><!--"})
    assert page.count("</script>") == 2  # the data block's and the script's own
    blob = re.search(r'id="initaudit-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["x"].startswith("</script>")


def test_static_only_report_says_so(static_ckpt):
    report = initaudit.audit(str(static_ckpt), probe_histograms=True)
    data = html_report.report_data(report)
    assert not data["probe"]["ran"] and "static only" in data["probe"]["reason"]
    assert all("post" not in layer for layer in data["layers"])
    assert all(layer["w"]["c"] for layer in data["layers"])  # weights are read statically


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))


class _Deep(nn.Module):
    """302 weight layers: a stem, 150 residual blocks of two, a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(16, 16)
        self.blocks = nn.ModuleList(_Block() for _ in range(150))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


@pytest.fixture(scope="module")
def deep():
    return initaudit.audit(_Deep(), probe_histograms=True, probe_batch_size=8)


def test_long_models_collapse_into_blocks_and_stay_small(deep):
    page = html_report.render(deep)
    data = html_report.report_data(deep)
    assert len(data["layers"]) == 302
    groups = [layer["block"] for layer in data["layers"]]
    assert groups[0] == "input side" and groups[1] == groups[2] == "blocks.0" and groups[-1] == "output side"
    assert len(set(groups)) == 152
    assert len(page.encode()) < 3_000_000, len(page)
    assert html_report.blocks([str(i) for i in range(60)])[30] == "layers 25-48"


def test_weight_histogram_fits_the_expected_family():
    g = torch.Generator().manual_seed(0)
    normal = weight_histogram(torch.randn(150, 150, generator=g) * 0.1, 24, "xavier")
    uniform = weight_histogram(torch.rand(400, 400, generator=g) - 0.5, 24, "he")  # sampled
    assert normal["shape"] == "normal" and uniform["shape"] == "uniform"
    assert sum(normal["counts"]) == 22_500 and not normal["sampled"] and uniform["sampled"]
    big = weight_histogram(torch.zeros(3_000_000), 24, "torch-default")
    assert big["sampled"] and big["shape"] == "uniform" and sum(big["counts"]) == HISTOGRAM_SAMPLE


def test_large_activations_are_histogrammed_from_a_fixed_sample():
    x = torch.randn(8, 64, 32, 32, generator=torch.Generator().manual_seed(1))  # 524,288 values
    a = site_stats(x, name="c", kind="layer", unit_dim=1, activation=Activation("relu"), histogram_bins=20)
    b = site_stats(x.clone(), name="c", kind="layer", unit_dim=1, activation=Activation("relu"),
                   histogram_bins=20)
    assert a.pre_histogram == b.pre_histogram  # the same sample every time: reproducible reports
    edges, counts = a.pre_histogram
    assert sum(counts) == HISTOGRAM_SAMPLE
    full = torch.histc(x, bins=20, min=edges[0], max=edges[-1]) / x.numel()
    assert (torch.tensor(counts) / HISTOGRAM_SAMPLE - full).abs().max() < 0.005
    assert sum(a.histogram[1][:1]) > 0.45 * HISTOGRAM_SAMPLE  # relu: half the values at zero


def test_layer_sites_keep_the_pre_activation_histogram():
    x = torch.randn(64, 30, generator=torch.Generator().manual_seed(0)) * 5
    s = site_stats(x, name="l", kind="layer", activation=Activation("tanh"), histogram_bins=12)
    pre_edges, pre_counts = s.pre_histogram
    edges, counts = s.histogram
    assert pre_edges[0] < -5 and pre_edges[-1] > 5 and sum(pre_counts) == x.numel()
    assert -1 <= edges[0] and edges[-1] <= 1 and sum(counts) == x.numel()
    assert site_stats(x, name="l", kind="layer", activation=Activation("tanh")).pre_histogram is None


def test_onnx_probe_collects_histograms_too():
    report = initaudit.audit(str(ROOT / "examples" / "mlp_tanh_small_init.onnx"), probe_histograms=True)
    layers = html_report.report_data(report)["layers"]
    assert report.probe.ran and all(layer.get("post") for layer in layers)
    assert any(layer.get("pre") for layer in layers)


def test_cli_html_file_turns_histograms_on(tmp_path):
    spec = tmp_path / "model.py"
    spec.write_text("from models import mlp\n\ndef make():\n    return mlp(depth=3, width=20, act='relu')\n")
    sys.path.insert(0, str(Path(__file__).parent))
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["audit", f"{spec}:make", "--html", str(out), "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["schema_version"] == 1  # stdout keeps the --format report
    blob = re.search(r'id="initaudit-data">(.*?)</script>', out.read_text(), re.S).group(1)
    assert all(layer["post"]["c"] for layer in json.loads(blob)["layers"])
    res = CliRunner().invoke(main, ["audit", f"{spec}:make", "--format", "html", "-q"])
    assert res.exit_code == 0 and res.output.startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(main, ["audit", f"{spec}:make", "--html", str(spec), "-q"])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output


# ---- the page in a browser ---------------------------------------------------------------------

@needs_browser
def test_report_renders_in_a_browser(probed, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report.render(probed), encoding="utf-8")
    shot = tmp_path / "report.png"
    dom, requests = browse(page, shot)
    assert errors_of(dom) == [] and requests == []
    assert dom.find("body")[0].attrs.get("data-rendered") == "1"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert text_of(dom.find(id="verdict")[0]) == "FAIL"
    for layer in probed.layers:  # every layer: a card with its activation and weight histograms
        cards = dom.find("div", cls="card", data_layer=layer["param"])
        assert len(cards) == 1, layer["param"]
        svgs = [n for n in cards[0].find("svg") if "hist" in n.classes()]
        kinds = {c for n in svgs for c in n.classes()}
        assert {"hist-post", "hist-w"} <= kinds and any(n.find("rect", cls="bar") for n in svgs)
    # the depth profile: one predicted and one measured point per layer
    profile = dom.find("svg", cls="profile")[0]
    assert [n.attrs["data-layer"] for n in profile.find("circle", cls="pt-pred")] == \
        [s["param"] for s in probed.signal]
    assert len(profile.find("circle", cls="pt-meas")) == len(probed.signal)
    assert profile.find("rect", cls="band-error")  # the collapse is drawn against the rule bands
    assert len(dom.find("rect", cls="grad-bar")) == 5
    # findings grouped by rule, each with its documentation one click away
    groups = dom.find("div", cls="rule")
    assert {g.attrs["data-rule"] for g in groups} == {f.rule for f in probed.findings}
    for g in groups:
        assert g.find("details", cls="doc") and "Why it matters" in text_of(g.find("pre")[0])
    rows = dom.find("table", cls="layers")[0].find("tbody")[0].find("tr")
    assert [r.attrs["data-layer"] for r in rows] == [layer["param"] for layer in probed.layers]


@needs_browser
def test_static_only_page_renders_and_says_why(static_ckpt, tmp_path):
    page = tmp_path / "static.html"
    page.write_text(initaudit.audit(str(static_ckpt)).to_html(), encoding="utf-8")
    dom, requests = browse(page)
    assert errors_of(dom) == [] and requests == []
    notice = text_of(dom.find(id="histograms")[0])
    assert "No activation histograms: the probe did not run" in notice and "static only" in notice
    assert "No depth profile" in text_of(dom.find(id="profile")[0])
    assert dom.find("div", cls="card") and not dom.find("svg", cls="hist-act")
    # --no-probe on a module: the static prediction, one point per layer, and nothing measured
    report = initaudit.audit(_tanh_collapse(), probe_enabled=False)
    page.write_text(report.to_html(), encoding="utf-8")
    dom, requests = browse(page)
    assert errors_of(dom) == [] and requests == []
    profile = dom.find(id="profile")[0]
    assert "Static prediction only" in text_of(profile) and "disabled (--no-probe)" in text_of(profile)
    assert len(profile.find("circle", cls="pt-pred")) == len(report.signal) == 5
    assert not profile.find("circle", cls="pt-meas")
    assert "No gradients: the probe did not run" in text_of(dom.find(id="gradients")[0])


@needs_browser
def test_the_harness_catches_requests_and_errors(probed, tmp_path):
    """The checks above can fail: a fetch the CSP blocks and a console error are recorded in the
    page; without the CSP the network log shows the request."""
    text = html_report.render(probed)
    bad = text.replace("</body>", '<img src="http://127.0.0.1:9/x.png">'
                                  '<script>console.error("boom")</script></body>')
    page = tmp_path / "bad.html"
    page.write_text(bad, encoding="utf-8")
    dom, _ = browse(page)
    errors = errors_of(dom)
    assert any("Content-Security-Policy" in e and "127.0.0.1" in e for e in errors), errors
    assert any("boom" in e for e in errors), errors
    page.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]+>', "", bad), encoding="utf-8")
    _, requests = browse(page)
    assert any("127.0.0.1:9" in u for u in requests), requests


@needs_browser
def test_classic_figure_renders(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    import classic_figure
    from classic_mlp import build, example_inputs

    cells = {(init, act): initaudit.audit(build(act, init), inputs=example_inputs()[:64], probe_histograms=True)
             for init in ("small", "he") for act in ("tanh", "relu")}
    page = tmp_path / "figure.html"
    page.write_text(html_report.render_grid(classic_figure.TITLE, "test", ["small", "he"], ["tanh", "relu"], cells))
    dom, requests = browse(page)
    assert errors_of(dom) == [] and requests == []
    drawn = dom.find("div", cls="gcell")
    assert len(drawn) == 4
    for cell in drawn:
        assert len(cell.find("svg", cls="hist-post")) == 5  # one histogram per layer
    assert "IA204" in text_of(drawn[0]) and "clean" in text_of(drawn[3])


def _overview(dom: Node, run: str) -> Node:
    found = [n for n in dom.find("div", cls="overview") if n.attrs.get("data-run") == run]
    assert len(found) == 1, [n.attrs.get("data-run") for n in dom.find("div", cls="overview")]
    return found[0]


def _spread(overview: Node, position: str, column: str) -> Node:
    """The cell of ``column`` in the overview row of the layer at ``position`` in the block."""
    head = [text_of(th) for th in overview.find("th")]
    row = [r for r in overview.find("tr") if r.attrs.get("data-position") == position]
    assert len(row) == 1, position
    return row[0].find("td")[head.index(column)]


@needs_browser
def test_a_300_layer_report_folds_its_repeated_blocks(deep, tmp_path):
    page = tmp_path / "deep.html"
    page.write_text(html_report.render(deep), encoding="utf-8")
    dom, requests = browse(page)
    assert errors_of(dom) == [] and requests == []
    cards = dom.find("div", cls="card")
    assert [c.attrs["data-layer"] for c in cards] == [layer["param"] for layer in deep.layers]
    assert all(c.find("svg", cls="hist-post") for c in cards)
    assert len(dom.find("svg", cls="profile")[0].find("circle", cls="pt-pred")) == len(deep.signal) == 302
    # Blocks after the first three fold away, except those with findings (and a lone clean
    # block between two flagged ones, which has nothing to fold with).
    layers = html_report.report_data(deep)["layers"]
    dirty = {x["block"] for x in layers if x["flags"]}
    folds = dom.find("details", cls="run")
    assert folds and all("open" not in f.attrs for f in folds)
    folded = {c.attrs["data-layer"] for f in folds for c in f.find("div", cls="card")}
    assert not {x["param"] for x in layers if x["block"] in dirty} & folded
    clean_late = {x["param"] for x in layers if x["block"] not in dirty
                  and x["block"].startswith("blocks.") and int(x["block"].split(".")[1]) >= 3}
    assert len(folded) >= len(clean_late) - 2 * len(dirty) and folded <= clean_late
    assert len(dom.find("table", cls="layers")[0].find("tbody")[0].find("tr")) == 302
    # the 150 repeated blocks shown once: one overview row per layer of the block, each figure's
    # range over the repeats and a line with one point per repeat
    view = _overview(dom, "blocks.0–blocks.149")
    assert view.attrs["data-repeats"] == "150"
    assert [r.attrs["data-position"] for r in view.find("tr") if "data-position" in r.attrs] == \
        [".fc1.weight", ".fc2.weight"]
    for position in (".fc1.weight", ".fc2.weight"):
        values = [x["measured_std"] for x in layers if x["block"].startswith("blocks.") and x["param"].endswith(position)]
        cell = _spread(view, position, "measured std")
        assert len(values) == 150 and cell.find("svg", cls="spark")[0].attrs["data-n"] == "150"
        assert (float(cell.attrs["data-min"]), float(cell.attrs["data-max"])) == (min(values), max(values))
    # a link to a layer folded away (in a folded block inside a folded run) opens the folds
    hidden = [c.attrs["id"] for f in folds for c in f.find("div", cls="card")][-1]
    dom, _ = browse(page, fragment=hidden)
    card = dom.find("div", cls="card", id=hidden)[0]
    enclosing, node = [], card.parent
    while node is not None:
        enclosing += [node] if node.tag == "details" else []
        node = node.parent
    assert len(enclosing) == 2 and all("open" in n.attrs for n in enclosing)
    assert card.find("svg", cls="hist-post") and card.find("svg", cls="hist-w")
    # the table filters and sorts (a view given in the URL: what a click on a header does)
    dom, _ = browse(page, fragment="q=blocks.&flagged=1&sort=measured%20std&dir=desc")
    rows = dom.find("table", cls="layers")[0].find("tbody")[0].find("tr")
    shown = [r for r in rows if "hidden" not in r.attrs]
    expected = [x for x in layers if x["flags"] and "blocks." in x["param"]]
    assert expected and [r.attrs["data-layer"] for r in shown] == \
        [x["param"] for x in sorted(expected, key=lambda x: -x["measured_std"])]
    assert f"{len(shown)} of 302 layers" in text_of(dom.find(id="layers")[0])



def _gpt(blocks: int) -> nn.Module:
    """A GPT-2-layout transformer (pre-LayerNorm blocks h.0 ... h.N-1), tiny widths."""
    torch.manual_seed(0)
    return _bench_models().GPT(vocab=64, ctx=8, d=16, heads=2, n_layer=blocks)


def _bench_models():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_probe", ROOT / "benchmarks" / "bench_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_browser
def test_a_24_block_transformer_report(tmp_path):
    report = initaudit.audit(_gpt(24), inputs=torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0)),
                             probe_histograms=True)
    data = html_report.report_data(report)
    text = html_report.render(report)
    assert len(data["layers"]) == 2 + 24 * 6 + 1 and len(text.encode()) < 1_500_000
    page = tmp_path / "gpt.html"
    page.write_text(text, encoding="utf-8")
    dom, requests = browse(page)
    assert errors_of(dom) == [] and requests == []
    assert len(dom.find("div", cls="card")) == len(data["layers"])
    view = _overview(dom, "h.0–h.23")
    positions = [r.attrs["data-position"] for r in view.find("tr") if "data-position" in r.attrs]
    assert positions == [".ln_1.weight", ".attn.c_attn.weight", ".attn.c_proj.weight", ".ln_2.weight",
                         ".mlp.c_fc.weight", ".mlp.c_proj.weight"]
    grads = [x["grad_ratio"] for x in data["layers"] if x["param"].startswith("h.") and x["param"].endswith(".mlp.c_fc.weight")]
    cell = _spread(view, ".mlp.c_fc.weight", "|dW|/|W|")
    assert (float(cell.attrs["data-min"]), float(cell.attrs["data-max"])) == (min(grads), max(grads))
    # findings of a rule beyond the first eight fold into one line; none is lost
    folded = 0
    for group in dom.find("div", cls="rule"):
        code = group.attrs["data-rule"]
        count = sum(f.rule == code for f in report.findings)
        assert len(group.find("li", cls="finding")) == count
        more = group.find("details", cls="more")
        if count > 10:
            assert len(more) == 1 and len(more[0].find("li", cls="finding")) == count - 8
            folded += 1
        else:
            assert not more
    assert folded  # the 24 blocks repeat each block's findings
