"""The pages :class:`~edgeseg.runtime.sinks.MjpegServer` serves to a browser: the stream page a
lab keeps open (:func:`stream_page`) and the listing of the recordings' folder
(:func:`listing_page`). Plain HTML, CSS and a little script, no external resources: the device
may have no internet, and neither may the lab.

The stream page: the picture, then the stats grouped in cards that wrap with the window (FPS,
latency, objects, dropped, camera), a chart of the object count and the FPS over the last
minutes (from ``/history.json``), and links to ``/metrics`` and ``/recordings/`` when the
server has them. Its requests carry the token as the page's own URL did (``@QUERY@``).
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence
from urllib.parse import quote

__all__ = ["listing_page", "stream_page"]

_STREAM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeseg</title>
<style>
*{box-sizing:border-box}
body{margin:0;background:#111;color:#ddd;font:15px system-ui,sans-serif}
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:baseline;padding:.5em 1em}
header h1{font-size:1.1em;margin:0;color:#fff}
header nav{margin-left:auto;display:flex;gap:1em;flex-wrap:wrap}
a{color:#8cf}
#status{padding:.5em 1em;background:#8a3b00;color:#fff;font-weight:600}
main{display:flex;flex-wrap:wrap;gap:1em;padding:0 1em 1em}
#view{flex:3 1 480px;min-width:0}
#view img{display:block;width:100%;height:auto;max-height:75vh;object-fit:contain;background:#000}
#side{flex:1 1 300px;min-width:0;display:flex;flex-direction:column;gap:1em}
#stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(8.5em,1fr));gap:.6em}
.card{background:#1d1d1d;border-radius:6px;padding:.5em .7em;min-width:0}
.card h2{margin:0;font-size:.75em;font-weight:600;color:#999;text-transform:uppercase;
  letter-spacing:.05em}
.card b{display:block;font-size:1.6em;font-variant-numeric:tabular-nums;color:#fff;
  overflow-wrap:anywhere}
.card small{display:block;color:#aaa;font-size:.8em;overflow-wrap:anywhere}
.card.bad b{color:#ffb060}
#chartbox{background:#1d1d1d;border-radius:6px;padding:.5em .7em}
#chartbox h2{margin:0 0 .3em;font-size:.75em;color:#999;text-transform:uppercase}
#chart{display:block;width:100%;height:140px}
.key{font-size:.8em;color:#aaa}.key i{display:inline-block;width:1em;height:3px;
  vertical-align:middle;margin:0 .3em}
</style></head>
<body>
<header><h1>edgeseg</h1><span id="source"></span>
<nav>@LINKS@</nav></header>
<div id="status" hidden></div>
<main>
<div id="view"><img src="/stream.mjpg@QUERY@" alt="edgeseg stream"></div>
<div id="side">
<section id="stats" aria-label="stats">
<div class="card" id="c-fps"><h2>FPS</h2>
<b id="fps">–</b><small id="frame">waiting for frames</small></div>
<div class="card" id="c-latency"><h2>Latency</h2>
<b id="latency">–</b><small id="stages"></small></div>
<div class="card" id="c-objects"><h2>Objects</h2>
<b id="objects">–</b><small id="name"></small></div>
<div class="card" id="c-dropped"><h2>Dropped</h2>
<b id="dropped">–</b><small>frames not processed</small></div>
<div class="card" id="c-camera"><h2>Camera</h2>
<b id="camera">–</b><small id="outages"></small></div>
</section>
<section id="chartbox"><h2>Last <span id="span">minutes</span></h2>
<svg id="chart" viewBox="0 0 300 140" preserveAspectRatio="none" role="img"
 aria-label="objects and FPS over time">
<polyline id="l-objects" fill="none" stroke="#6cf" stroke-width="1.5"
 vector-effect="non-scaling-stroke" points=""/>
<polyline id="l-fps" fill="none" stroke="#fc6" stroke-width="1.5"
 vector-effect="non-scaling-stroke" points=""/>
</svg>
<div class="key"><i style="background:#6cf"></i>objects (max <span id="maxo">0</span>)
<i style="background:#fc6"></i>FPS (max <span id="maxf">0</span>)</div>
</section>
</div>
</main>
<script>
const $ = (id) => document.getElementById(id);
const num = (v, d) => (v === null || v === undefined) ? "–" : Number(v).toFixed(d);
async function poll() {
  try {
    const r = await fetch("/stats.json@QUERY@", {cache: "no-store"});
    const s = await r.json();
    $("status").textContent = s.status || "";
    $("status").hidden = !s.status;
    $("c-camera").classList.toggle("bad", !!s.status);
    $("camera").textContent = s.status ? "lost" : (s.frame === undefined ? "–" : "live");
    if (s.frame !== undefined) {
      $("frame").textContent = "frame " + s.frame;
      $("latency").textContent = num(s.latency_ms, 0) + " ms";
      $("stages").textContent = "inference " + num(s.inference_ms, 1) + " · pre "
        + num(s.preprocess_ms, 1) + " · post " + num(s.postprocess_ms, 1) + " ms";
      $("objects").textContent = s.objects;
      $("name").textContent = s.name || "";
      $("dropped").textContent = s.dropped;
    }
  } catch (e) { $("frame").textContent = "stream stopped"; }
  setTimeout(poll, 500);
}
function line(points, key, top) {
  const n = points.length, span = Math.max(60, points.length ? points[0][0] : 60);
  return points.map((p) => ((1 - p[0] / span) * 300).toFixed(1) + ","
    + (135 - (top ? p[key] / top : 0) * 125).toFixed(1)).join(" ");
}
async function history() {
  try {
    const r = await fetch("/history.json@QUERY@", {cache: "no-store"});
    const h = await r.json();
    $("fps").textContent = num(h.fps, 1);
    $("outages").textContent = h.outages + (h.outages === 1 ? " outage" : " outages");
    const pts = h.points;
    const maxo = Math.max(1, ...pts.map((p) => p[2]));
    const maxf = Math.max(1, ...pts.map((p) => p[1]));
    $("maxo").textContent = maxo; $("maxf").textContent = maxf.toFixed(1);
    $("l-objects").setAttribute("points", line(pts, 2, maxo));
    $("l-fps").setAttribute("points", line(pts, 1, maxf));
    const span = Math.max(60, pts.length ? pts[0][0] : 0);  // as line() draws it
    $("span").textContent = span >= 120 ? Math.round(span / 60) + " minutes" : "minute";
  } catch (e) {}
  setTimeout(history, 2000);
}
poll(); history();
</script></body></html>
"""


