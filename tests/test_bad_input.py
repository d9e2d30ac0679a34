"""Bad input, table-driven (issue 18): every case must end with a non-zero exit (a ``DiffvocError`` subclass
from the API), exactly one line on stderr, no traceback, no library warning, the error line naming a path
at most once, and nothing left behind (no new file or folder anywhere under the inputs or outputs).

``CASES`` is data: (id, argv or API call, expected exit code, expected message regex). CLI cases run
in-process through :func:`diffvoc.cli.main` (an escaping exception is a traceback and fails the case);
the ones marked ``proc`` also run as a real ``python -m diffvoc.cli`` process.

The table of cases with the messages they gave is ``benchmarks/results/bad_input_table.md``; regenerate it
with ``DIFFVOC_BAD_INPUT_TABLE=1 python -m pytest -q -p no:cacheprovider tests/test_bad_input.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import ROOT, tiny_config_yaml, voiced

from diffvoc.errors import CheckpointError, ConfigError, DiffvocError, MelError

TABLE = ROOT / "benchmarks" / "results" / "bad_input_table.md"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` (``$name`` placeholders) for the CLI, or ``api`` (called with the workspace)."""

    id: str
    argv: tuple[str, ...] | None
    code: int
    message: str
    api: Callable[[Any], Any] | None = None
    what: str = ""  # how the API case is called, for the table
    env: tuple[tuple[str, str], ...] = ()
    proc: bool = False  # also run as a separate process


def cli(id: str, argv: str, code: int, message: str, env: dict[str, str] | None = None, proc: bool = False) -> Case:
    return Case(id, tuple(argv.split()), code, message, env=tuple((env or {}).items()), proc=proc)


def api(id: str, what: str, fn: Callable[[Any], Any], exc: type[DiffvocError], message: str,
        env: dict[str, str] | None = None) -> Case:
    return Case(id, None, 0, message, api=fn, what=what + f" -> {exc.__name__}", env=tuple((env or {}).items()))


def _stream(w, blocks, **kw):
    return list(w.vocoder.stream(blocks, **kw))


