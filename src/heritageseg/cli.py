"""The `heritageseg` command: one subcommand per pipeline stage. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from heritageseg.core import paths
from heritageseg.core.config import ARCHS, load_params, with_overrides
from heritageseg.core.errors import HeritagesegError
from heritageseg.infer.backends import BACKENDS, PREDICT_DEFAULT_HELP
from heritageseg.ops.tracking import PRODUCTION, model_name

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except HeritagesegError as error:
        print(f"heritageseg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heritageseg: interrupted", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heritageseg", description=__doc__)
    parser.add_argument("--params", default=str(paths.PARAMS), help="parameters file")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data_commands, _add_model_commands, _add_output_commands,
                _add_mlflow_commands, _add_bench_commands):  # fmt: skip
        add(commands)
    return parser


def _folder(parser: argparse.ArgumentParser, flag: str, default: Path, help: str = "") -> None:
    """A path option whose default is the pipeline's own (core.paths, as in dvc.yaml)."""
    parser.add_argument(flag, default=str(default), help=f"{help} (default {default})".strip())


def _add_data_commands(commands) -> None:
    validate = commands.add_parser(
        "validate", help="check the whole params file (the first DVC stage: before any output goes)"
    )
    _folder(validate, "--out", paths.PARAMS_CHECKED, "written when every key is valid")
    validate.set_defaults(handler=_validate)

    ingest = commands.add_parser("ingest", help="read a source into validated ARTeFACT shards")
    ingest.add_argument("--source", choices=["synthetic", "parquet", "folder", "hf"])
    _folder(ingest, "--out", paths.RAW, "output folder")
    ingest.add_argument("--path", help="parquet shards or PNG folder; hf: download folder")
    ingest.add_argument("--n", type=int, help="synthetic: number of records")
    ingest.add_argument("--seed", type=int, help="synthetic: seed")
    ingest.add_argument("--on-error", choices=["fail", "skip"])
    ingest.set_defaults(handler=_ingest)

    split = commands.add_parser("split", help="grouped, stratified train/val/test + LOO folds")
    _folder(split, "--raw", paths.RAW, "ingested shards")
    _folder(split, "--out", paths.SPLITS, "output folder")
    split.set_defaults(handler=_split)

    prepare = commands.add_parser("prepare", help="decode once into the uint8 memmap cache")
    _folder(prepare, "--raw", paths.RAW)
    _folder(prepare, "--splits", paths.SPLITS)
    _folder(prepare, "--out", paths.CACHE)
    prepare.add_argument("--mode", choices=["resize", "tile"], help="override prepare.mode")
    prepare.set_defaults(handler=_prepare)

    weights = commands.add_parser("weights", help="class weights from the train split")
    _folder(weights, "--cache", paths.CACHE)
    _folder(weights, "--out", paths.CLASS_WEIGHTS)
    weights.set_defaults(handler=_weights)