def stream_page(query: str, *, metrics: bool, recordings: bool) -> bytes:
    """The stream page; ``query`` (``"?token=…"`` or ``""``) goes on its own requests, and the
    links to ``/metrics`` and ``/recordings/`` appear when the server serves them."""
    links = []
    if recordings:
        links.append(f'<a href="/recordings/{query}">recordings</a>')
    if metrics:
        links.append(f'<a href="/metrics{query}">metrics</a>')
    page = _STREAM_PAGE.replace("@LINKS@", "".join(links)).replace("@QUERY@", query)
    return page.encode("utf-8")


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def listing_page(folder: str, files: Sequence[tuple[str, int, float]], query: str) -> bytes:
    """The recordings' folder: ``files`` as (name, bytes, mtime), newest first, each linked
    (with ``query``, the token) to ``/recordings/NAME``."""
    rows = []
    for name, size, mtime in files:
        when = _dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M:%S")
        href = "/recordings/" + quote(name) + query
        rows.append(
            f'<tr><td><a href="{html.escape(href)}">{html.escape(name)}</a></td>'
            f"<td>{_size(size)}</td><td>{when}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="3">no closed recording yet</td></tr>'
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeseg recordings</title>
<style>body{{margin:0;padding:1em;background:#111;color:#ddd;font:15px system-ui,sans-serif}}
a{{color:#8cf}}table{{border-collapse:collapse;width:100%}}td,th{{padding:.3em .6em;
text-align:left;border-bottom:1px solid #333;overflow-wrap:anywhere}}</style></head>
<body><p><a href="/{html.escape(query)}">← stream</a></p>
<h1>Recordings</h1><p>{html.escape(folder)}</p>
<table><tr><th>file</th><th>size</th><th>closed</th></tr>
{body}
</table></body></html>
"""
    return text.encode("utf-8")
