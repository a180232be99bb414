"""Plain-text tables printed at the end of `make repro`."""

from __future__ import annotations

from heritageseg.classes import CLASS_NAMES


def dataset_summary(manifest: dict) -> str:
    """The ingested data set in a few lines: size, sources, class pixel shares."""
    size = manifest["image_size"]
    pixels = manifest["class_pixels"]
    labelled = sum(v for k, v in pixels.items() if k != "Background") or 1
    lines = [
        f"data set: {manifest['records']} records from {manifest['source']['kind']} "
        f"({len(manifest['shards'])} shards, checksum {manifest['checksum'][:12]}), "
        f"rejected {manifest['rejected']}",
        f"image sizes: {size['min_width']}-{size['max_width']} x "
        f"{size['min_height']}-{size['max_height']} px",
        "content: " + ", ".join(f"{k} {v}" for k, v in manifest["content_counts"].items()),
        "material: " + ", ".join(f"{k} {v}" for k, v in manifest["material_counts"].items()),
        "",
        f"{'class':<16}{'pixels':>14}{'share':>9}",
    ]
    for name in [*CLASS_NAMES, "Background"]:
        count = pixels[name]
        share = "" if name == "Background" else f"{100 * count / labelled:8.3f}%"
        lines.append(f"{name:<16}{count:>14,}{share:>9}")
    return "\n".join(lines)


def training_summary(rows: list[dict]) -> str:
    """One line per trained architecture, from its train_metrics.json and config.json."""
    header = (
        f"{'arch':<10}{'family':<8}{'encoder':<24}{'params':>8}{'val mIoU':>10}"
        f"{'epoch':>8}{'train s':>9}{'img/s':>8}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['arch']:<10}{row['family']:<8}{row['encoder']:<24}{row['params_m']:>7.1f}M"
            f"{100 * row['best_val_miou']:>9.2f}%"
            f"{row['best_epoch']:>4}/{row['epochs_run']:<3}"
            f"{row['train_seconds']:>9.0f}{row['train_images_per_s']:>8.1f}"
        )
    return "\n".join(lines)