def _add_model_commands(commands) -> None:
    train = commands.add_parser("train", help="train one architecture (or all) on the cache")
    train.add_argument("--arch", required=True, choices=[*ARCHS, "all"])
    _folder(train, "--cache", paths.CACHE)
    _folder(train, "--weights", paths.CLASS_WEIGHTS)
    _folder(train, "--out", paths.MODELS, "writes OUT/ARCH")
    train.add_argument("--fresh", action="store_true", help="ignore a saved resume state")
    train.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when available)")
    _folder(train, "--raw", paths.RAW, "ingested data (its manifest is tagged)")
    _add_launch_arguments(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="score a trained architecture")
    evaluate.add_argument("--arch", required=True, choices=[*ARCHS, "all"])
    evaluate.add_argument("--split", choices=["test", "val"], help="default evaluate.split")
    _folder(evaluate, "--cache", paths.CACHE)
    _folder(evaluate, "--raw", paths.RAW)
    _folder(evaluate, "--splits", paths.SPLITS)
    _folder(evaluate, "--models", paths.MODELS)
    _folder(evaluate, "--out", paths.METRICS, "writes OUT/ARCH")
    evaluate.add_argument("--backend", choices=BACKENDS, help="default evaluate.backend")
    _add_launch_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    loco = commands.add_parser(
        "loco", help="domain generalisation: leave one content (or material) type out"
    )
    loco.add_argument("--arch", required=True, choices=ARCHS)
    loco.add_argument("--by", choices=paths.FOLD_BY, default=paths.FOLD_BY[0])
    _folder(loco, "--cache", paths.CACHE)
    _folder(loco, "--splits", paths.SPLITS)
    _folder(loco, "--out", paths.LOCO, "writes OUT/BY/ARCH")
    loco.set_defaults(handler=_loco)

    study = commands.add_parser(
        "study", help="archs x seeds x held-out folds (params study:), locally or as a job array"
    )
    _folder(study, "--cache", paths.CACHE)
    _folder(study, "--splits", paths.SPLITS)
    _folder(study, "--weights", paths.CLASS_WEIGHTS)
    _folder(study, "--raw", paths.RAW, "ingested data (its manifest is tagged)")
    _folder(study, "--metrics", paths.METRICS, "the single-seed benchmark's results")
    _folder(study, "--work", paths.STUDY_WORK, "each run's training and fold cache")
    _folder(study, "--out", paths.STUDY, "results and summary")
    study.add_argument("--fresh", action="store_true", help="rerun every combination")
    _add_launch_arguments(study)
    study.set_defaults(handler=_study)

    export = commands.add_parser("export", help="export a trained architecture")
    export_kinds = export.add_subparsers(dest="export", required=True)
    export_onnx = export_kinds.add_parser("onnx", help="ONNX graph for onnxruntime")
    export_onnx.add_argument("--arch", required=True, choices=ARCHS)
    _folder(export_onnx, "--models", paths.MODELS)
    export_onnx.add_argument(
        "--out", help=f"default MODELS/ARCH/{paths.ONNX_GRAPH} ({paths.INT8_GRAPH})"
    )
    export_onnx.add_argument("--int8", action="store_true", help="static int8 quantisation")
    _folder(export_onnx, "--cache", paths.CACHE, "int8: calibration images")
    export_onnx.set_defaults(handler=_export_onnx)


def _add_output_commands(commands) -> None:
    profile = commands.add_parser("profile", help="switch params.yaml to a named profile")
    profile.add_argument("name", nargs="?", help="laptop (default), paper, paper-native, ...")
    profile.set_defaults(handler=_profile)

    report = commands.add_parser("report", help="benchmark.md and index.html of every arch")
    _folder(report, "--metrics", paths.METRICS)
    _folder(report, "--models", paths.MODELS)
    report.add_argument(
        "--study", help=f"add the study's sections from this folder (e.g. {paths.STUDY})"
    )
    _folder(report, "--out", paths.REPORTS, "output folder")
    report.set_defaults(handler=_report)

    summary = commands.add_parser("summary", help="print what the pipeline has produced")
    _folder(summary, "--raw", paths.RAW)
    _folder(summary, "--models", paths.MODELS)
    _folder(summary, "--metrics", paths.METRICS)
    _folder(summary, "--reports", paths.REPORTS)
    summary.set_defaults(handler=_summary)


