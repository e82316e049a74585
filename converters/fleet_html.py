"""fleet.html: a fleet's merged report (``converters.fleet_report``'s dict) as one self-contained page.

For whom: whoever looks after a fleet of models. A summary, a sortable table of every model (click a column
heading), the matrix of models by environment, and a link to each model's own report.html. Host side,
standard library only: the run reports are rendered with jinja2 inside tf2, which the host does not have, so
this page is written here with ``html.escape`` on every value taken from a manifest or a report (a model's
name, an error message, a layer name may hold any character). Links are relative to the page's folder.
"""

import html
import os
from urllib.parse import quote

STYLE = """
  :root { --ink:#1d2633; --muted:#5f6b7a; --line:#e3e7ee; --bg:#f6f8fb; --good:#2e9d6a; --warn:#d99a1e; --bad:#d9534f; }
  * { box-sizing:border-box; }
  body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--ink); background:var(--bg); }
  header { background:linear-gradient(120deg,#1f3b63,#3b7dd8); color:#fff; padding:24px 40px 56px; }
  header h1 { margin:0 0 4px; font-size:24px; font-weight:600; } header .sub { opacity:.85; font-size:13px; }
  main { max-width:1400px; margin:0 auto; padding:0 40px 60px; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(160px,1fr)); gap:14px; margin:-40px 0 22px; }
  .card { background:#fff; border-radius:10px; padding:12px 16px; box-shadow:0 1px 3px rgba(20,30,50,.12); border-top:4px solid #c5ccd6; }
  .card.pass { border-top-color:var(--good); } .card.fail, .card.error { border-top-color:var(--bad); } .card.missing { border-top-color:var(--warn); }
  .card .t { font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); } .card .v { font-size:24px; font-weight:600; }
  section { background:#fff; border-radius:10px; padding:18px 22px; margin-bottom:18px; box-shadow:0 1px 3px rgba(20,30,50,.08); overflow-x:auto; }
  h2 { font-size:17px; margin:0 0 10px; } p.note { color:var(--muted); font-size:12px; margin:0 0 10px; }
  table { border-collapse:collapse; width:100%; font-size:13px; }
  th, td { text-align:left; padding:6px 9px; border-bottom:1px solid var(--line); vertical-align:top; white-space:nowrap; }
  td.wrap { white-space:normal; min-width:220px; max-width:420px; }
  th { font-weight:600; color:var(--muted); background:#fafbfd; cursor:pointer; user-select:none; }
  th.sorted-asc::after { content:" \\25B2"; font-size:10px; } th.sorted-desc::after { content:" \\25BC"; font-size:10px; }
  td.num { text-align:right; font-variant-numeric:tabular-nums; }
  .pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:600; color:#fff; background:#8a96a6; }
  .pill.pass, .pill.match, .pill.ready { background:var(--good); } .pill.partial, .pill.missing { background:var(--warn); }
  .pill.fail, .pill.error, .pill.mismatch, .pill.not_ready, .pill.load_error { background:var(--bad); }
  .muted { color:var(--muted); } .small { font-size:12px; } a { color:#2b62b0; }
  footer { text-align:center; color:var(--muted); font-size:12px; margin-top:24px; }
"""

# Click a heading: sort by its cells' data-sort (numbers as numbers, blanks last); click again: reverse.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
      function key(row) {
        var cell = row.cells[column], text = cell.getAttribute("data-sort");
        if (text === null) { text = cell.textContent.trim(); }
        var number = parseFloat(text);
        return { blank: text === "" || text === "-", number: isNaN(number) ? null : number, text: text.toLowerCase() };
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x.blank !== y.blank) { return x.blank ? 1 : -1; }
        var order = (x.number !== null && y.number !== null) ? x.number - y.number : (x.text < y.text ? -1 : x.text > y.text ? 1 : 0);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

VERDICT_RANK = {"error": 0, "fail": 1, "missing": 2, "pass": 3}
STATUS_RANK = {"load_error": 0, "mismatch": 1, "match": 2}


def e(value):
    """Text for HTML (element content and quoted attributes alike)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "%.*g" % (digits, value)
    return str(value)


def link(path, out):
    """A relative, URL-quoted link from the page's folder ``out`` to ``path``."""
    return quote(os.path.relpath(path, out).replace(os.sep, "/"))


