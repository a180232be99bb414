"""Benchmark commands: they print measured figures; no test asserts on timings."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data

from heritageseg.core.config import ARCHS, IngestConfig
from heritageseg.core.paths import SPLIT_TABLE
from heritageseg.data.artefact import decode_record, iter_parquet
from heritageseg.data.ingest import run_ingest, synthetic_records


def bench_ingest(cfg: IngestConfig) -> dict[str, float]:
    """Images/s of the synthetic generator, the whole ingest stage, and the shard reader."""
    cfg = dataclasses.replace(cfg, source="synthetic", on_error="fail")
    figures: dict[str, float] = {}
    start = time.perf_counter()
    generated = sum(1 for _ in synthetic_records(cfg))
    figures["generator_img_s"] = generated / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "raw"
        start = time.perf_counter()
        result = run_ingest(cfg, out)
        figures["ingest_s"] = time.perf_counter() - start
        start = time.perf_counter()
        megapixels = 0.0
        for raw in iter_parquet(out):
            record = decode_record(raw)
            megapixels += record.mask.size / 1e6
        elapsed = time.perf_counter() - start
        figures["reader_img_s"] = result.records / elapsed
        figures["reader_mpx_s"] = megapixels / elapsed
    figures["images"] = float(cfg.n)
    return figures


# ---------------------------------------------------------------- bench data


def prepare_bench_cache(raw_cfg: IngestConfig, folder: Path, size: int) -> tuple[Path, Path]:
    """A synthetic raw set and its resize cache at `size` px, built in `folder`."""
    from heritageseg.core.config import PrepareConfig, SplitConfig
    from heritageseg.data.artefact import read_metadata
    from heritageseg.data.cache import build_cache
    from heritageseg.data.splits import write_splits

    raw = folder / "raw"
    run_ingest(dataclasses.replace(raw_cfg, source="synthetic"), raw)
    write_splits(read_metadata(raw), SplitConfig(), folder / "splits")
    cache = folder / "cache"
    build_cache(raw, folder / "splits" / SPLIT_TABLE, cache, PrepareConfig(size=size))
    return raw, cache


class ParquetDecodeDataset:
    """The baseline: every sample read from its shard and decoded again, as without a cache."""

    def __init__(self, raw: Path, ids: list[str], size: int, transform):
        import pyarrow.parquet as pq

        from heritageseg.data.artefact import find_shards

        wanted = set(ids)
        self.locations: list[tuple[Path, int, int]] = []  # shard, row group, row in group
        for shard in find_shards(raw):
            parquet = pq.ParquetFile(shard)
            for group in range(parquet.num_row_groups):
                names = parquet.read_row_group(group, columns=["id"]).column("id").to_pylist()
                self.locations += [(shard, group, i) for i, n in enumerate(names) if n in wanted]
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, item: int) -> dict:
        import pyarrow.parquet as pq

        from heritageseg.data.artefact import record_from_row
        from heritageseg.data.cache import resize_to_square

        shard, group, offset = self.locations[item]
        table = pq.ParquetFile(shard).read_row_group(group).slice(offset, 1)
        raw = record_from_row(table.to_pylist()[0], f"{shard.name} group {group}")
        record = decode_record(raw)
        piece = resize_to_square(record.image, record.mask, self.size)
        out = self.transform(image=piece.image, mask=piece.mask)
        return {"image": out["image"], "mask": out["mask"].long()}


def _loader_rate(kind: str, raw: str, cache: str, size: int, workers: int, queue) -> None:
    """Runs in a fresh process so that its peak memory is its own."""
    import resource

    import torch

    from heritageseg.core.config import AugmentConfig
    from heritageseg.data.cache import CacheDataset
    from heritageseg.data.transforms import normalization, train_transform

    torch.set_num_threads(1)
    mean, std = normalization("mit_b0")
    transform = train_transform(AugmentConfig(), size, mean, std)
    dataset = CacheDataset(Path(cache), "train", transform)
    if kind == "decode":
        dataset = ParquetDecodeDataset(Path(raw), list(dataset.index["id"]), size, transform)
    # this process was spawned, which makes spawn the default for its children too: fork the
    # workers, as a training run started from the command line does
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=16,
        shuffle=True,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    seen = 0
    start = time.perf_counter()
    for epoch in range(2):
        if epoch == 1:  # the first epoch pays for start-up and a cold page cache
            seen, start = 0, time.perf_counter()
        for batch in loader:
            seen += len(batch["image"])
    rate = seen / (time.perf_counter() - start)
    del loader
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    queue.put({"img_s": rate, "peak_mb": (peak_kb + workers * child_kb) / 1024})


def measure_loader(kind: str, raw: Path, cache: Path, size: int, workers: int) -> dict:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_loader_rate, args=(kind, str(raw), str(cache), size, workers, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_data(params, size: int, workers: int, train_size: int | None) -> dict:
    """Loader img/s (cache vs decoding) and the default models' training img/s to outpace."""
    with tempfile.TemporaryDirectory() as folder:
        raw, cache = prepare_bench_cache(params.ingest, Path(folder), size)
        figures = {
            "cache": measure_loader("cache", raw, cache, size, workers),
            "decode": measure_loader("decode", raw, cache, size, workers),
        }
    figures["train_img_s"] = {}
    for arch in ARCHS:
        setup = _training_setup(_with_image_size(params, arch, train_size), arch, batches=4)
        _bare_epoch(*setup.bare_args)  # warm-up
        figures["train_img_s"][setup.label] = setup.images / _bare_epoch(*setup.bare_args)
    return figures