def _add_bench_commands(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print measured figures")
    bench_kinds = bench.add_subparsers(dest="bench", required=True)
    bench_ingest = bench_kinds.add_parser("ingest", help="synthetic generator and reader img/s")
    bench_ingest.add_argument("--n", type=int, help="images (default: ingest.n)")
    bench_ingest.set_defaults(handler=_bench_ingest)
    bench_data = bench_kinds.add_parser("data", help="cache-backed loader vs decoding each time")
    bench_data.add_argument("--n", type=int, default=120, help="synthetic images (default 120)")
    bench_data.add_argument(
        "--min-size", type=int, default=1024, help="smallest side drawn (real images: 371+)"
    )
    bench_data.add_argument("--max-size", type=int, default=2048, help="largest side drawn")
    bench_data.add_argument("--size", type=int, default=384, help="sample side (default 384)")
    bench_data.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    bench_data.add_argument(
        "--train-size", type=int, help="model input (default: each arch's image_size)"
    )
    bench_data.set_defaults(handler=_bench_data)
    bench_train = bench_kinds.add_parser("train", help="engine vs bare PyTorch loop, img/s")
    bench_train.add_argument("--arch", required=True, choices=ARCHS)
    bench_train.add_argument("--batches", type=int, default=6, help="batches per round")
    bench_train.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    bench_train.add_argument("--image-size", type=int, help="override train.ARCH.image_size")
    bench_train.add_argument("--encoder", help="override train.ARCH.encoder")
    bench_train.add_argument("--batch-size", type=int, help="override train.ARCH.batch_size")
    bench_train.set_defaults(handler=_bench_train)
    bench_infer = bench_kinds.add_parser("infer", help="inference backends vs eager fp32")
    bench_infer.add_argument("--archs", nargs="+", choices=ARCHS, default=["convnext", "segformer"])
    bench_infer.add_argument(
        "--sizes", nargs="+", type=int, help="default: the archs' train.ARCH.image_size and 384"
    )
    bench_infer.add_argument(
        "--backends", nargs="+", choices=BACKENDS, help="default: all that run here"
    )
    _folder(bench_infer, "--cache", paths.CACHE, "test split to score on")
    _folder(bench_infer, "--models", paths.MODELS, "trained models, when present")
    bench_infer.add_argument("--images", type=int, default=8, help="test images per run")
    bench_infer.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    bench_infer.add_argument("--batch-size", type=int, default=4)
    _folder(bench_infer, "--out", paths.INFERENCE_REPORT)
    bench_infer.set_defaults(handler=_bench_infer)
    bench_predict = bench_kinds.add_parser(
        "predict", help="`predict` on synthetic scans: seconds, Mpx/s, peak RSS per size"
    )
    bench_predict.add_argument("--mpx", type=float, nargs="+", default=[33, 133, 500],
                               help="scan sizes in megapixels (default 33 133 500)")  # fmt: skip
    bench_predict.add_argument("--model", default=f"models:/{model_name('segformer')}@{PRODUCTION}")
    bench_predict.add_argument("--backend", choices=BACKENDS, help=PREDICT_DEFAULT_HELP)
    bench_predict.add_argument(
        "--work", type=Path, help="folder for scans and maps (default: temp)"
    )
    bench_predict.set_defaults(handler=_bench_predict)
    bench_gpu = bench_kinds.add_parser(
        "gpu", help="prove the CUDA paths: training, inference backends, DDP, data rate"
    )
    bench_gpu.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --smoke)")
    bench_gpu.add_argument(
        "--smoke", action="store_true", help="the laptop models, a few steps (minutes on a CPU)"
    )
    bench_gpu.add_argument("--steps", type=int, help="training steps per model and precision")
    bench_gpu.add_argument("--budget-s", type=float, help="sections past it are not run")
    _folder(bench_gpu, "--out", paths.GPU_REPORT, "report (+ .json beside it)")
    bench_gpu.set_defaults(handler=_bench_gpu)


