"""The benchmark commands run and print their figures (no assertion on the timings)."""

from __future__ import annotations

import pytest

from heritageseg.cli import main


def test_bench_ingest_prints_generator_and_reader_rates(capsys):
    assert main(["bench", "ingest", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "generator (generate + PNG encode)" in out and "reader (parquet" in out


def test_bench_train_compares_the_engine_with_a_bare_loop(capsys):
    args = ["--batches", "1", "--rounds", "1", "--image-size", "64", "--batch-size", "2"]
    assert main(["bench", "train", "--arch", "segformer", *args]) == 0
    assert "overhead" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_data_compares_the_cache_with_decoding(capsys):
    args = [
        "--n",
        "8",
        "--min-size",
        "64",
        "--max-size",
        "96",
        "--size",
        "64",
        "--train-size",
        "64",
    ]
    assert main(["bench", "data", *args]) == 0
    out = capsys.readouterr().out
    assert "uint8 memmap cache" in out and "cache speed-up" in out
