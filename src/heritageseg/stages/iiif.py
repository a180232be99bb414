"""The conservator-facing outputs of a damage map: IIIF tiles, a manifest and a local viewer.

`write_iiif` turns a scan and its class mask into one folder, `<stem>_iiif/`, that can be
published on any static web server (IIIF Image API 3, level 0: every tile is a plain file) or
zipped and opened from disk:

- `scan/`: JPEG tiles of the scan; `overlay/`: PNG RGBA tiles of every damage class in its
  colour at OVERLAY_ALPHA, transparent elsewhere; `class-<id>/`: the same for one class, one
  layer per class present in the report, so the viewer can toggle each. Each has its
  `info.json` (an ImageService3 whose id is `<base_url>/<layer>`).
- `manifest.json`: IIIF Presentation 3, one Canvas painted with the scan and the overlay, and
  one commenting annotation per damage class (its share of the image and region count) on the
  class's bounding box.
- `viewer.html` + `openseadragon.min.js`: zoom and pan, the overlay and each class toggled by
  a checkbox, a legend. It opens from `file://` (each info.json is inlined, tile URLs are
  relative to the page); `viewer.html#hide=5,9` and `#overlay=off` hide layers at load.

Scans may be hundreds of megapixels: every pipeline streams. The scan is read once, top to
bottom, and so is the mask (into a temporary compressed copy that the overlay and class
layers read), so both may be opened with access="sequential" (not both from one sequential
source).
Every tile of every layer is written, clear ones too: dzsave's skip_blanks (leaving them out,
then linking each to one clear tile so that no URL is missing) was measured slower and larger in
memory, for 25 % less disk (a clear 512 x 512 PNG is about 300 bytes).

The folder is written beside its final place and renamed into it (core.fileio.atomic_dir): a
killed run leaves the previous output whole, never half a folder.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import iiif_prezi3 as prezi
import numpy as np
import pyvips

from heritageseg.core.classes import CLASSES, DAMAGE_IDS, OVERLAY_ALPHA
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_dir
from heritageseg.data.images import streamed_image

NODE_MODULES_ENV = "HERITAGESEG_NODE_MODULES"
OSD_BUILD = Path("openseadragon", "build", "openseadragon")
OSD_SCRIPT = "openseadragon.min.js"
TILE_SIZE = 512
JPEG_QUALITY = 85
PNG_COMPRESSION = 6
SCAN, OVERLAY = "scan", "overlay"
ALPHA = round(OVERLAY_ALPHA * 255)
PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"


def class_layer(class_id: int) -> str:
    """The folder (and IIIF service name) of one class's layer."""
    return f"class-{class_id}"