def _add_mlflow_commands(commands) -> None:
    promote = commands.add_parser("promote", help="registry: promote an arch to production")
    promote.add_argument("--arch", required=True, choices=ARCHS)
    promote.add_argument("--force", action="store_true", help="promote even if test mIoU is lower")
    promote.add_argument("--rollback", action="store_true", help="restore the previous version")
    promote.add_argument("--version", help="registered version (default: the newest)")
    _folder(promote, "--raw", paths.RAW, "ingested data (the card's training data)")
    _folder(promote, "--models", paths.MODELS)
    _folder(promote, "--metrics", paths.METRICS)
    _folder(promote, "--card", paths.MODEL_CARD, "the model card, also the version's description")
    promote.set_defaults(handler=_promote)

    predict = commands.add_parser("predict", help="damage maps of images of any size")
    predict.add_argument(
        "images", nargs="+", type=Path, help="image files (PNG/JPEG/TIFF...) or folders of them"
    )
    predict.add_argument("--model", default=f"models:/{model_name('segformer')}@{PRODUCTION}")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--backend", choices=BACKENDS, help=PREDICT_DEFAULT_HELP)
    predict.add_argument(
        "--on-error", choices=["stop", "skip"], default="stop",
        help="a bad image: stop with its message (default), or skip it and list it at the end",
    )  # fmt: skip
    predict.add_argument(
        "--iiif-base", metavar="URL",
        help="where the STEM_iiif folders will be published (IIIF ids); default: file:// paths",
    )  # fmt: skip
    predict.set_defaults(handler=_predict)

    ui = commands.add_parser("ui", help="the MLflow UI on 127.0.0.1 over the project's store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    ui.set_defaults(handler=_ui)

    server = commands.add_parser(
        "server", help="a team's MLflow server: PostgreSQL store, proxied artifacts, logins"
    )
    server.add_argument(
        "--folder", type=Path, default=Path("mlflow-server"),
        help="database, artifacts and auth settings (default mlflow-server/)",
    )  # fmt: skip
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--db-port", type=int, default=5433, help="PostgreSQL, on 127.0.0.1")
    server.set_defaults(handler=_server)


def _promote(args: argparse.Namespace) -> None:
    from heritageseg.ops import registry

    cfg = load_params(args.params).tracking
    if not cfg.enabled:
        print("tracking.enabled is false: no registry, nothing to promote")
        return
    name = model_name(args.arch)
    if args.rollback:
        old, new = registry.rollback(cfg, args.arch)
        print(f"{name}: production rolled back from v{old} to v{new}")
        return
    d = registry.promote(cfg, args.arch, force=args.force, version=args.version)
    figures = f"test mIoU {d.candidate_miou:.4f} vs production " + (
        "none" if d.production is None else f"v{d.production} {d.production_miou:.4f}"
    )
    print(f"{name} v{d.candidate}: {d.verdict} ({figures})")
    _write_model_card(args, cfg, d)


def _write_model_card(args: argparse.Namespace, cfg, decision) -> None:
    """The candidate's model card, from models/ARCH and metrics/ARCH when they are the
    candidate's (its run trained them), as the version's description and as a file."""
    from heritageseg.core.fileio import atomic_write_text
    from heritageseg.ops import registry
    from heritageseg.ops.tracking import read_run_file
    from heritageseg.stages.model_card import model_card

    saved = read_run_file(Path(args.models) / args.arch)
    if saved is None or saved["run_id"] != decision.candidate_run:
        print(f"no model card: {Path(args.models) / args.arch} is not v{decision.candidate}'s "
              f"training (run {decision.candidate_run or 'unknown'})")  # fmt: skip
        return
    text = model_card(decision.name, decision.candidate, args.arch, raw=Path(args.raw),
                      models=Path(args.models), metrics=Path(args.metrics),
                      decision=decision.describe())  # fmt: skip
    atomic_write_text(Path(args.card), text)
    registry.describe_version(cfg, decision.name, decision.candidate, text)
    print(f"model card: {args.card} (and the description of v{decision.candidate})")


def _predict(args: argparse.Namespace) -> None:
    from heritageseg.ops import registry
    from heritageseg.stages.predict import summary_line, write_damage_maps

    params = load_params(args.params)
    registry.check_registered(params.tracking, args.model)
    reports, failures = write_damage_maps(
        args.images, args.model, args.out, args.backend, window=params.predict,
        on_error=args.on_error, iiif_base=args.iiif_base,
    )  # fmt: skip
    for report in reports:
        print(summary_line(report))
    print(f"label masks, overlays, IIIF viewers and damage reports of {len(reports)} image(s) "
          f"in {args.out} (open STEM_iiif/viewer.html in a browser)")  # fmt: skip
    if failures:
        raise HeritagesegError(f"{len(failures)} image(s) skipped:\n  " + "\n  ".join(failures))


def _ui(args: argparse.Namespace) -> None:
    from heritageseg.ops import tracking

    cfg = load_params(args.params).tracking
    uri = tracking.tracking_uri(cfg)
    experiment = tracking.connect(cfg)  # creates the store and the experiment on first use
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1",
               "--port", str(args.port), "--workers", str(args.workers),
               "--backend-store-uri", uri]  # fmt: skip
    # MLflow's GenAI job runner (a pool of consumer processes) serves nothing of this project
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    host = f"http://127.0.0.1:{args.port}"
    benchmark = tracking.latest_benchmark(experiment)
    if benchmark is not None:
        print(f"the latest benchmark, one row an architecture: "
              f"{host}/{tracking.comparison_view(experiment, benchmark)}")  # fmt: skip
    print(f"MLflow UI on {host} over {uri} (Ctrl-C stops it); every run's metrics as charts: "
          f"{host}/{tracking.experiment_page(experiment)}", flush=True)  # fmt: skip
    os.execv(sys.executable, command)  # the server replaces this process: one pid, Ctrl-C works


def _server(args: argparse.Namespace) -> None:
    from heritageseg.ops.server import ADMIN_PASSWORD_ENV, run_server

    print(
        f"MLflow server on http://127.0.0.1:{args.port} (PostgreSQL on {args.db_port}, data in "
        f"{args.folder}); admin: user admin, password from {ADMIN_PASSWORD_ENV}; clients sign "
        "in with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD", flush=True,
    )  # fmt: skip
    status = run_server(args.folder, args.port, args.db_port)
    if status:
        raise SystemExit(status)


def _add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor", choices=["local", "slurm", "debug"], help="default launch.executor"
    )
    parser.add_argument("--profile", help="Slurm profile YAML (default launch.profile)")