def _with_image_size(params, arch: str, image_size: int | None):
    if image_size is None:
        return params
    model = dataclasses.replace(params.train.model(arch), image_size=image_size)
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **{arch: model}))


# ---------------------------------------------------------------- bench train


class _RandomImages(torch.utils.data.Dataset):
    """Fixed random samples, so both loops see identical data at no loading cost."""

    def __init__(self, count: int, size: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, size, size, generator=generator)
        self.masks = torch.randint(0, 16, (count, size, size), generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int) -> dict:
        return {"image": self.images[item], "mask": self.masks[item]}


def _bare_epoch(model, loader, loss_fn, optimizer, precision, channels_last, clip) -> float:
    """The plain PyTorch loop the engine is measured against (same clipping)."""
    model.train()
    start = time.perf_counter()
    for batch in loader:
        images = batch["image"]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            loss = loss_fn(model(images), batch["mask"])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@dataclasses.dataclass
class _TrainingSetup:
    """A model of the params' config on fixed random data, ready for either loop."""

    bare_args: tuple
    images: int
    precision: str
    label: str


def _training_setup(params, arch: str, batches: int) -> _TrainingSetup:
    from heritageseg.nn.engine import resolve_precision
    from heritageseg.nn.losses import build_loss
    from heritageseg.nn.models import build_model

    cfg, model_cfg = params.train, params.train.model(arch)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = resolve_precision(cfg.precision, torch.device("cpu"))
    loss_fn = build_loss(cfg.loss, torch.ones(16), model_cfg.head)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _RandomImages(batches * model_cfg.batch_size, model_cfg.image_size)
    loader = torch.utils.data.DataLoader(data, batch_size=model_cfg.batch_size)
    return _TrainingSetup(
        bare_args=(model, loader, loss_fn, optimizer, precision, cfg.channels_last,
                   cfg.clip_grad_norm),
        images=len(data),
        precision=str(precision.dtype or "fp32"),
        label=f"{model_cfg.encoder} {model_cfg.decoder}, {model_cfg.image_size} px",
    )  # fmt: skip


def bench_train(params, arch: str, batches: int, rounds: int) -> dict:
    """Training img/s of engine.train_one_epoch against a bare loop, interleaved."""
    from heritageseg.nn.engine import train_one_epoch

    cfg, model_cfg = params.train, params.train.model(arch)
    setup = _training_setup(params, arch, batches)
    model, loader, loss_fn, optimizer, precision = setup.bare_args[:5]
    _bare_epoch(*setup.bare_args)  # warm-up
    engine_s, bare_s = [], []
    for _ in range(rounds):
        stats = train_one_epoch(
            model, loader, loss_fn, optimizer, precision=precision,
            clip_grad_norm=cfg.clip_grad_norm, channels_last=cfg.channels_last, progress=True,
        )  # fmt: skip
        engine_s.append(stats.seconds)
        bare_s.append(_bare_epoch(*setup.bare_args))
    engine = setup.images / float(np.median(engine_s))
    bare = setup.images / float(np.median(bare_s))
    return {
        "engine_img_s": engine,
        "bare_img_s": bare,
        "overhead_pct": 100 * (bare / engine - 1),
        "precision": setup.precision,
        "encoder": model_cfg.encoder,
        "image_size": model_cfg.image_size,
        "batch_size": model_cfg.batch_size,
    }
