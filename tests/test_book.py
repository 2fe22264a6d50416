"""The book builds offline with warnings as errors, and reads right in headless Chromium.

Built once per session from the committed notebooks (their paper-preset outputs; execution is off)
and the scoreboard generated from ``results/``. Then Chromium, driven by Selenium, loads every page:
each notebook page shows all of its figures and links to Colab for that very notebook, the scoreboard
lists every criterion, and no internal link or image is broken. Chromium and its driver come from the
Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _scoreboard_records():
    sys.path.insert(0, str(ROOT / "book"))
    try:
        import scoreboard
    finally:
        sys.path.pop(0)
    return scoreboard, scoreboard.load_results(ROOT / "results")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the book into a temporary directory (scoreboard first), warnings as errors."""
    scoreboard, _ = _scoreboard_records()
    assert scoreboard.main([]) == 0
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    jb = str(jb) if jb.exists() else shutil.which("jupyter-book")
    assert jb, "jupyter-book is not installed (pip install -e .[book])"
    proc = subprocess.run([jb, "build", str(ROOT), "--path-output", str(out), "-W", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"book build failed (warnings are errors):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    html = out / "_build" / "html"
    assert (html / "index.html").exists()
    return html


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    drivers = [shutil.which("chromedriver"), os.path.join(os.environ.get("CHROMEWEBDRIVER", "/nonexistent"), "chromedriver"),
               "/usr/lib/chromium/chromedriver"]
    driver_path = next((d for d in drivers if d and Path(d).exists()), None)
    if not binary or not driver_path:
        pytest.fail("headless Chromium is needed to check the built site: install the Debian packages "
                    "chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run does")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _load(browser, path: Path):
    """Open ``path`` and wait until Chromium shows that very document, fully loaded.

    ``browser.get`` can return while the previous document (or a pending meta refresh, as on the
    site's index.html) is still current; reading the DOM then gives another page's links and ids.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', path.read_text(errors="replace")[:2000])
    expected = (path.parent / redirect.group(1)).resolve().as_uri() if redirect else path.resolve().as_uri()
    browser.get(path.as_uri())
    try:
        WebDriverWait(browser, 30, poll_frequency=0.1).until(lambda b: b.execute_script(
            "return document.readyState === 'complete' && document.URL.split('#')[0] === arguments[0];", expected))
    except TimeoutException:
        pytest.fail(f"Chromium did not show {expected} within 30 s after opening {path}; it shows {browser.current_url}")
    return browser


def _page_images(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('main img, article img, .bd-article img'))"
        ".map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth}));"
    )


def _figure_count(nb_path: Path) -> int:
    nb = nbformat.read(nb_path, as_version=4)
    return sum(
        1 for cell in nb.cells for out in cell.get("outputs", [])
        if out.get("output_type") in ("display_data", "execute_result") and "image/png" in out.get("data", {})
    )


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_page_shows_its_figures(site, browser, nb_path):
    expected = _figure_count(nb_path)
    assert expected > 0, f"{nb_path.name} has no figures in its committed outputs"
    images = _page_images(_load(browser, site / "notebooks" / f"{nb_path.stem}.html"))
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that do not render on {nb_path.stem}.html: {broken}"
    assert len(images) >= expected, f"{nb_path.stem}.html shows {len(images)} images, the notebook has {expected}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_page_launches_that_notebook_in_colab(site, browser, nb_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = urlparse(config["repository"]["url"]).path.strip("/")
    expected = (f"https://colab.research.google.com/github/{repo}/blob/{config['repository']['branch']}"
                f"/notebooks/{nb_path.name}")
    links = _load(browser, site / "notebooks" / f"{nb_path.stem}.html").execute_script(
        "return Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]')).map(a => a.href);")
    assert expected in links, f"{nb_path.stem}.html: Colab links {links}, expected {expected}"


def test_scoreboard_lists_every_criterion(site, browser):
    _, records = _scoreboard_records()
    text = _load(browser, site / "book" / "scoreboard.html").execute_script("return document.body.innerText;")
    missing = []
    for record in records:
        assert f"{record['notebook']} ({record['preset']} preset)" in text, f"{record['notebook']} not on the scoreboard"
        for c in record["criteria"]:
            if c["name"] not in text or c["detail"] not in text:
                missing.append(f"{record['notebook']}: {c['name']}")
    assert not missing, f"criteria missing from the scoreboard: {missing}"
    total = sum(len(r["criteria"]) for r in records)
    holding = sum(c["holds"] for r in records for c in r["criteria"])
    assert f"{holding} of {total} criteria hold" in text


def test_math_is_typeset_without_a_network(site, browser):
    """MathJax is served with the site (sphinx-mathjax-offline): with background networking off,
    the formulas of a methods page are typeset, none left as raw TeX."""
    page = site / "book" / "methods" / "towers.html"
    assert r"\(" in page.read_text(), "the page has no inline math to check"
    _load(browser, page)
    from selenium.webdriver.support.ui import WebDriverWait

    typeset = "return document.querySelectorAll('mjx-container').length;"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: b.execute_script(typeset) > 0)
    raw = browser.execute_script("return document.querySelector('article, main').innerText.includes('\\\\(');")
    assert browser.execute_script(typeset) >= 10
    assert not raw, "raw TeX \\( ... \\) left on the page: MathJax did not typeset it"


def test_no_broken_internal_links(site, browser):
    """Every page of the site, as Chromium renders it: each internal link's file exists, each
    #fragment names an element on its page, and each image loads."""
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    ids, links, broken_images = {}, [], []
    for page in pages:
        _load(browser, page)
        found = browser.execute_script(
            "return {ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),"
            " links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),"
            " images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};"
        )
        ids[page.resolve()] = set(found["ids"])
        links += [(page, href) for href in found["links"]]
        broken_images += [(page.name, src) for src in found["images"]]
    broken = []
    for page, href in links:
        if not href.startswith("file://"):
            continue
        url, fragment = urldefrag(href)
        target = Path(unquote(urlparse(url).path))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(f"{page.relative_to(site)} -> {href} (no such file)")
        elif fragment and target.suffix == ".html":
            if target.resolve() not in ids:
                ids[target.resolve()] = set(_load(browser, target).execute_script(
                    "return Array.from(document.querySelectorAll('[id]')).map(e => e.id);"))
            if unquote(fragment) not in ids[target.resolve()]:
                broken.append(f"{page.relative_to(site)} -> {href} (no element #{fragment})")
    assert len(pages) >= 6, f"only {len(pages)} pages built"
    assert not broken, "broken internal links:\n" + "\n".join(sorted(set(broken)))
    assert not broken_images, f"images that do not load: {broken_images}"