def _launch(args: argparse.Namespace, params) -> dict:
    """run_jobs keyword arguments from launch: in params.yaml and the CLI overrides."""
    from heritageseg.ops.launch import load_profile

    cfg = with_overrides(params.launch, executor=args.executor, profile=args.profile)
    profile = load_profile(cfg.profile) if cfg.executor == "slurm" else None
    return {"executor": cfg.executor, "profile": profile}


def _ingest(args: argparse.Namespace) -> None:
    from heritageseg.data.ingest import REJECTS, run_ingest

    cfg = with_overrides(
        load_params(args.params).ingest,
        source=args.source,
        path=args.path,
        n=args.n,
        seed=args.seed,
        on_error=args.on_error,
    )
    result = run_ingest(cfg, args.out)
    print(f"ingested {result.records} records into {result.out}", end="")
    if cfg.on_error == "skip":
        print(f"; rejected {len(result.rejects)} (listed in {result.out / REJECTS})", end="")
    print()


def _split(args: argparse.Namespace) -> None:
    from heritageseg.data.artefact import read_metadata
    from heritageseg.data.splits import write_splits

    cfg = load_params(args.params).split
    result = write_splits(read_metadata(args.raw), cfg, Path(args.out))
    counts = ", ".join(
        f"{name} {n} ({result.groups[name]} groups)" for name, n in result.counts.items()
    )
    print(f"split into {counts}; no group crosses splits; folds in {args.out}")


def _prepare(args: argparse.Namespace) -> None:
    from heritageseg.data.cache import build_cache

    cfg = with_overrides(load_params(args.params).prepare, mode=args.mode)
    split_table = Path(args.splits) / paths.SPLIT_TABLE
    info = build_cache(Path(args.raw), split_table, Path(args.out), cfg)
    rows = ", ".join(f"{k} {v}" for k, v in info["rows_per_split"].items())
    print(f"cached {info['rows']} {cfg.mode} samples of {info['side']} px ({rows}) in {args.out}")


def _weights(args: argparse.Namespace) -> None:
    from heritageseg.core.fileio import write_json
    from heritageseg.data.cache import iter_masks
    from heritageseg.data.weights import pixel_counts, weights_document

    cfg = load_params(args.params).weights
    document = weights_document(pixel_counts(iter_masks(Path(args.cache), "train")), cfg)
    write_json(args.out, document)
    low, high = min(document["weights"]), max(document["weights"])
    print(f"{cfg.method} weights {low:.3f}..{high:.3f} (ratio {high / low:.1f}) in {args.out}")


def _train(args: argparse.Namespace) -> None:
    from heritageseg.core.fileio import exclusive
    from heritageseg.ops.launch import TrainJob, print_epoch, run_jobs

    params = load_params(args.params)
    launch = _launch(args, params)
    local = launch["executor"] == "local"
    main_rank = int(os.environ.get("RANK", "0")) == 0
    archs = ARCHS if args.arch == "all" else (args.arch,)
    with contextlib.ExitStack() as runs:
        for arch in archs if main_rank else ():  # one training per output folder at a time
            runs.enter_context(exclusive(Path(args.out) / arch, "training"))
        trackers = [
            runs.enter_context(_training_run(params, args, arch, Path(args.out) / arch, main_rank))
            for arch in archs
        ]
        calls = [
            {"params": params, "arch": arch, "cache": Path(args.cache),
             "class_weights": Path(args.weights), "out": Path(args.out) / arch,
             "fresh": args.fresh, "device": args.device, "progress": local,
             "on_epoch": (tracker.on_epoch if tracker else None) if local else print_epoch}
            for arch, tracker in zip(archs, trackers, strict=True)
        ]  # fmt: skip
        results = run_jobs(TrainJob(), calls, name=f"train-{args.arch}", **launch)
        if not local:  # the jobs printed their epochs; their runs get them now, with the job ids
            for tracker, result in zip(trackers, results, strict=True):
                if tracker:
                    tracker.record_job(result.history, result.job)
    if not main_rank:
        return  # under torchrun every rank trains; one reports
    for arch, result in zip(archs, results, strict=True):
        print(
            f"{arch}: best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch} "
            f"of {result.epochs_run}{' (early stop)' if result.stopped_early else ''}; "
            f"weights in {result.out}"
        )


def _training_run(params, args: argparse.Namespace, arch: str, out: Path, main_rank: bool):
    """The MLflow child run around training (rank 0, tracking on); else yields None."""
    if not (params.tracking.enabled and main_rank):
        return contextlib.nullcontext()
    from heritageseg.ops.tracking import training_run

    return training_run(params, Path(args.params), arch, out, Path(args.raw))