def node_modules() -> Path:
    """The npm packages folder: $HERITAGESEG_NODE_MODULES, else the repository root's."""
    override = os.environ.get(NODE_MODULES_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[3] / "node_modules"


def openseadragon_script() -> Path:
    """openseadragon.min.js as `make setup` installs it (npm ci); a clear error when missing."""
    script = node_modules() / OSD_BUILD / OSD_SCRIPT
    if not script.is_file():
        raise HeritagesegError(
            f"OpenSeadragon is not installed: {script} is missing; run `make setup` (it runs "
            f"`npm ci` at the repository root), or set {NODE_MODULES_ENV} to a node_modules "
            "folder holding the openseadragon package"
        )
    return script


def present_classes(report: dict) -> list[dict]:
    """The report's damage classes that have pixels, by id: name, id, rgb and their figures."""
    by_id = {c.id: c for c in CLASSES}
    found = []
    for name, entry in report["classes"].items():
        cid = int(entry["id"])
        if cid in DAMAGE_IDS and entry.get("pixels", 0) > 0:
            found.append({**entry, "name": name, "id": cid, "rgb": by_id[cid].rgb})
    return sorted(found, key=lambda entry: entry["id"])


def write_iiif(
    scan: pyvips.Image,
    mask: pyvips.Image,
    report: dict,
    folder: str | Path,
    stem: str,
    base_url: str | None = None,
) -> Path:
    """Write `folder/<stem>_iiif/` (tiles, manifest.json, viewer.html) atomically; its path.

    `scan`: 3-band uchar sRGB; `mask`: 1-band uchar class ids of the same size (0 Clean,
    255 unlabelled: neither is drawn). `base_url` is where the folder will be published (the
    IIIF ids); None gives the final folder's file:// URI.
    """
    _check_inputs(scan, mask)
    script = openseadragon_script()  # before any tiling: a missing set-up fails at once
    final = Path(folder) / f"{stem}_iiif"
    base = (base_url or final.resolve().as_uri()).rstrip("/")
    classes = present_classes(report)
    with atomic_dir(final) as staging:
        infos = {SCAN: _write_scan(scan, staging, base)}
        with _random_access_copy(mask, staging / ".mask.tif") as labels:
            infos[OVERLAY] = _write_layer(labels, _lut(DAMAGE_IDS), staging, OVERLAY, base)
            for entry in classes:
                name = class_layer(entry["id"])
                infos[name] = _write_layer(labels, _lut([entry["id"]]), staging, name, base)
        (staging / "vips-properties.xml").unlink(missing_ok=True)
        manifest = build_manifest(report, classes, infos, staging, base)
        (staging / "manifest.json").write_text(manifest.json(indent=2) + "\n")
        shutil.copyfile(script, staging / OSD_SCRIPT)
        (staging / "viewer.html").write_text(viewer_html(report, classes, infos))
    return final


def _check_inputs(scan: pyvips.Image, mask: pyvips.Image) -> None:
    if (mask.width, mask.height) != (scan.width, scan.height):
        raise HeritagesegError(
            f"the mask is {mask.width} x {mask.height} pixels but the scan is "
            f"{scan.width} x {scan.height}: they must be the same size"
        )
    if scan.format != "uchar" or scan.bands != 3:
        raise HeritagesegError(
            f"the scan must be 3-band 8-bit RGB, not {scan.bands}-band {scan.format}"
        )
    if mask.format != "uchar" or mask.bands != 1:
        raise HeritagesegError(
            f"the mask must be 1-band 8-bit class ids, not {mask.bands}-band {mask.format}"
        )


# ---------------------------------------------------------------- tiles


def _write_scan(scan: pyvips.Image, staging: Path, base: str) -> dict:
    if "icc-profile-data" in scan.get_fields():
        scan = scan.icc_transform("srgb")  # tiles carry no profile: give them sRGB pixels
    quality = f"Q={JPEG_QUALITY}"
    return _tiles(scan.copy(interpretation="srgb"), staging / SCAN, base, "jpg", quality)


def _tiles(image: pyvips.Image, folder: Path, base: str, extension: str, options: str) -> dict:
    """`image` as IIIF level-0 tiles in `folder` (every tile a client can ask for); its info."""
    image.dzsave(
        str(folder), layout="iiif3", id=base, tile_size=TILE_SIZE, overlap=0,
        suffix=f".{extension}[{options}]", keep="none",
    )  # fmt: skip
    info = _read_info(folder)
    _complete_tiles(folder, info, extension)
    return info


def _lut(class_ids) -> pyvips.Image:
    """A 256-entry RGBA lookup table: the class colour at ALPHA for `class_ids`, else clear."""
    table = np.zeros((1, 256, 4), dtype=np.uint8)
    for c in CLASSES:
        if c.id in class_ids:
            table[0, c.id] = (*c.rgb, ALPHA)
    return pyvips.Image.new_from_array(table)


@contextlib.contextmanager
def _random_access_copy(image: pyvips.Image, path: Path) -> Iterator[pyvips.Image]:
    """`image` streamed once into a tiled deflate TIFF, reopened for repeated reads. (An
    uncompressed .v file is memory-mapped: its pages count in the RSS, which then grew by the
    mask's area, +130 MiB at 133 Mpx; a class mask deflates to almost nothing.)"""
    # libvips refuses to read back some tiles larger than the image (90 x 70 in 512 px tiles)
    side = min(512, 16 * math.ceil(max(image.width, image.height) / 16))
    image.tiffsave(str(path), tile=True, tile_width=side, tile_height=side, compression="deflate")
    try:
        yield streamed_image(path)
    finally:
        path.unlink(missing_ok=True)


def _write_layer(
    labels: pyvips.Image, lut: pyvips.Image, staging: Path, name: str, base: str
) -> dict:
    rgba = labels.maplut(lut).copy(interpretation="srgb")
    info = _tiles(rgba, staging / name, base, "png", f"compression={PNG_COMPRESSION}")
    info["preferredFormats"] = ["png"]
    (staging / name / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _read_info(layer: Path) -> dict:
    return json.loads((layer / "info.json").read_text())


def tile_paths(info: dict, extension: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """Every tile a level-0 client derives from an info.json (tiles + scaleFactors, no
    sizes), as `region/size/0/default.EXT` relative to the service, with the tile's pixel
    size; the URLs OpenSeadragon's IIIF tile source asks for, level by level."""
    width, height = info["width"], info["height"]
    tiles = info["tiles"][0]
    tile_w = tiles["width"]
    tile_h = tiles.get("height", tile_w)
    for factor in tiles["scaleFactors"]:
        level_w, level_h = math.ceil(width / factor), math.ceil(height / factor)
        if level_w < tile_w and level_h < tile_h:  # the whole image in one tile
            size = "max" if factor == 1 else f"{level_w},{level_h}"
            yield f"full/{size}/0/default.{extension}", (level_w, level_h)
            continue
        step_w, step_h = tile_w * factor, tile_h * factor
        for y in range(math.ceil(level_h / tile_h)):
            for x in range(math.ceil(level_w / tile_w)):
                left, top = x * step_w, y * step_h
                region_w, region_h = min(step_w, width - left), min(step_h, height - top)
                whole = (left, top, region_w, region_h) == (0, 0, width, height)
                region = "full" if whole else f"{left},{top},{region_w},{region_h}"
                size_w = min(tile_w, level_w - x * tile_w)
                size_h = min(tile_h, level_h - y * tile_h)
                size = "max" if (size_w, size_h) == (width, height) else f"{size_w},{size_h}"
                yield f"{region}/{size}/0/default.{extension}", (size_w, size_h)


def _complete_tiles(layer: Path, info: dict, extension: str) -> None:
    """Give every tile a level-0 client asks for: dzsave names an image within one tile
    `full/w,h/`, where clients ask for `full/max/` (Image API 3's name for the full size); the
    tile is linked under both names."""
    for relative, size in tile_paths(info, extension):
        path = layer / relative
        if path.exists():
            continue
        named = layer / relative.replace("/max/", f"/{size[0]},{size[1]}/")
        if not named.exists():
            raise HeritagesegError(f"dzsave wrote no tile {path} (a libvips layout change?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(named, path)
        except OSError:  # a file system without hard links
            shutil.copyfile(named, path)


# ---------------------------------------------------------------- manifest


def _thumbnail(layer: Path) -> tuple[str, int, int]:
    """The layer's one whole-image tile (`full/w,h/...`), relative path and size."""
    size = min(
        (entry.name for entry in (layer / "full").iterdir() if entry.name != "max"),
        key=lambda name: int(name.split(",")[0]),
    )
    width, height = (int(v) for v in size.split(","))
    image = next((layer / "full" / size / "0").iterdir()).name
    return f"{layer.name}/full/{size}/0/{image}", width, height


def _lang(text: str) -> dict[str, list[str]]:
    return {"en": [text]}


def _model(report: dict) -> str:
    model = report.get("model") or {}
    return f"{model.get('name', 'unknown model')} {model.get('version', '')}".strip()


def _regions(entry: dict) -> str:
    regions = int(entry.get("regions", 0))
    return f"{regions} region{'' if regions == 1 else 's'}"


def class_text(entry: dict) -> str:
    """The comment on a class's bounding box, e.g. "Cracks: 1.23 % of the image, 45 regions"."""
    return f"{entry['name']}: {entry['area_pct']:.2f} % of the image, {_regions(entry)}"


def _painting(
    canvas: prezi.Canvas, base: str, staging: Path, layer: str, label: str, fmt: str
) -> prezi.Annotation:
    path, width, height = _thumbnail(staging / layer)
    body = prezi.AnnotationBody(
        id=f"{base}/{path}",
        type="Image",
        format=fmt,
        width=width,
        height=height,
        label=_lang(label),
        service=[prezi.ServiceV3(id=f"{base}/{layer}", type="ImageService3", profile="level0")],
    )
    return prezi.Annotation(
        id=f"{canvas.id}/annotation/{layer}",
        motivation="painting",
        body=body,
        target=canvas.id,
    )


def build_manifest(
    report: dict, classes: list[dict], infos: dict, staging: Path, base: str
) -> prezi.Manifest:
    """The IIIF Presentation 3 manifest of a written folder (`staging` holds its tiles)."""
    image = Path(report["image"]).name
    width, height = int(report["width"]), int(report["height"])
    model = report.get("model") or {}
    damage = float(report["damage_area_pct"])
    manifest = prezi.Manifest(
        id=f"{base}/manifest.json",
        label=_lang(f"Damage map of {image}"),
        summary=_lang(
            f"{damage:.2f} % of the image is damaged ({len(classes)} damage classes), "
            f"segmented by {_model(report)}"
        ),
        metadata=[
            prezi.KeyValueString(label=_lang(key), value=_lang(str(value)))
            for key, value in (
                ("Source image", image),
                ("Model", model.get("name", "")),
                ("Model version", model.get("version", "")),
                ("Damage area", f"{damage:.2f} %"),
                ("Damage classes", ", ".join(entry["name"] for entry in classes) or "none"),
            )
        ],
    )
    canvas = prezi.Canvas(
        id=f"{base}/canvas/1", label=_lang(image), width=width, height=height, items=[]
    )
    canvas.items.append(
        prezi.AnnotationPage(
            id=f"{canvas.id}/page/painting",
            items=[
                _painting(canvas, base, staging, SCAN, image, "image/jpeg"),
                _painting(canvas, base, staging, OVERLAY, "Damage overlay", "image/png"),
            ],
        )
    )
    comments = []
    for entry in classes:
        x, y, w, h = entry.get("bbox") or (0, 0, width, height)
        comments.append(
            prezi.Annotation(
                id=f"{canvas.id}/annotation/{class_layer(entry['id'])}",
                motivation="commenting",
                body=prezi.TextualBody(
                    type="TextualBody", value=class_text(entry), format="text/plain", language="en"
                ),
                target=f"{canvas.id}#xywh={int(x)},{int(y)},{int(w)},{int(h)}",
            )
        )
    canvas.annotations = [prezi.AnnotationPage(id=f"{canvas.id}/page/damage", items=comments)]
    thumb, thumb_w, thumb_h = _thumbnail(staging / SCAN)
    manifest.thumbnail = [
        prezi.Resource(
            id=f"{base}/{thumb}", type="Image", format="image/jpeg", width=thumb_w, height=thumb_h
        )
    ]
    manifest.items = [canvas]
    return manifest


# ---------------------------------------------------------------- viewer


def _tile_source(info: dict, layer: str, fmt: str) -> dict[str, Any]:
    """An info.json as an OpenSeadragon tile source, its id relative to the page."""
    return {**info, "id": layer, "tileFormat": fmt}


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _script_json(value: Any) -> str:
    return json.dumps(value, indent=1).replace("</", "<\\/")


def viewer_html(report: dict, classes: list[dict], infos: dict) -> str:
    """A page that needs nothing but the folder: OpenSeadragon (canvas drawer, no WebGL) with
    the scan and one layer per class; `#hide=5,9` / `#overlay=off` hide layers at load."""
    image = Path(report["image"]).name
    title = f"Damage map of {image} — {_model(report)}"
    layers = [
        {
            "id": entry["id"],
            "name": entry["name"],
            "text": class_text(entry),
            "source": _tile_source(infos[layer], layer, "png"),
        }
        for entry in classes
        for layer in [class_layer(entry["id"])]
    ]
    config = {
        "scan": _tile_source(infos[SCAN], SCAN, "jpg"),
        "layers": layers,
    }
    rows = "\n".join(
        f'<li><label><input type="checkbox" class="layer" data-id="{entry["id"]}" checked>'
        f'<span class="swatch" style="background:{_hex(entry["rgb"])}"></span>'
        f"<b>{html.escape(entry['name'])}</b><br><small>{entry['area_pct']:.2f} % · "
        f"{_regions(entry)}</small></label></li>"
        for entry in classes
    )
    return _PAGE.format(
        title=html.escape(title),
        image=html.escape(image),
        model=html.escape(_model(report)),
        size=f"{int(report['width'])} × {int(report['height'])} px",
        damage=f"{float(report['damage_area_pct']):.2f}",
        rows=rows or "<li>No damage found.</li>",
        config=_script_json(config),
        script=OSD_SCRIPT,
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; font: 14px/1.4 system-ui, sans-serif; }}
  body {{ display: flex; }}
  #panel {{ width: 280px; padding: 12px 16px; box-sizing: border-box; overflow-y: auto;
           background: #f4f1ea; border-right: 1px solid #ccc; }}
  #panel h1 {{ font-size: 16px; margin: 0 0 4px; word-break: break-all; }}
  #panel ul {{ list-style: none; padding: 0; }}
  #panel li {{ margin: 6px 0; }}
  .swatch {{ display: inline-block; width: 14px; height: 14px; margin: 0 6px -2px 4px;
            border: 1px solid #333; }}
  #viewer {{ flex: 1; background: #222; }}
</style>
</head>
<body>
<div id="panel">
  <h1>{image}</h1>
  <div>Model: {model}</div>
  <div>{size}</div>
  <p><b>Damage: {damage} %</b> of the image</p>
  <label><input type="checkbox" id="overlay" checked> Damage overlay</label>
  <ul id="legend">
{rows}
  </ul>
  <small>Scroll to zoom, drag to pan. <code>#hide=ID,ID</code> or
  <code>#overlay=off</code> in the address hides layers.</small>
</div>
<div id="viewer"></div>
<script src="{script}"></script>
<script>
const CONFIG = {config};
const params = new URLSearchParams(
  (location.search.slice(1) + "&" + location.hash.slice(1)).replace(/^&|&$/g, ""));
const hidden = new Set((params.get("hide") || "").split(",").filter(Boolean).map(Number));
const overlayOff = ["off", "0", "false", "hide"].includes(params.get("overlay"));
const viewer = OpenSeadragon({{
  element: document.getElementById("viewer"),
  drawer: "canvas",
  showNavigationControl: false,
  crossOriginPolicy: false,
  tileSources: [CONFIG.scan],
}});
const items = new Map();
CONFIG.layers.forEach((layer) => {{
  viewer.addTiledImage({{
    tileSource: layer.source,
    opacity: 1,
    success: (event) => {{ items.set(layer.id, event.item); show(); }},
  }});
}});
const overlayBox = document.getElementById("overlay");
const boxes = Array.from(document.querySelectorAll("input.layer"));
overlayBox.checked = !overlayOff;
boxes.forEach((box) => {{ box.checked = !hidden.has(Number(box.dataset.id)); }});
function show() {{
  boxes.forEach((box) => {{
    const item = items.get(Number(box.dataset.id));
    if (item) item.setOpacity(overlayBox.checked && box.checked ? 1 : 0);
  }});
}}
overlayBox.addEventListener("change", show);
boxes.forEach((box) => box.addEventListener("change", show));
</script>
</body>
</html>
"""