def td(text, sort=None, cls=None, raw=False):
    attributes = ""
    if sort is not None:
        attributes += ' data-sort="%s"' % e(sort)
    if cls:
        attributes += ' class="%s"' % cls
    return "<td%s>%s</td>" % (attributes, text if raw else e(text))


def pill(word):
    return '<span class="pill %s">%s</span>' % (e(word), e(str(word).replace("_", " ")))


def _model_cell(model, out):
    name = e(model["name"])
    if model.get("report_html"):
        name = '<a href="%s">%s</a>' % (e(link(model["report_html"], out)), name)
    return td('%s<br><span class="muted small">%s</span>' % (name, e(os.path.basename(model["path"] or ""))),
              sort=model["name"], raw=True)


def _detail(model, out):
    """What to read about a model that did not pass: what failed, the error, where the log is."""
    parts = []
    if model.get("failing"):
        parts.append("failing: " + e(", ".join(model["failing"])))
    if model.get("error"):
        parts.append("%s: %s" % (e(model["error"].get("class")), e(model["error"].get("paragraph")
                                                                 or model["error"].get("message"))))
    if model.get("note"):
        parts.append('<span class="muted">%s</span>' % e(model["note"]))
    if model.get("log") and os.path.exists(model["log"]):
        parts.append('<a href="%s">log</a>' % e(link(model["log"], out)))
    return td("<br>".join(parts), cls="wrap", raw=True)


def _npu_cell(npu, target):
    figures = (npu or {}).get("targets", {}).get(target)
    if not figures:
        return td("-", sort="")
    fraction = figures.get("npu_ops_fraction")
    text = "%s%%" % fmt(100.0 * fraction, 3) if fraction is not None else "-"
    if figures.get("ops_on_cpu"):
        text += " (%d on CPU)" % figures["ops_on_cpu"]
    return td(text, sort=fraction if fraction is not None else "", cls="num")


def models_table(fleet, out):
    int8_columns = [("SQNR dB", "sqnr_db"), ("cosine", "cosine"), ("top-1", "top1_agreement")]
    if any((m["int8"] or {}).get("sqnr_centered_db") is not None for m in fleet["models"]):
        int8_columns.insert(1, ("centered SQNR dB", "sqnr_centered_db"))
    if any((m["int8"] or {}).get("correlation") is not None for m in fleet["models"]):
        int8_columns.append(("correlation", "correlation"))
    head = ["#", "model", "verdict", "origin", "parity"] + ["int8 " + title for title, _ in int8_columns]
    head += ["NPU"] + ["NPU %s" % target for target in fleet["targets"]]
    head += ["first divergent layer", "seconds", "reused", "shard", "details"]
    rows = []
    for model in fleet["models"]:
        cells = [td(model["index"], sort=model["index"], cls="num"), _model_cell(model, out),
                 td(pill(model["verdict"]), sort=VERDICT_RANK.get(model["verdict"], 9), raw=True),
                 td(model.get("origin") or "-")]
        statuses = [cell.get("status") for cell in model["parity"].values()]
        matched = sum(1 for status in statuses if status == "match")
        tolerated = sum(1 for cell in model["parity"].values() if cell.get("status") != "match" and cell.get("tolerated"))
        cells.append(td("%d/%d match%s" % (matched, len(statuses), " (%d tolerated)" % tolerated if tolerated else "")
                        if statuses else "-", sort=(matched / float(len(statuses))) if statuses else ""))
        int8 = model["int8"] or {}
        for _, key in int8_columns:
            digits = 6 if key in ("cosine", "correlation") else 4  # near 1: the digits that differ
            cells.append(td(fmt(int8.get(key), digits), sort=int8.get(key) if int8.get(key) is not None else "",
                            cls="num"))
        npu = model["npu"] or {}
        cells.append(td(pill(npu["verdict"]) if npu.get("verdict") else "-", sort=npu.get("verdict") or "", raw=True))
        cells += [_npu_cell(npu, target) for target in fleet["targets"]]
        divergent = model.get("first_divergent_layer")
        cells.append(td("%s (%s)" % (divergent["layer"], divergent["env"]) if divergent else "-"))
        cells.append(td(fmt(model.get("seconds")), sort=model.get("seconds") if model.get("seconds") is not None
                        else "", cls="num"))
        cells.append(td(fmt(model.get("reused"))))
        cells.append(td(model.get("shard") or "-"))
        cells.append(_detail(model, out))
        rows.append("<tr>%s</tr>" % "".join(cells))
    return ('<table class="sortable"><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table>'
            % ("".join("<th>%s</th>" % e(h) for h in head), "\n".join(rows)))