CASES: list[Case] = [
    # ---- mel
    cli("mel_missing_input", "mel $b/missing.wav -o $out/m.npy", 1, r"no such file"),
    cli("mel_corrupt_wav", "mel $b/corrupt.wav -o $out/m.npy", 1, r"cannot read .*corrupt.wav as audio"),
    cli("mel_text_as_wav", "mel $b/text.wav -o $out/m.npy", 1, r"cannot read"),
    cli("mel_input_is_folder", "mel $b -o $out/m.npy", 1, r"is a folder"),
    cli("mel_output_parent_missing", "mel $b/good.wav -o $out/no/m.npy", 1, r"folder .* does not exist"),
    cli("mel_output_is_folder", "mel $b/good.wav -o $out", 1, r"it is a folder"),
    cli("mel_output_parent_is_file", "mel $b/good.wav -o $b/good.wav/m.npy", 1, r"is not a folder"),
    cli("mel_set_inf_int", "mel $b/good.wav -o $out/m.npy --set audio.sample_rate=.inf", 1,
        r"audio.sample_rate: expected int"),
    cli("mel_set_zero_hop", "mel $b/good.wav -o $out/m.npy --set audio.hop_length=0", 1,
        r"audio.hop_length must be in \[1, 65536\], got 0"),
    cli("mel_set_alias", "mel $b/good.wav -o $out/m.npy --set audio.n_mels=&a", 1, r"anchors and aliases"),
    cli("mel_config_is_folder", "mel $b/good.wav -o $out/m.npy --config $b", 1, r"is not a file"),
    cli("mel_config_not_utf8", "mel $b/good.wav -o $out/m.npy --config $b/latin1.yaml", 1, r"not UTF-8", proc=True),
    cli("mel_config_alias_bomb", "mel $b/good.wav -o $out/m.npy --config $b/bomb.yaml", 1, r"anchors and aliases"),
    cli("mel_config_too_large", "mel $b/good.wav -o $out/m.npy --config $b/big.yaml", 1, r"bytes, more than"),
    cli("mel_config_a_list", "mel $b/good.wav -o $out/m.npy --config $b/list.yaml", 1, r"must be a YAML mapping"),
    cli("mel_config_bad_yaml", "mel $b/good.wav -o $out/m.npy --config $b/broken.yaml", 1, r"not valid YAML"),
    cli("mel_config_and_preset", "mel $b/good.wav -o $out/m.npy --config $b/tiny.yaml --preset lmnt", 1,
        r"either --config or --preset"),
    cli("mel_too_long", "mel $b/good.wav -o $out/m.npy", 1, r"more than the 0.1 s limit",
        env={"DIFFVOC_MAX_SECONDS": "0.1"}),
    cli("mel_bad_limit_env", "mel $b/good.wav -o $out/m.npy", 1, r"DIFFVOC_MAX_SECONDS must be a positive",
        env={"DIFFVOC_MAX_SECONDS": "inf"}),
    cli("mel_bands_beyond_fft", "mel $b/good.wav -o $out/m.npy --set audio.n_fft=64 --set audio.win_length=64 "
        "--set audio.hop_length=16", 1, r"audio.n_mels \(80\) must not exceed the 33 frequency bins"),
    cli("mel_checkpoint_missing", "mel $b/good.wav -o $out/m.npy --checkpoint $b/nothing", 1, r"no such checkpoint"),
    # ---- preprocess
    cli("pre_empty_corpus", "preprocess $b/empty -o $out/d", 1, r"no audio files found"),
    cli("pre_missing_corpus", "preprocess $b/nothing -o $out/d", 1, r"no such corpus"),
    cli("pre_fraction_above_1", "preprocess $corpus -o $out/d --valid-fraction 1.5", 2, r"fraction in \[0, 1\)"),
    cli("pre_fraction_nan", "preprocess $corpus -o $out/d --test-fraction nan", 2, r"finite number"),
    cli("pre_fractions_sum", "preprocess $corpus -o $out/d --valid-fraction 0.6 --test-fraction 0.5", 1,
        r"leave nothing to train on"),
    cli("pre_jobs_zero", "preprocess $corpus -o $out/d --jobs 0", 2, r"whole number >= 1, got '0'", proc=True),
    cli("pre_file_list_not_utf8", "preprocess $b/list_latin1.txt -o $out/d", 1, r"list_latin1.txt: the file list is "
        r"not UTF-8"),
    cli("pre_metadata_not_utf8", "preprocess $b/lj_latin1 -o $out/d", 1,
        r"metadata.csv: the metadata file is not UTF-8"),
    cli("pre_output_is_file", "preprocess $corpus -o $b/good.wav", 1, r"exists and is not a folder"),
    cli("pre_nothing_usable", "preprocess $b/corpus_bad -o $out/d --jobs 1 --quiet", 1, r"no usable training files"),
    # ---- train
    cli("train_config_missing", "train $b/nothing.yaml --run-dir $out/r", 1, r"config file not found"),
    cli("train_config_wrong_type", "train $b/many.yaml --run-dir $out/r", 1, r"model.residual_channels: expected int"),
    cli("train_unknown_key", "train $b/tiny.yaml --run-dir $out/r --set train.nonsense=1", 1, r"unknown config key"),
    cli("train_resume_nothing", "train $b/tiny.yaml --run-dir $out/r --resume", 1, r"no checkpoint to resume"),
    cli("train_max_steps_zero", "train $b/tiny.yaml --run-dir $out/r --max-steps 0", 2, r"whole number >= 1"),
    cli("train_time_limit_inf", "train $b/tiny.yaml --run-dir $out/r --time-limit inf", 2, r"finite number of seconds"),
    cli("train_batch_zero", "train $b/tiny.yaml --run-dir $out/r --set train.batch_size=0", 1,
        r"train.batch_size must be in \[1, 1000000\], got 0"),
    cli("train_ema_inf", "train $b/tiny.yaml --run-dir $out/r --set train.ema_decay=.inf", 1,
        r"train.ema_decay: must be a finite number"),
    cli("train_lr_negative", "train $b/tiny.yaml --run-dir $out/r --set train.learning_rate=-1", 1,
        r"train.learning_rate must be in \(0, 10\]"),
    cli("train_three_betas", "train $b/tiny.yaml --run-dir $out/r --set train.adam_betas=[0.9,0.99,0.5]", 1,
        r"adam_betas must be two numbers"),
    cli("train_save_every_zero", "train $b/tiny.yaml --run-dir $out/r --set train.save_every=0", 1,
        r"train.save_every must be"),
    cli("train_seed_negative", "train $b/tiny.yaml --run-dir $out/r --set train.seed=-3", 1, r"train.seed must be"),
    cli("train_beta_out_of_range", "train $b/tiny.yaml --run-dir $out/r --set diffusion.fast_schedules={6:[0.1,5]}", 1,
        r"fast_schedules\[6\]: every β must lie in \(0, 1\), got 5"),
    cli("train_data_missing", "train $b/tiny.yaml --run-dir $out/r --data $b/nothing", 1,
        r"not a preprocessed data folder"),
    cli("train_record_a_list", "train $b/tiny.yaml --run-dir $out/r --data $b/data_reclist", 1,
        r"dataset.yaml: not a data set record"),
    cli("train_data_stats_nan", "train $b/tiny.yaml --run-dir $out/r --data $b/data_statsnan", 1,
        r"statistic energy_min is nan"),
    cli("train_resume_alias_bomb", "train $b/tiny.yaml --run-dir $b/run_bomb --resume", 1, r"anchors and aliases",
        proc=True),
    cli("train_resume_state_types", "train $b/tiny.yaml --run-dir $b/run_state_types --resume", 1,
        r"not a diffvoc training state \(step must be"),
    cli("train_resume_state_list", "train $b/tiny.yaml --run-dir $b/run_state_list --resume", 1,
        r"not a diffvoc training state \(a list"),
    cli("train_resume_latest_escapes", "train $b/tiny.yaml --run-dir $b/run_latest_escape --resume", 1,
        r"which is not a checkpoint"),
    cli("train_config_not_utf8", "train $b/latin1.yaml --run-dir $out/r", 1, r"not UTF-8"),
    cli("train_run_dir_is_file", "train $b/tiny.yaml --run-dir $b/good.wav", 1, r"exists and is not a folder"),
    # ---- vocode
    cli("voc_corrupt_wav", "vocode $b/corrupt.wav -o $out/o.wav --checkpoint $ck", 1, r"cannot read", proc=True),
    cli("voc_empty_wav", "vocode $b/empty.wav -o $out/o.wav --checkpoint $ck", 1, r"cannot read"),
    cli("voc_no_samples", "vocode $b/silent0.wav -o $out/o.wav --checkpoint $ck", 1, r"holds no audio samples"),
    cli("voc_wrong_bands", "vocode $b/good.npy $b/bands.npy -o $out/dir --checkpoint $ck", 1, r"64 mel bands"),
    cli("voc_nan_mel", "vocode $b/nan.npy -o $out/o.wav --checkpoint $ck", 1, r"NaN or infinite"),
    cli("voc_not_npy", "vocode $b/pickle.npy -o $out/o.wav --checkpoint $ck", 1, r"cannot read .* as a .npy"),
    cli("voc_int_mel", "vocode $b/int.npy -o $out/o.wav --checkpoint $ck", 1, r"must be floating point"),
    cli("voc_f64_overflow", "vocode $b/f64big.npy -o $out/o.wav --checkpoint $ck", 1, r"NaN or infinite"),
    cli("voc_batched_npy", "vocode $b/three.npy -o $out/o.wav --checkpoint $ck", 1, r"one mel per file"),
    cli("voc_huge_values", "vocode $b/huge.npy -o $out/o.wav --checkpoint $ck", 1,
        r"a log-mel spectrogram lies within"),
    cli("voc_steps_zero", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --steps 0", 2, r"whole number >= 1"),
    cli("voc_batch_zero", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --batch-size 0", 2,
        r"--batch-size: must be a whole number >= 1", proc=True),
    cli("voc_batch_negative", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --batch-size -2", 2, r"whole number"),
    cli("voc_threads_zero", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --threads 0", 2, r"--threads"),
    cli("voc_seed_text", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --seed x", 2, r"not a whole number"),
    cli("voc_schedule_nan", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --schedule 0.1,nan", 2, r"finite"),
    cli("voc_schedule_malformed", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --schedule 0.1,,x", 2,
        r"comma-separated list of β values"),
    cli("voc_schedule_outside", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --schedule 1e-4,0.95", 1,
        r"outside the training range"),
    cli("voc_unknown_steps", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck --steps 5", 1,
        r"no 5-step schedule"),
    cli("voc_nonfinite_weights", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_nan", 1,
        r"holds \d+ NaN or infinite value", proc=True),
    cli("voc_stats_a_list", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_stats_list", 1,
        r"statistics must be a mapping"),
    cli("voc_stats_inf", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_stats_inf", 1,
        r"statistic energy_max is inf"),
    cli("voc_stats_unordered", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_stats_order", 1,
        r"need 0 <= energy_min < energy_max"),
    cli("voc_config_not_utf8", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_cfg_latin1", 1, r"not UTF-8"),
    cli("voc_config_other_model", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_wrongcfg", 1,
        r"do not match the config"),
    cli("voc_corrupt_weights", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_corrupt", 1, r"is corrupt"),
    cli("voc_foreign_pt", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/foreign.pt", 1, r"unexpected structure"),
    cli("voc_garbage_pt", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/garbage.pt", 1, r"cannot load"),
    cli("voc_no_config", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/ck_only_stats", 1,
        r"not a diffvoc checkpoint"),
    cli("voc_latest_binary", "vocode $b/good.npy -o $out/o.wav --checkpoint $b/run_latest_binary", 1,
        r"latest: the latest file is not UTF-8"),
    cli("voc_too_long", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck", 1, r"more than the 0.1 s limit",
        env={"DIFFVOC_MAX_SECONDS": "0.1"}),
    cli("voc_output_is_folder", "vocode $b/good.npy -o $b/dir.wav --checkpoint $ck", 1, r"it is a folder"),
    cli("voc_many_into_file", "vocode $b/good.npy $b/good2.npy -o $b/good.wav --checkpoint $ck", 1,
        r"exists and is not a folder"),
    cli("voc_same_names", "vocode $b/good.npy $b/sub/good.npy -o $out/dir --checkpoint $ck", 1, r"same output file"),
    cli("voc_second_input_bad", "vocode $b/good.npy $b/nan.npy -o $out/dir --checkpoint $ck", 1, r"NaN or infinite"),
    cli("voc_file_too_large", "vocode $b/good.npy -o $out/o.wav --checkpoint $ck", 1,
        r"cannot write .*o.wav: file too large", proc=True),  # run under RLIMIT_FSIZE (as a full disk would)
    # ---- corpus
    cli("corpus_no_kind", "corpus", 2, r"required"),
    cli("corpus_rate_zero", "corpus speech $out/c --rate 0", 1, r"rate must be between"),
    cli("corpus_minutes_negative", "corpus speech $out/c --minutes -1", 1, r"minutes must be positive"),
    cli("corpus_per_voice_zero", "corpus digits $out/c --per-voice 0", 1, r"at least 1"),
    cli("corpus_mixed_missing", "corpus mixed $out/c --tts $b/nothing --real $b/nothing", 1,
        r"is not a synthetic speech corpus"),
    cli("corpus_bad_share", "corpus mixed $out/c --tts $b/nothing --real $b/nothing --share tts=2", 1,
        r"FRACTION in \[0, 1\]"),
    cli("corpus_unknown_package", "corpus real $out/c --packages nosuch", 1, r"unknown package"),
    # ---- evaluate
    cli("eval_md_output", "evaluate --checkpoint $ck --data $data -o $out/r.md", 1, r"give the JSON name"),
    cli("eval_output_is_folder", "evaluate --checkpoint $ck --data $data -o $out", 1, r"is a folder"),
    cli("eval_steps_malformed", "evaluate --checkpoint $ck --data $data --steps 2,x -o $out/r.json", 1,
        r"--steps must be positive integers"),
    cli("eval_unknown_metric", "evaluate --checkpoint $ck --data $data --metrics mos -o $out/r.json", 1,
        r"unknown metric mos"),
    cli("eval_limit_zero", "evaluate --checkpoint $ck --data $data --limit 0 -o $out/r.json", 2, r"--limit"),
    cli("eval_checkpoint_missing", "evaluate --checkpoint $b/nothing --data $data -o $out/r.json", 1,
        r"no such checkpoint"),
    # ---- report
    cli("report_nothing", "report -o $out/rep", 1, r"nothing to report"),
    cli("report_not_json", "report $b/notjson.json -o $out/rep", 1, r"not valid JSON"),
    cli("report_not_utf8", "report $b/latin1.json -o $out/rep", 1, r"not UTF-8"),
    cli("report_missing_meta", "report $b/results_nometa.json -o $out/rep", 1,
        r"unexpected shape \(meta is missing\)", proc=True),
    cli("report_meta_a_list", "report $b/results_metalist.json -o $out/rep", 1, r"meta must be a mapping"),
    cli("report_summary_bad", "report $b/results_badsummary.json -o $out/rep", 1, r"summary\[0\]"),
    cli("report_other_json", "report $b/list.json -o $out/rep", 1, r"not a results file"),
    cli("report_output_is_file", "report $b/results_nometa.json -o $b/good.wav", 1, r"not a folder"),
    cli("report_generated_missing", "report --generated $b/nothing -o $out/rep", 1, r"no such folder"),
    cli("report_generation_results_bad", "report --generation-results $b/list.json -o $out/rep", 1,
        r"not a results file of benchmarks/generation.py"),
    cli("report_max_utterances_negative", "report $b/notjson.json -o $out/rep --max-utterances -1", 2, r">= 0"),
    # ---- export
    cli("export_not_onnx", "export --checkpoint $ck -o $out/model.bin", 1, r"must end in .onnx"),
    cli("export_parent_missing", "export --checkpoint $ck -o $out/no/model.onnx", 1, r"does not exist"),
    cli("export_nonfinite_weights", "export --checkpoint $b/ck_nan -o $out/model.onnx", 1, r"NaN or infinite"),
    cli("export_checkpoint_missing", "export --checkpoint $b/nothing -o $out/model.onnx", 1, r"no such checkpoint"),
    # ---- demo
    cli("demo_bad_wav", "demo $b/text.wav -o $out/demo --checkpoint $ck", 1, r"cannot read"),
    cli("demo_steps_malformed", "demo $b/good.wav -o $out/demo --steps 2,x", 2,
        r"comma-separated list of whole numbers"),
    cli("demo_sentences_out_of_range", "demo -o $out/demo --sentences 9", 2, r"in 1..4"),
    cli("demo_output_not_a_demo", "demo $b/good.wav -o $b/sub --checkpoint $ck", 1, r"not an earlier demo folder"),
    cli("demo_output_is_file", "demo $b/good.wav -o $b/good.wav --checkpoint $ck", 1, r"not an earlier demo folder"),
    # ---- generate
    cli("gen_n_zero", "generate --checkpoint $ck -o $out/g -n 0", 2, r"-n: must be a whole number >= 1"),
    cli("gen_batch_zero", "generate --checkpoint $ck -o $out/g --batch-size 0", 2, r"--batch-size"),
    cli("gen_seconds_negative", "generate --checkpoint $ck -o $out/g --seconds -1", 2, r"positive, finite"),
    cli("gen_label_negative", "generate --checkpoint $ck -o $out/g --label -1", 2, r">= 0"),
    cli("gen_mel_model", "generate --checkpoint $ck -o $out/g", 1, r"is a mel-conditioned vocoder"),
    # ---- classifier
    cli("clf_channels_malformed", "classifier train --data $b -o $out/c --channels 16,x", 2, r"whole numbers"),
    cli("clf_epochs_zero", "classifier train --data $b -o $out/c --epochs 0", 2, r"--epochs"),
    cli("clf_lr_inf", "classifier train --data $b -o $out/c --lr inf", 2, r"finite"),
    cli("clf_label_smoothing_one", "classifier train --data $b -o $out/c --label-smoothing 1", 2, r"fraction"),
    cli("clf_eval_not_a_classifier", "classifier eval --classifier $b/empty --data $b", 1, r"not a digit classifier"),
    cli("clf_eval_alias", "classifier eval --classifier $b/clf_alias --data $b", 1, r"anchors and aliases"),
    # ---- search-schedule
    cli("ss_steps_zero", "search-schedule --checkpoint $ck --steps 0", 2, r"--steps"),
    cli("ss_max_evals_zero", "search-schedule --checkpoint $ck --steps 2 --max-evals 0", 2, r"--max-evals"),
    cli("ss_points_one", "search-schedule --checkpoint $ck --steps 2 --points 1", 2, r">= 2"),
    cli("ss_seconds_nan", "search-schedule --checkpoint $ck --steps 2 --seconds nan", 2, r"finite"),
    cli("ss_json_parent_missing", "search-schedule --checkpoint $ck --steps 2 --json $out/no/r.json", 1,
        r"folder .* does not exist"),
    cli("ss_write_into_pt", "search-schedule --checkpoint $b/garbage.pt --steps 2", 1, r"not a file"),
    cli("ss_checkpoint_missing", "search-schedule --checkpoint $b/nothing --steps 2 --no-write", 1,
        r"no such checkpoint"),
    # ---- the Python API
    api("api_from_pretrained_missing", "Vocoder.from_pretrained(missing)",
        lambda w: w.Vocoder.from_pretrained(w.b / "nothing"), CheckpointError, r"no such checkpoint"),
    api("api_from_pretrained_nan", "Vocoder.from_pretrained(NaN weights)",
        lambda w: w.Vocoder.from_pretrained(w.b / "ck_nan"), CheckpointError, r"NaN or infinite"),
    api("api_from_pretrained_device", "Vocoder.from_pretrained(device='tpu0')",
        lambda w: w.Vocoder.from_pretrained(w.ck, device="tpu0"), DiffvocError, r"unknown device"),
    api("api_from_pretrained_threads", "Vocoder.from_pretrained(threads=-1)",
        lambda w: w.Vocoder.from_pretrained(w.ck, threads=-1), DiffvocError, r"threads must be"),
    api("api_from_pretrained_limit", "Vocoder.from_pretrained(max_seconds=0)",
        lambda w: w.Vocoder.from_pretrained(w.ck, max_seconds=0), DiffvocError, r"max_seconds must be"),
    api("api_vocode_f64_overflow", "vocode(float64 mel of 1e300)",
        lambda w: w.vocoder.vocode(np.full((80, 20), 1e300)), MelError, r"NaN or infinite"),
    api("api_vocode_nan", "vocode(mel with NaN)",
        lambda w: w.vocoder.vocode(np.load(w.b / "nan.npy")), MelError, r"NaN or infinite"),
    api("api_vocode_bands", "vocode(64-band mel)",
        lambda w: w.vocoder.vocode(np.zeros((64, 20), np.float32)), MelError, r"64 mel bands"),
    api("api_vocode_list", "vocode(a list)", lambda w: w.vocoder.vocode([[0.0] * 20] * 80), MelError,
        r"expected a numpy array or torch tensor"),
    api("api_vocode_complex", "vocode(complex mel)",
        lambda w: w.vocoder.vocode(np.zeros((80, 20), np.complex64)), MelError, r"expected real numbers"),
    api("api_vocode_empty_batch", "vocode(mel [0, 80, 20])",
        lambda w: w.vocoder.vocode(np.zeros((0, 80, 20), np.float32)), MelError, r"no frames"),
    api("api_vocode_fade_negative", "vocode(fade_frames=-1)",
        lambda w: w.vocoder.vocode(np.full((80, 20), -5.0, np.float32), fade_frames=-1), DiffvocError,
        r"fade_frames must be"),
    api("api_vocode_too_long", "vocode(mel longer than max_seconds)",
        lambda w: w.vocoder.vocode(np.full((80, 400), -5.0, np.float32)), MelError, r"more than the 1 s limit",
        env={"DIFFVOC_MAX_SECONDS": "1"}),
    api("api_vocode_huge_values", "vocode(finite mel of 1e38)",
        lambda w: w.vocoder.vocode(np.full((80, 20), 1e38, np.float32)), MelError,
        r"a log-mel spectrogram lies within"),
    api("api_vocode_batch_zero", "vocode_batch(batch_size=0)",
        lambda w: w.vocoder.vocode_batch([np.full((80, 20), -5.0, np.float32)], batch_size=0), DiffvocError,
        r"batch_size must be"),
    api("api_vocode_batch_array", "vocode_batch(one 3-D array)",
        lambda w: w.vocoder.vocode_batch(np.zeros((2, 80, 20), np.float32)), DiffvocError, r"list of 2-D mels"),
    api("api_vocode_batch_f64_overflow", "vocode_batch([float64 1e300])",
        lambda w: w.vocoder.vocode_batch([np.full((80, 20), 1e300)]), MelError, r"NaN or infinite"),
    api("api_stream_chunk_zero", "stream(chunk_frames=0)",
        lambda w: _stream(w, [np.full((80, 20), -5.0, np.float32)], chunk_frames=0), DiffvocError, r"chunk_frames"),
    api("api_stream_nan_block", "stream([NaN block])",
        lambda w: _stream(w, [np.load(w.b / "nan.npy")]), MelError, r"NaN or infinite"),
    api("api_stream_3d_block", "stream([3-D block])",
        lambda w: _stream(w, [np.zeros((1, 80, 20), np.float32)]), MelError, r"expected \[n_mels, frames\]"),
    api("api_config_bomb", "Config.load(alias bomb)", lambda w: w.Config.load(w.b / "bomb.yaml"), ConfigError,
        r"anchors and aliases"),
    api("api_config_missing", "Config.load(missing)", lambda w: w.Config.load(w.b / "nothing.yaml"), ConfigError,
        r"config file not found"),
    api("api_config_nan", "Config.from_dict(ema_decay=nan)",
        lambda w: w.Config.from_dict({"train": {"ema_decay": float("nan")}}), ConfigError, r"finite number"),
    api("api_config_overflow", "Config.from_dict(batch_size=inf)",
        lambda w: w.Config.from_dict({"train": {"batch_size": float("inf")}}), ConfigError, r"expected int"),
    api("api_checkpoint_state_types", "load_checkpoint(train_state.json with wrong types, with_train_state=True)",
        lambda w: w.load_checkpoint(w.b / "run_state_types", with_train_state=True), CheckpointError,
        r"not a diffvoc training state"),
    api("api_checkpoint_foreign_pt", "load_checkpoint(foreign .pt)",
        lambda w: w.load_checkpoint(w.b / "foreign.pt"), CheckpointError, r"unexpected structure"),
    api("api_checkpoint_stats_list", "load_checkpoint(stats.yaml a list)",
        lambda w: w.load_checkpoint(w.b / "ck_stats_list"), CheckpointError, r"statistics must be a mapping"),
    api("api_clip_too_long", "clip_samples(config, seconds=1e6)",
        lambda w: __import__("diffvoc.inference.generator", fromlist=["x"]).clip_samples(w.Config(), 1e6),
        DiffvocError, r"a generated clip is 1e\+06 s long, more than the 600 s limit"),
    api("api_write_disk_full", "atomic_save_npy with ENOSPC",
        lambda w: w.disk_full(), DiffvocError, r"cannot write .*m.npy: no space left on the device"),
]


# ------------------------------------------------------------------------------------------------ workspace
class Workspace:
    """The bad inputs (under ``b``), a good checkpoint ``ck`` and the session's data, corpus and vocoder."""

    def __init__(self, root: Path, trained_run: Path, data_dir: Path, corpus: Path) -> None:
        from diffvoc.checkpoint import load_checkpoint, resolve_checkpoint_dir
        from diffvoc.config import Config
        from diffvoc.inference.vocoder import Vocoder

        self.root, self.b = root, root / "b"
        self.ck, self.data, self.corpus, self.run = resolve_checkpoint_dir(trained_run), data_dir, corpus, trained_run
        self.Vocoder, self.Config, self.load_checkpoint = Vocoder, Config, load_checkpoint
        _make_bad_inputs(self)
        self.vocoder = Vocoder.from_pretrained(self.ck, precision="fp32")

    def paths(self, out: Path) -> dict[str, str]:
        return {"b": str(self.b), "ck": str(self.ck), "data": str(self.data), "corpus": str(self.corpus),
                "out": str(out)}

    def roots(self) -> list[Path]:
        """Every tree a case must leave as it found it."""
        return [self.root, self.data, self.corpus, self.run]

    def disk_full(self) -> None:
        """``atomic_save_npy`` while the disk is full (``np.save`` raising ENOSPC)."""
        import errno
        from unittest import mock

        from diffvoc.io import atomic_save_npy

        def full(*a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with mock.patch("numpy.save", full):
            atomic_save_npy(self.root / "cases" / "api_write_disk_full" / "m.npy", np.zeros(3))


def _copy_ck(w: Workspace, name: str) -> Path:
    dst = w.b / name
    shutil.copytree(w.ck, dst)
    return dst


def _copy_run(w: Workspace, name: str) -> Path:
    """A run directory holding a copy of the trained run's newest checkpoint (and ``latest``)."""
    dst = w.b / name
    dst.mkdir()
    shutil.copytree(w.ck, dst / w.ck.name)
    (dst / "latest").write_text(w.ck.name + "\n")
    return dst


def _make_bad_inputs(w: Workspace) -> None:
    from safetensors.torch import load_file, save_file

    from diffvoc.evaluation.results import FORMAT

    b = w.b
    b.mkdir()
    (b / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage garbage")
    (b / "empty.wav").write_bytes(b"")
    (b / "text.wav").write_text("this is not audio\n")
    sf.write(b / "silent0.wav", np.zeros(0, np.float32), 22050)
    sf.write(b / "good.wav", voiced(0.5, 22050), 22050)
    good = np.full((80, 20), -5, np.float32)
    np.save(b / "good.npy", good)
    np.save(b / "good2.npy", good)
    (b / "sub").mkdir()
    np.save(b / "sub" / "good.npy", good)
    (b / "dir.wav").mkdir()
    (b / "empty").mkdir()
    np.save(b / "bands.npy", np.zeros((64, 20), np.float32))
    nan = good.copy()
    nan[1, 1] = np.nan
    np.save(b / "nan.npy", nan)
    (b / "pickle.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(b / "int.npy", np.zeros((80, 20), np.int16))
    np.save(b / "f64big.npy", np.full((80, 20), 1e300))
    np.save(b / "three.npy", good[None])
    np.save(b / "huge.npy", np.full((80, 20), 1e38, np.float32))
    (b / "latin1.yaml").write_bytes(b"model:\n  preset: tiny\n# caf\xe9\n")
    (b / "bomb.yaml").write_text(BOMB)
    (b / "big.yaml").write_text("a: " + "x" * (5 << 20) + "\n")
    (b / "list.yaml").write_text("- 1\n- 2\n")
    (b / "broken.yaml").write_text("model: [1, 2\n")
    (b / "many.yaml").write_text("model: {residual_channels: many}\n")
    tiny_config_yaml(b / "tiny.yaml", w.data)
    # corpora and data folders
    (b / "corpus_bad").mkdir()
    for i in range(2):
        (b / "corpus_bad" / f"x{i}.wav").write_bytes(b"RIFF garbage")
    (b / "list_latin1.txt").write_bytes(b"caf\xe9.wav\n")
    (b / "lj_latin1" / "wavs").mkdir(parents=True)
    (b / "lj_latin1" / "metadata.csv").write_bytes(b"utt1|caf\xe9|caf\xe9\n")
    shutil.copytree(w.data, b / "data_reclist")
    (b / "data_reclist" / "dataset.yaml").write_text("[1, 2]\n")
    shutil.copytree(w.data, b / "data_statsnan")
    for st in (b / "data_statsnan" / "features").glob("*/stats.yaml"):
        st.write_text(st.read_text().replace("energy_min:", "energy_min: .nan\nold_min:"))
    # checkpoints
    ck = _copy_ck(w, "ck_nan")
    sd = load_file(ck / "model.safetensors")
    k = next(iter(sd))
    sd[k] = sd[k].clone()
    sd[k].view(-1)[0] = float("nan")
    save_file(sd, str(ck / "model.safetensors"))
    (_copy_ck(w, "ck_stats_list") / "stats.yaml").write_text("- 1\n- 2\n")
    (_copy_ck(w, "ck_stats_inf") / "stats.yaml").write_text("energy_min: 0.5\nenergy_max: .inf\n")
    (_copy_ck(w, "ck_stats_order") / "stats.yaml").write_text("energy_min: 5.0\nenergy_max: 1.0\n")
    ck = _copy_ck(w, "ck_cfg_latin1")
    (ck / "config.yaml").write_bytes((ck / "config.yaml").read_bytes() + b"# caf\xe9\n")
    ck = _copy_ck(w, "ck_wrongcfg")
    cfg = yaml.safe_load((ck / "config.yaml").read_text())
    cfg["model"]["residual_channels"] = 32
    (ck / "config.yaml").write_text(yaml.safe_dump(cfg))
    (_copy_ck(w, "ck_corrupt") / "model.safetensors").write_bytes(b"garbage")
    (b / "ck_only_stats").mkdir()
    (b / "ck_only_stats" / "stats.yaml").write_text("{}\n")
    torch.save({"model": {"input_projection.weight": torch.zeros(3)}}, b / "foreign.pt")
    (b / "garbage.pt").write_bytes(b"not a torch file")
    # runs to resume
    run = _copy_run(w, "run_bomb")
    (run / w.ck.name / "config.yaml").write_text(BOMB)
    run = _copy_run(w, "run_state_types")
    (run / w.ck.name / "train_state.json").write_text('{"step": "ten", "optimizer": {"param_groups": []}}')
    run = _copy_run(w, "run_state_list")
    (run / w.ck.name / "train_state.json").write_text("[]")
    (_copy_run(w, "run_latest_escape") / "latest").write_text("../../etc\n")
    (_copy_run(w, "run_latest_binary") / "latest").write_bytes(b"\xff\xfe\x00ckpt\n")
    # results files for the report
    (b / "notjson.json").write_text("{not json")
    (b / "latin1.json").write_bytes(b'{"format": "caf\xe9"}')
    (b / "list.json").write_text("[1, 2]")
    (b / "results_nometa.json").write_text(f'{{"format": "{FORMAT}"}}')
    (b / "results_metalist.json").write_text(f'{{"format": "{FORMAT}", "meta": []}}')
    meta = {"created": "now", "data": "d", "steps": [6], "seed": 0, "device": "cpu", "threads": 1,
            "torch_version": "x", "diffvoc_version": "x", "timing": "x", "peak_memory": "x", "utterances": ["u"],
            "checkpoints": []}
    bad = {"format": FORMAT, "meta": meta, "systems": [], "rows": [],
           "summary": [{"system": "s", "kind": "model", "n": 1, "metrics": {"pesq": "high"}}]}
    (b / "results_badsummary.json").write_text(json.dumps(bad))
    (b / "clf_alias").mkdir()
    (b / "clf_alias" / "classifier.yaml").write_text("format: &f diffvoc-digit-classifier\nagain: *f\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory, trained_run, data_dir, corpus) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("badinput"), trained_run, data_dir, corpus)


# ------------------------------------------------------------------------------------------------ running
def _tree(roots: list[Path]) -> set[str]:
    return {str(p) for r in roots for p in r.rglob("*")}


@contextlib.contextmanager
def _env(pairs: tuple[tuple[str, str], ...]):
    old = {k: os.environ.get(k) for k, _ in pairs}
    os.environ.pop("DIFFVOC_DEBUG", None)
    os.environ.update(dict(pairs))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _normal_warnings():
    """Record the warnings a plain ``python -m diffvoc.cli`` run would print (Python's default filters)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", cat)
        yield caught


def _run_inprocess(argv: list[str], env: tuple[tuple[str, str], ...]) -> tuple[int, str, list[str]]:
    from diffvoc.cli import main

    err, out = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with _env(env), _normal_warnings() as caught, contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    torch.set_num_threads(threads)
    return code, err.getvalue(), [f"{w.category.__name__}: {w.message}" for w in caught]


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def _run_process(case: Case, argv: list[str]) -> tuple[int, str]:
    env = dict(os.environ)
    env.pop("DIFFVOC_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(dict(case.env))
    limit = _file_size_limit if case.id == "voc_file_too_large" else None
    r = subprocess.run([sys.executable, "-m", "diffvoc.cli", *argv], env=env, capture_output=True, text=True,
                       timeout=300, preexec_fn=limit)
    return r.returncode, r.stderr


def _check_line(stderr: str, case: Case) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{case.id}: stderr has {len(lines)} lines:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    line = lines[0]
    assert line.startswith("diffvoc "), line
    assert re.search(case.message, line), f"{case.id}: {line!r} does not match {case.message!r}"
    paths = re.findall(r"/[\w.\-+/]+", line)
    assert len(paths) == len(set(paths)), f"{case.id}: a path is named twice: {line}"
    return line


RECORDED: dict[str, tuple[str, int, str]] = {}


def _shown(text: str, w: Workspace, case_id: str) -> str:
    for name, p in (("$out", str(w.root / "cases" / case_id)), ("$b", str(w.b)), ("$ck", str(w.ck)),
                    ("$data", str(w.data)), ("$corpus", str(w.corpus)), ("$tmp", str(w.root))):
        text = text.replace(p, name)
    return text


def test_enough_cases_across_everything():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 80
    commands = {c.argv[0] for c in CASES if c.argv}
    assert commands == {"mel", "preprocess", "train", "vocode", "corpus", "evaluate", "report", "export", "demo",
                        "generate", "classifier", "search-schedule"}
    assert sum(c.api is not None for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, work: Workspace):
    out = work.root / "cases" / case.id
    out.mkdir(parents=True)
    before = _tree(work.roots())
    if case.api is not None:
        with _env(case.env), _normal_warnings() as caught, pytest.raises(DiffvocError) as info:
            case.api(work)
        assert isinstance(info.value, DiffvocError)
        exc = type(info.value)
        expected = case.what.rsplit(" -> ", 1)[1]
        assert exc.__name__ == expected or issubclass(exc, getattr(sys.modules["diffvoc.errors"], expected)), exc
        line = str(info.value)
        assert "\n" not in line and re.search(case.message, line), f"{case.id}: {line!r}"
        assert not caught, [str(w.message) for w in caught]
        RECORDED[case.id] = (case.what.rsplit(" -> ", 1)[0], 0, f"{exc.__name__}: {line}")
    else:
        argv = [Template(a).substitute(work.paths(out)) for a in case.argv]
        if case.id != "voc_file_too_large":
            code, stderr, caught = _run_inprocess(argv, case.env)
            assert code == case.code, f"{case.id}: exit {code}, stderr {stderr!r}"
            line = _check_line(stderr, case)
            assert not caught, f"{case.id}: warnings leaked: {caught}"
        if case.proc:
            code, stderr = _run_process(case, argv)
            assert code == case.code, f"{case.id} (process): exit {code}, stderr {stderr!r}"
            line = _check_line(stderr, case)
        RECORDED[case.id] = ("diffvoc " + " ".join(case.argv), case.code, line)
    after = _tree(work.roots())
    assert after == before, f"{case.id} left or removed: {sorted(after ^ before)}"


def test_zz_table(work: Workspace):
    """Write ``benchmarks/results/bad_input_table.md`` (with ``DIFFVOC_BAD_INPUT_TABLE=1``, after all cases ran)."""
    if os.environ.get("DIFFVOC_BAD_INPUT_TABLE") != "1":
        pytest.skip("set DIFFVOC_BAD_INPUT_TABLE=1 to write the table")
    missing = [c.id for c in CASES if c.id not in RECORDED]
    assert not missing, f"run the whole file to write the table (missing {missing[:3]})"
    rows = ["| case | command | exit | message |", "|---|---|---|---|"]
    for c in CASES:
        cmd, code, line = RECORDED[c.id]
        cell = _shown(line, work, c.id).replace("|", "\\|")
        rows.append(f"| {c.id} | `{_shown(cmd, work, c.id)}` | {code if c.api is None else 'raises'} | {cell} |")
    head = ("# Bad inputs: one line, non-zero exit, nothing left behind (issue 18)\n\n"
            "Regenerate: `DIFFVOC_BAD_INPUT_TABLE=1 python -m pytest -q -p no:cacheprovider tests/test_bad_input.py`"
            "\n\nEvery row is a case of `tests/test_bad_input.py` (`CASES`), with the line it printed (CLI: stderr; "
            "API: the exception). `$b` holds the bad inputs, `$ck` a good checkpoint, `$data`/`$corpus` the test "
            f"data, `$out` the case's empty output folder. {len(CASES)} cases; exit 2 is a refused argument, "
            "1 any other error; `raises` is a `DiffvocError` subclass from the Python API.\n\n")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(head + "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------------------------ the mechanisms
def test_every_config_number_has_a_range():
    """Class 2: the range table covers every number field of the vocoder config (a new field needs a range)."""
    from typing import get_args, get_type_hints

    from diffvoc.config import Config
    from diffvoc.config_validation import _BETA_TABLES, RANGES

    cfg = Config()
    missing = []
    for section in dataclasses.fields(cfg):
        sec = type(getattr(cfg, section.name))
        for f, typ in get_type_hints(sec).items():
            leaves = {typ, *get_args(typ), *(a for t in get_args(typ) for a in get_args(t))}
            key = f"{section.name}.{f}"
            if leaves & {int, float} and bool not in leaves and key not in RANGES and key not in _BETA_TABLES:
                missing.append(key)
    assert not missing, f"give these config fields a range in diffvoc.config_validation.RANGES: {missing}"


def test_disabled_sections_are_checked_for_types_only():
    """Class 10: a small hop is fine when nobody enabled the infer loss; enabled, it is refused."""
    from diffvoc.config import Config

    Config().with_overrides(["audio.hop_length=64", "audio.win_length=256", "audio.n_fft=256"])
    Config().with_overrides(["truncation.steps=500", "infer.crop_frames=1"])
    with pytest.raises(ConfigError, match="infer.crop_frames"):
        Config().with_overrides(["audio.hop_length=64", "audio.win_length=256", "audio.n_fft=256",
                                 "infer.enabled=true"])
    with pytest.raises(ConfigError, match="expected int"):  # still typed
        Config().with_overrides(["infer.crop_frames=many"])


def test_changed_audio_is_extracted_again(tmp_path):
    """Class 3: a clip replaced under the same name gets new features; a touched one is not re-extracted."""
    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import feature_dir, preprocess

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"u{i}.wav", voiced(0.6, 22050, f0=120 + 20 * i, seed=i), 22050)
    cfg = AudioConfig()
    preprocess(src, tmp_path / "d", cfg, jobs=1)
    feats = feature_dir(tmp_path / "d", cfg)
    before = np.load(feats / "u1.mel.npy")
    stamp = (feats / "u0.mel.npy").stat().st_mtime_ns
    sf.write(src / "u1.wav", voiced(0.6, 22050, f0=300, seed=9), 22050)  # same name, new audio
    os.utime(src / "u0.wav")  # touched only
    preprocess(src, tmp_path / "d", cfg, jobs=1)
    assert not np.array_equal(np.load(feats / "u1.mel.npy"), before)
    assert (feats / "u0.mel.npy").stat().st_mtime_ns == stamp


def test_debris_and_replayed_rows_are_cleaned_on_start(tmp_path, trained_run):
    """Class 9: orphaned temporaries of a killed process go; ``valid.jsonl`` loses the rows that will be replayed."""
    from diffvoc.config import Config
    from diffvoc.training.trainer import Trainer

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (run / f".ckpt-00000020.tmp-{dead}-abcd").mkdir()
    (run / f".ckpt-00000020.tmp-{dead}-abcd" / "model.safetensors").write_bytes(b"half")
    (run / f".latest.tmp-{dead}-x").write_text("ckpt")
    (run / f".mine.tmp-{os.getpid()}-y").write_text("a live writer's")
    rows = (run / "valid.jsonl").read_text().splitlines()
    (run / "valid.jsonl").write_text("\n".join(rows + ['{"step": 15, "loss": 1}', '{"step": 1'][:2]) + "\n")
    cfg = Config.load(run / "config.yaml")
    t = Trainer(cfg, run, resume=True, progress=False)
    t.close()
    names = {p.name for p in run.iterdir()}
    assert not any(n.startswith((".ckpt-", ".latest")) for n in names), names
    assert f".mine.tmp-{os.getpid()}-y" in names
    steps = [json.loads(line)["step"] for line in (run / "valid.jsonl").read_text().splitlines()]
    assert steps and max(steps) <= t.step and len(steps) == len(rows)


def test_weight_files_have_the_umask_mode(trained_run):
    """Class 10: safetensors and mkstemp write 0600; checkpoint files get 0666 less the umask."""
    from diffvoc.checkpoint import resolve_checkpoint_dir
    from diffvoc.io import _umask

    want = 0o666 & ~_umask()
    for p in resolve_checkpoint_dir(trained_run).iterdir():
        assert p.stat().st_mode & 0o777 == want, (p.name, oct(p.stat().st_mode))


def test_normal_runs_print_no_warnings(tmp_path, work):
    """Class 10: library warnings do not leak to stderr in normal runs (vocode, export, mel)."""
    for argv in (["mel", str(work.b / "good.wav"), "-o", str(tmp_path / "m.npy")],
                 ["vocode", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint", str(work.ck),
                  "--steps", "2"],
                 ["export", "--checkpoint", str(work.ck), "-o", str(tmp_path / "model.onnx")]):
        code, stderr, caught = _run_inprocess(argv, ())
        assert code == 0, stderr
        assert not stderr.strip() and not caught, (argv[0], stderr, caught)


def test_multi_file_writes_are_all_or_nothing(tmp_path, work, monkeypatch):
    """Class 8: an export that fails at its second file leaves none; so does a vocode whose last input fails."""
    import diffvoc.inference.onnx as onnx_mod

    real, calls = torch.onnx.export, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(onnx_mod.torch.onnx, "export", second_fails)
    code, stderr, _ = _run_inprocess(["export", "--checkpoint", str(work.ck), "-o", str(tmp_path / "m.onnx")], ())
    assert code == 1 and "no space left on the device" in stderr and not list(tmp_path.iterdir()), stderr
    monkeypatch.undo()
    out = tmp_path / "many"
    code, stderr, _ = _run_inprocess(["vocode", str(work.b / "good.npy"), str(work.b / "good2.npy"),
                                      str(work.b / "huge.npy"), "-o", str(out), "--checkpoint", str(work.ck),
                                      "--batch-size", "1", "--steps", "2"], ())
    assert code == 1 and not out.exists(), stderr