def _evaluate(args: argparse.Namespace) -> None:
    from heritageseg.ops.launch import run_jobs
    from heritageseg.stages.evaluate import run_evaluation, write_evaluation

    params = load_params(args.params)
    if args.backend:
        import dataclasses

        evaluate = with_overrides(params.evaluate, backend=args.backend)
        params = dataclasses.replace(params, evaluate=evaluate)
    split = args.split or params.evaluate.split
    archs = ARCHS if args.arch == "all" else (args.arch,)
    calls = [
        {"params": params, "arch": arch, "cache": Path(args.cache), "raw": Path(args.raw),
         "splits": Path(args.splits), "model_dir": Path(args.models) / arch, "split": split}
        for arch in archs
    ]  # fmt: skip
    if params.tracking.enabled:  # a broken run file fails now, not after the evaluation
        from heritageseg.ops.tracking import read_run_file

        for call in calls:
            read_run_file(call["model_dir"])
    results = run_jobs(run_evaluation, calls, name=f"evaluate-{args.arch}", **_launch(args, params))
    for arch, evaluation in zip(archs, results, strict=True):
        write_evaluation(evaluation, Path(args.out) / arch)
        for name, document in evaluation.documents.items():
            low, high = document["miou_ci95"]
            print(
                f"{arch} {split} {name}: mIoU {100 * document['miou']:.2f}% "
                f"[{100 * low:.2f}, {100 * high:.2f}], {document['throughput_img_s']:.1f} img/s"
            )
        if params.tracking.enabled:
            _track_evaluation(args, params, arch, evaluation.documents)


def _track_evaluation(args: argparse.Namespace, params, arch: str, documents: dict) -> None:
    from heritageseg.ops import registry, tracking

    model_dir = Path(args.models) / arch
    run_id, benchmark = tracking.log_evaluation(
        params, arch, model_dir, Path(args.out) / arch, documents, Path(args.raw),
        Path(args.params),
    )  # fmt: skip
    version = registry.register_evaluation(
        params.tracking, run_id, arch, model_dir, documents, benchmark, params.predict,
        Path(args.cache),
    )  # fmt: skip
    where = f"; registered {tracking.model_name(arch)} v{version}" if version else ""
    print(f"logged to MLflow run {run_id} ({tracking.tracking_uri(params.tracking)}){where}")


def _validate(args: argparse.Namespace) -> None:
    from heritageseg.core.fileio import atomic_write_text
    from heritageseg.ops.launch import load_profile

    launch = load_params(args.params).launch
    if launch.executor == "slurm":
        load_profile(launch.profile)
    # The same bytes whatever the values: stages after it rerun only for their own params.
    atomic_write_text(args.out, f"{args.params}: valid\n")
    print(f"{args.params}: every key valid")


def _profile(args: argparse.Namespace) -> None:
    from heritageseg.ops.profiles import apply_profile, available

    load_params(args.params)  # the file a profile rewrites must exist and be valid first
    if not args.name:
        print("profiles: " + ", ".join(available()))
        return
    values = apply_profile(args.name, Path(args.params))
    print(f"{args.params}: profile {args.name} set {len(values)} value(s); run `dvc repro`")


def _loco(args: argparse.Namespace) -> None:
    from heritageseg.stages.loco import run_leave_one_out, summary_markdown

    summary = run_leave_one_out(
        load_params(args.params), args.arch, cache=Path(args.cache), splits=Path(args.splits),
        out=Path(args.out) / args.by / args.arch, by=args.by,
    )  # fmt: skip
    print(summary_markdown(summary))


def _study(args: argparse.Namespace) -> None:
    from heritageseg.ops.study import StudyFolders, run_study
    from heritageseg.stages.report import render_markdown, study_sections

    params = load_params(args.params)
    folders = StudyFolders(
        cache=Path(args.cache), splits=Path(args.splits), class_weights=Path(args.weights),
        metrics=Path(args.metrics), work=Path(args.work), out=Path(args.out),
    )  # fmt: skip
    outcome = run_study(params, folders, fresh=args.fresh, **_launch(args, params))
    print(render_markdown(study_sections(outcome.summary, None), Path(args.out), "study"))
    if params.tracking.enabled:
        from heritageseg.ops.tracking import log_study

        parent = log_study(params.tracking, Path(args.params), Path(args.raw), outcome.summary,
                           outcome.results, folders.out)  # fmt: skip
        print(f"logged the study to MLflow run {parent}")
    if outcome.failures:
        lines = [f"- {f['arch']} seed {f['seed']} fold {f['fold']}: log {f['log'] or '(here)'}"
                 f"\n{f['error'].rstrip()}" for f in outcome.failures]  # fmt: skip
        raise HeritagesegError(
            f"{len(outcome.failures)} of the study's runs failed (the others' results are "
            f"kept; rerun `heritageseg study` to run only these):\n" + "\n".join(lines)
        )