def matrix_table(fleet, out):
    head = ["model", "verdict"] + list(fleet["environments"]) + ["int8"]
    rows = []
    for model in fleet["models"]:
        cells = [_model_cell(model, out), td(pill(model["verdict"]), sort=VERDICT_RANK.get(model["verdict"], 9),
                                             raw=True)]
        for env in fleet["environments"]:
            cell = model["parity"].get(env)
            if not cell:
                cells.append(td('<span class="muted">-</span>', sort="", raw=True))
                continue
            status = cell.get("status") or "?"
            title = "max |Δ| %s, cosine %s, top-1 %s" % (fmt(cell.get("max_abs")), fmt(cell.get("cosine"), 6),
                                                        fmt(cell.get("top1_agreement")))
            extra = ""
            if cell.get("tolerated") and status != "match":  # the parity policy lets it pass (README, Keras 3)
                extra += '<br><span class="small muted">tolerated</span>'
                title += "; tolerated by the parity policy"
            if cell.get("first_divergent_layer"):
                layer = cell["first_divergent_layer"]
                layer = layer.get("name") if isinstance(layer, dict) else layer
                extra += '<br><span class="small muted">from %s</span>' % e(layer)
                title += "; first divergent layer %s" % layer
            if cell.get("error"):
                title += "; " + str(cell["error"])
            cells.append('<td data-sort="%s" title="%s">%s%s</td>' % (
                STATUS_RANK.get(status, 9), e(title), pill(status), extra))
        int8 = model["int8"] or {}
        cells.append(td(pill(int8["status"]) if int8.get("status") else "-", sort=int8.get("status") or "", raw=True))
        rows.append("<tr>%s</tr>" % "".join(cells))
    return ('<table class="sortable"><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table>'
            % ("".join("<th>%s</th>" % e(h) for h in head), "\n".join(rows)))


def render(fleet, out):
    """The whole page for ``fleet`` (fleet.json's dict), to be written into folder ``out``."""
    counts = fleet["counts"]
    cards = "".join('<div class="card %s"><div class="t">%s</div><div class="v">%d</div></div>' % (verdict, verdict,
                                                                                                   counts[verdict])
                    for verdict in ("pass", "fail", "error", "missing"))
    manifest = fleet["manifest"]
    return """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tfbridge fleet · %(title)s</title>
<style>%(style)s</style>
</head>
<body>
<header>
  <h1>Fleet: %(models)d model(s) → full-int8 TFLite</h1>
  <div class="sub">manifest %(manifest)s · %(folders)d folder(s) · generated %(generated)s</div>
</header>
<main>
<div class="cards">%(cards)s</div>
<section>
  <h2>Models</h2>
  <p class="note">Click a column heading to sort. Verdict: pass (every parity cell and the int8 model match), fail
  (a mismatch: see failing), error (the model's run stopped with an error), missing (no shard finished it).
  Each name links to that model's report.</p>
  %(models_table)s
</section>
<section>
  <h2>Parity: model × environment</h2>
  <p class="note">The re-saved model's outputs in each environment against its origin's references (hover a
  cell for the figures); the last column is the int8 model against the same references.</p>
  %(matrix_table)s
</section>
<footer>tfbridge fleet-report · fleet.json beside this page holds every figure</footer>
</main>
<script>%(script)s</script>
</body>
</html>
""" % {"title": e(os.path.basename(manifest.get("path") or "")), "style": STYLE, "models": len(fleet["models"]),
       "manifest": e(manifest.get("path")), "folders": len(fleet["folders"]), "generated": e(fleet["generated"]),
       "cards": cards, "models_table": models_table(fleet, out), "matrix_table": matrix_table(fleet, out),
       "script": SCRIPT}
