"""`dvc plots show` renders in a browser with no network: every chart draws, every image loads.

The page comes from the offline template (.dvc/plots/offline.html, built by
scripts/build_plots_template.py). Headless Chromium loads it with every network fetch
pointed at a dead proxy, so anything still fetched from a CDN fails. A script injected
into a copy of the page records each `vegaEmbed` call, walks each chart's scenegraph once
it has rendered, and writes a JSON report into the DOM, which `--dump-dom` hands back.
A screenshot of the unmodified page is kept in test-artifacts/plots.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import dvc, instrumented_copy, page_report, screenshot

# First thing in <head>: wrap the `vegaEmbed` global as soon as vega-embed defines it, so
# the page's own `vegaEmbed('#id', spec)` calls hand us their promises.
HOOK_JS = """
(function () {
  var state = (window.__plotCheck = { embeds: [], errors: [] });
  window.addEventListener("error", function (event) {
    state.errors.push(String(event.message));
  });
  var wrapped;
  Object.defineProperty(window, "vegaEmbed", {
    configurable: true,
    get: function () { return wrapped; },
    set: function (embed) {
      wrapped = function (el, spec, opts) {
        var promise = embed(el, spec, opts);
        state.embeds.push({ selector: String(el), promise: promise });
        return promise;
      };
      Object.assign(wrapped, embed);
    },
  });
})();
"""

# Last thing in <body>: after `load` (all images settled), wait for every chart, then
# report what each drew and how each image loaded.
REPORT_JS = """
window.addEventListener("load", function () {
  var state = window.__plotCheck;
  function text(value) { return Array.isArray(value) ? value.join(" ") : String(value); }
  function summarize(view) {
    var summary = { marks: 0, titles: [], axisTitles: [] };
    (function visit(mark) {
      (mark.items || []).forEach(function (item) {
        if (mark.role === "mark" && mark.marktype !== "group") summary.marks += 1;
        if (mark.role === "title-text") summary.titles.push(text(item.text));
        if (mark.role === "axis-title") summary.axisTitles.push(text(item.text));
        (item.items || []).forEach(visit);
      });
    })(view.scenegraph().root);
    return summary;
  }
  function inkedPixels(canvas) {
    if (!canvas || !canvas.width || !canvas.height) return 0;
    var data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    var inked = 0;
    for (var i = 0; i < data.length; i += 4) {
      var white = data[i] > 250 && data[i + 1] > 250 && data[i + 2] > 250;
      if (data[i + 3] > 0 && !white) inked += 1;
    }
    return inked;
  }
  Promise.all(state.embeds.map(function (embed) {
    return Promise.resolve(embed.promise).then(function (result) {
      return result.view.runAsync().then(function (view) {
        var summary = summarize(view);
        summary.selector = embed.selector;
        var canvas = document.querySelector(embed.selector + " canvas");
        var svgMarks = document.querySelectorAll(embed.selector + " svg [class^='mark-']");
        summary.inked = canvas ? inkedPixels(canvas) : svgMarks.length;
        return summary;
      });
    }, function (error) {
      return { selector: embed.selector, error: String(error) };
    });
  })).then(function (charts) {
    var report = document.createElement("pre");
    report.id = "plot-check";
    report.textContent = JSON.stringify({
      charts: charts,
      images: Array.from(document.images).map(function (img) {
        return { src: img.getAttribute("src"), complete: img.complete,
                 width: img.naturalWidth, height: img.naturalHeight };
      }),
      fetched: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
      errors: state.errors,
    });
    document.body.appendChild(report);
  });
});
"""
REPORT_ID = "plot-check"


def declared_plots(repo: Path) -> tuple[list[str], list[str]]:
    """(titles of the vega plots, paths of the image plots) from dvc.yaml's `plots:`."""
    titles, images = [], []
    for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, str):
            images.append(entry)
        else:
            (props,) = entry.values()
            titles.append(props["title"])
    return titles, images


@pytest.mark.slow
def test_plots_page_renders_offline(reproduced_repo, chromium_binary, tmp_path):
    titles, images = declared_plots(reproduced_repo)
    assert len(titles) == 9 and len(images) == 4, "dvc.yaml's plots changed: update this test"
    out_dir = tmp_path / "plots_html"
    dvc(reproduced_repo, "plots", "show", "-o", str(out_dir))
    page = out_dir / "index.html"
    source = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", source), "the page still loads scripts by URL"

    screenshot(chromium_binary, page.as_uri(), "plots.png", "1400,4000", tmp_path / "profile-shot")

    # The copy goes next to the page, so that its relative image paths hold.
    copy = instrumented_copy(page, page.with_name("plot-check.html"), HOOK_JS, REPORT_JS)
    report = page_report(chromium_binary, copy, REPORT_ID, tmp_path / "profile-dom")
    charts = report["charts"]
    assert [chart.get("error") for chart in charts] == [None] * len(titles)
    # Confusion matrices also carry facet headers ("rev", "workspace") as title text.
    assert sorted(title for chart in charts for title in chart["titles"] if title in titles) == (
        sorted(titles)
    )
    for chart in charts:
        assert chart["marks"] > 0 and chart["inked"] > 0, chart
        assert len(chart["axisTitles"]) == 2, chart
    for path in images:
        assert f"<p>{path}</p>" in source, f"{path} missing from the page"
    assert len(report["images"]) == len(images)
    for image in report["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