def _report(args: argparse.Namespace) -> None:
    from heritageseg.stages.report import run_report

    params = load_params(args.params)
    out = Path(args.out)
    results = run_report(
        list(ARCHS), metrics=Path(args.metrics), models=Path(args.models), out=out,
        iterations=params.evaluate.bootstrap, seed=params.evaluate.seed,
        study=Path(args.study) if args.study else None,
    )  # fmt: skip
    archs = ", ".join(r.arch for r in results)
    print(f"report of {archs}: {out / paths.BENCHMARK_MD}, {out / paths.INDEX_HTML}")
    if params.tracking.enabled:
        from heritageseg.ops.tracking import log_report

        parents = log_report(params.tracking, out, Path(args.models))
        print(f"logged the report to MLflow run(s) {', '.join(parents) or '(none)'}")


def _export_onnx(args: argparse.Namespace) -> None:
    from heritageseg.infer.backends import export_trained_onnx

    folder = Path(args.models) / args.arch
    name = paths.INT8_GRAPH if args.int8 else paths.ONNX_GRAPH
    out = Path(args.out) if args.out else folder / name
    check = export_trained_onnx(folder, out, int8=args.int8, cache=Path(args.cache))
    print(
        f"{args.arch}: {out} ({out.stat().st_size / 2**20:.1f} MB); onnxruntime vs eager on a "
        f"random input: max |Δlogit| {check['max_abs_diff']:.2e}, "
        f"agreement {check['agreement']:.4f}"
    )


def _summary(args: argparse.Namespace) -> None:
    from heritageseg.stages.summary import (
        dataset_summary,
        read_manifest,
        result_rows,
        results_summary,
    )

    print(dataset_summary(read_manifest(Path(args.raw))))
    rows = result_rows(Path(args.models), Path(args.metrics))
    if rows:
        print()
        print(results_summary(rows))
    report = Path(args.reports) / paths.INDEX_HTML
    if report.is_file():
        print(f"\nreport: {report.resolve().as_uri()} (and {report.with_name(paths.BENCHMARK_MD)})")


def _bench_ingest(args: argparse.Namespace) -> None:
    from heritageseg.bench.data import bench_ingest

    cfg = with_overrides(load_params(args.params).ingest, n=args.n)
    figures = bench_ingest(cfg)
    n = int(figures["images"])
    print(f"synthetic ARTeFACT, {n} images of {cfg.min_size}-{cfg.max_size} px per side")
    print(f"  generator (generate + PNG encode): {figures['generator_img_s']:8.1f} img/s")
    print(f"  ingest stage (+ validate + shards): {figures['ingest_s']:8.1f} s in all")
    print(
        f"  reader (parquet -> RGB + mask):     {figures['reader_img_s']:8.1f} img/s"
        f"  ({figures['reader_mpx_s']:.1f} Mpx/s)"
    )


def _bench_data(args: argparse.Namespace) -> None:
    import dataclasses

    from heritageseg.bench.data import bench_data

    params = load_params(args.params)
    source = with_overrides(params.ingest, n=args.n, min_size=args.min_size, max_size=args.max_size)
    params = dataclasses.replace(params, ingest=source)
    figures = bench_data(params, args.size, args.workers, args.train_size)
    cache, decode = figures["cache"], figures["decode"]
    print(
        f"train loader: {args.n} synthetic images of {args.min_size}-{args.max_size} px, "
        f"{args.size} px samples, train augmentations, {args.workers} workers, batch 16"
    )
    for name, row in (("uint8 memmap cache", cache), ("decode parquet each time", decode)):
        print(f"  {name:<26}{row['img_s']:8.1f} img/s   peak {row['peak_mb']:7.0f} MB")
    print(f"  cache speed-up: {cache['img_s'] / decode['img_s']:.1f}x")
    for model, rate in figures["train_img_s"].items():
        ratio = cache["img_s"] / rate
        print(f"  {model} trains at {rate:.1f} img/s (bare loop): loader {ratio:.1f}x")


def _bench_train(args: argparse.Namespace) -> None:
    import dataclasses

    from heritageseg.bench.data import bench_train

    params = load_params(args.params)
    model = with_overrides(
        params.train.model(args.arch),
        image_size=args.image_size,
        encoder=args.encoder,
        batch_size=args.batch_size,
    )
    train = dataclasses.replace(params.train, **{args.arch: model})
    figures = bench_train(
        dataclasses.replace(params, train=train), args.arch, args.batches, args.rounds
    )
    print(
        f"{args.arch} ({figures['encoder']}, {figures['image_size']} px, batch "
        f"{figures['batch_size']}, {figures['precision']}): engine {figures['engine_img_s']:.2f} "
        f"img/s, bare loop {figures['bare_img_s']:.2f} img/s, "
        f"overhead {figures['overhead_pct']:+.1f}%"
    )


def _bench_predict(args: argparse.Namespace) -> None:
    import tempfile

    from heritageseg.bench.predict import bench_predict

    with tempfile.TemporaryDirectory(dir=args.work) as work:
        figures = bench_predict(args.mpx, args.model, Path(args.params), args.backend, Path(work))
    print(f"heritageseg predict --model {args.model} (a fresh process per scan, synthetic JPEG)")
    print(f"  {'scan':>13} {'Mpx':>6} {'seconds':>8} {'Mpx/s':>6} {'peak RSS MB':>12}")
    for row in figures:
        print(f"  {row.width:>6}x{row.height:<6} {row.megapixels:6.1f} {row.seconds:8.1f} "
              f"{row.mpx_s:6.2f} {row.peak_rss_mb:12.0f}")  # fmt: skip


def _bench_gpu(args: argparse.Namespace) -> None:
    import torch

    from heritageseg.bench.gpu import GpuCheck, bench_gpu, failures
    from heritageseg.ops.profiles import profile_params

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HeritagesegError(
            "bench gpu: no CUDA device is visible; on a CPU run `heritageseg bench gpu "
            "--device cpu --smoke`"
        )
    if device.type != "cuda" and not args.smoke:
        raise HeritagesegError("bench gpu: the paper-size check needs CUDA; add --smoke")
    params = load_params(args.params)
    if args.smoke:  # the laptop models of params.yaml, small batches, a few steps
        check = GpuCheck(
            device, params.train, steps=12, infer_batch=4, infer_batches=2, records=24,
            record_size=(64, 160), loader_workers=2, budget_s=900.0, compile_archs=(),
            smoke=True,
        )  # fmt: skip
    else:  # the reference's models and batch sizes, from profiles/paper.yaml
        check = GpuCheck(device, profile_params("paper", params).train)
    check = with_overrides(check, steps=args.steps, budget_s=args.budget_s)
    report = bench_gpu(check, Path(args.out))
    print(Path(args.out).read_text())
    print(f"written to {args.out} and {Path(args.out).with_suffix('.json')}")
    if failed := failures(report):
        raise HeritagesegError(f"bench gpu: {len(failed)} check(s) failed: {'; '.join(failed)}")


def _bench_infer(args: argparse.Namespace) -> None:
    from heritageseg.bench.infer import bench_infer, write_report
    from heritageseg.infer.backends import available_backends

    params = load_params(args.params)
    sizes = args.sizes or sorted({*(params.train.model(a).image_size for a in args.archs), 384})
    figures = bench_infer(
        params, args.archs, sizes, args.backends or available_backends(),
        cache=Path(args.cache), models=Path(args.models), images=args.images,
        rounds=args.rounds, batch_size=args.batch_size,
    )  # fmt: skip
    write_report(figures, Path(args.out))
    for row in figures["rows"]:
        print(
            f"{row['arch']}@{row['size']} {row['backend']:<8}{row['img_s']:7.2f} img/s "
            f"{row['speedup']:5.2f}x  agreement {row['agreement']:.4f}  "
            f"ΔmIoU {row['miou_diff_points']:+.2f} pt"
        )
    print(f"written to {args.out}")
    cfg = params.tracking
    if cfg.enabled:
        from heritageseg.bench.infer import loggable
        from heritageseg.ops.tracking import log_benchmark_run

        out = Path(args.out)
        files = [out, out.with_suffix(".json")]
        run_id = log_benchmark_run(
            cfg, "bench-infer", loggable(figures), [f for f in files if f.is_file()]
        )
        print(f"logged to MLflow run {run_id}")


if __name__ == "__main__":
    sys.exit(main())
