"""The recipes under ``recipes/``: each run end to end as a subprocess on tiny local data, offline.

Every fixture is generated into tmp dirs in the hub dataset's schema: SST-2 sentences (csv/json),
CIFAR-10 images (PNG files and nested pixel lists), LibriSpeech clips (wav at 16/8/22.05 kHz and
flac, as paths). Models are tiny, built from configs (``--model_type`` + ``--config_overrides``)
or saved to a local directory (``--model_name_or_path``). SST-2 runs on 2 processes (torchrun).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
PYTHON = sys.executable
RECIPE_NAMES = ("sst2", "cifar10", "librispeech")


def recipe_module(name: str):
    if str(RECIPES_DIR) not in sys.path:
        sys.path.insert(0, str(RECIPES_DIR))
    return importlib.import_module(f"run_{name}")


def common_module():
    recipe_module("sst2")
    return importlib.import_module("common")


def run(cmd: list[str], tmp: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp / "hf_datasets_cache"),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    return proc


def read_trace(output_dir: Path) -> list[dict]:
    path = output_dir / "metalr_trace.jsonl"
    assert path.exists(), f"no decision trace in {output_dir}: {sorted(p.name for p in output_dir.iterdir())}"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_common_outputs(output_dir: Path, *, metric: str, n_test: int, min_decisions: int = 10) -> dict:
    """all_results.json with train/eval/test metrics, a trace with >= min_decisions, checkpoints, the model."""
    results = json.loads((output_dir / "all_results.json").read_text())
    for key in ("train_loss", "train_runtime", "eval_loss", f"eval_{metric}", "test_loss", f"test_{metric}"):
        assert key in results and np.isfinite(results[key]), (key, results)
    assert results["test_samples"] == n_test
    trace = read_trace(output_dir)
    assert len(trace) >= min_decisions
    assert results["train_metalr_decisions"] == len(trace)
    assert all(entry["metric"] == f"eval_{metric}" for entry in trace)
    steps = [entry["global_step"] for entry in trace]
    assert steps == sorted(set(steps)), "one decision per evaluation, written once"
    assert list(output_dir.glob("checkpoint-*/trainer_state.json")), "no checkpoint saved"
    assert (output_dir / "model.safetensors").exists()
    assert (output_dir / "metalr_policy.safetensors").exists()
    return results


# -- fixtures in the hub schemas --------------------------------------------------------------------
POSITIVE, NEGATIVE = ["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "poor"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "acting"]


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory):
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("sst2")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    assert len(tokenizer) == len(vocab)
    tokenizer.save_pretrained(root / "tokenizer")
    rng = np.random.default_rng(0)

    def example(i):
        label = int(i % 2)
        words = [rng.choice(POSITIVE if label else NEGATIVE)] + list(rng.choice(FILLER, rng.integers(2, 7)))
        rng.shuffle(words)
        return {"sentence": " ".join(words), "label": label, "idx": i}

    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["sentence", "label", "idx"])
        writer.writeheader()
        writer.writerows(example(i) for i in range(200))
    with open(root / "dev.json", "w") as f:  # the official validation split = the recipe's test set
        f.writelines(json.dumps(example(i)) + "\n" for i in range(40))
    return root


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory):
    import pandas as pd
    from PIL import Image
    from transformers import ResNetConfig, ResNetForImageClassification

    root = tmp_path_factory.mktemp("cifar10")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)

    def pixels(label):
        image = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
        image[..., label % 3] += 150
        return image

    rows = []
    for i in range(120):
        Image.fromarray(pixels(i % 3)).save(root / "images" / f"{i}.png")
        rows.append({"img": f"images/{i}.png", "label": i % 3})  # relative to the csv
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame([{"img": pixels(i % 3).tolist(), "label": i % 3} for i in range(30)]).to_parquet(root / "test.parquet")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=10)
    ResNetForImageClassification(config).save_pretrained(root / "tiny-resnet")
    return root


WORDS = ["HELLO", "WORLD", "ONE", "TWO", "IT'S"]


@pytest.fixture(scope="module")
def librispeech_files(tmp_path_factory):
    import pandas as pd
    import soundfile as sf

    root = tmp_path_factory.mktemp("librispeech")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        rate, ext = [(16_000, "flac"), (8_000, "wav"), (22_050, "wav")][i % 3]
        n = int(rate * rng.uniform(0.6, 1.2))
        t = np.arange(n) / rate
        clip = 0.3 * np.sin(2 * np.pi * (150 + 50 * (i % 4)) * t) + 0.01 * rng.standard_normal(n)
        name = f"audio/{i}.{ext}"
        sf.write(root / name, clip.astype(np.float32), rate)
        rows.append({"audio": name, "text": " ".join(rng.choice(WORDS, 2)), "speaker_id": 19, "chapter_id": 198, "id": f"19-198-{i:04d}"})
    pd.DataFrame(rows[:16]).to_csv(root / "train.csv", index=False)
    with open(root / "validation.json", "w") as f:  # audio given in `file` here
        for row in rows[16:20]:
            f.write(json.dumps({"file": row["audio"], "text": row["text"], "id": row["id"]}) + "\n")
    pd.DataFrame(rows[20:]).to_parquet(root / "test.parquet")
    return root, rows[:16]


# -- end-to-end runs ---------------------------------------------------------------------------------
TINY_BERT = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,max_position_embeddings=64"
TINY_WAV2VEC2 = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,conv_dim=[16,16,16],"
    "conv_kernel=[10,4,4],conv_stride=[5,4,4],num_conv_pos_embeddings=16,num_conv_pos_embedding_groups=2,"
    "mask_time_prob=0.0,layerdrop=0.0"
)
# a fresh policy: the runs do not depend on the packaged default policy
COMMON = ["--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none", "--dataloader_num_workers", "0", "--metalr_policy", "random"]


@pytest.mark.slow
def test_sst2_two_processes(sst2_files, tmp_path):
    out = tmp_path / "out"
    cmd = [
        PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(RECIPES_DIR / "run_sst2.py"),
        "--model_type", "bert", "--config_overrides", TINY_BERT, "--tokenizer_name", str(sst2_files / "tokenizer"),
        "--train_file", str(sst2_files / "train.csv"), "--test_file", str(sst2_files / "dev.json"),
        "--validation_split_size", "40", "--output_dir", str(out), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
        "--metalr_seed", "7", "--metalr_max_lr", "4e-3", *COMMON,
    ]
    run(cmd, tmp_path)
    results = check_common_outputs(out, metric="accuracy", n_test=40)
    assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["test_f1"] <= 1.0
    assert results["train_samples"] == 160 and results["eval_samples"] == 40  # 40 carved from 200
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 10, "160 examples / (8 per device x 2 processes) = 10 steps: both ranks trained"
    trace = read_trace(out)
    assert len(trace) == 10, "eval_steps derived from --num_evaluations 10: one decision per step"
    assert all(entry["lr"] <= 4e-3 * (1 + 1e-9) for entry in trace), "--metalr_max_lr reached the callback"
    assert "MetaLRCallback" in json.dumps(state["stateful_callbacks"])
    first_eval = next(h for h in state["log_history"] if "eval_loss" in h)
    assert first_eval["eval_loss"] < 1.0, "a 2-class loss near ln 2, not multiplied by the number of processes"


@pytest.mark.slow
def test_cifar10_from_local_model_dir(cifar_files, tmp_path):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "out"
    cmd = [
        PYTHON, str(RECIPES_DIR / "run_cifar10.py"),
        "--model_name_or_path", str(cifar_files / "tiny-resnet"), "--classifier_dropout", "0.5", "--image_size", "32",
        "--train_file", str(cifar_files / "train.csv"), "--test_file", str(cifar_files / "test.parquet"),
        "--validation_split_size", "24", "--output_dir", str(out), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", *COMMON,
    ]
    run(cmd, tmp_path)
    results = check_common_outputs(out, metric="accuracy", n_test=30)
    assert results["train_samples"] == 96 and results["eval_samples"] == 24
    assert len(read_trace(out)) == 12  # 96 / 8 = 12 steps, one decision each
    config = json.loads((out / "config.json").read_text())
    assert config["classifier_dropout"] == 0.5 and len(config["id2label"]) == 10
    assert (out / "preprocessor_config.json").exists()
    # the inserted dropout leaves the parameter names alone: the result loads as a plain ResNet
    model, info = AutoModelForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


@pytest.mark.slow
def test_librispeech_char_vocab_and_wer(librispeech_files, tmp_path):
    root, train_rows = librispeech_files
    out = tmp_path / "out"
    cmd = [
        PYTHON, str(RECIPES_DIR / "run_librispeech.py"),
        "--model_type", "wav2vec2", "--config_overrides", TINY_WAV2VEC2,
        "--train_file", str(root / "train.csv"), "--validation_file", str(root / "validation.json"),
        "--test_file", str(root / "test.parquet"), "--output_dir", str(out), "--max_steps", "10",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
        "--save_steps", "5", "--save_strategy", "steps", *COMMON,
    ]
    run(cmd, tmp_path)
    results = check_common_outputs(out, metric="wer", n_test=4)
    assert results["test_wer"] >= 0 and "test_cer" in results
    assert results["train_samples"] == 16 and results["eval_samples"] == 4
    vocab = json.loads((out / "vocab.json").read_text())
    chars = {c for row in train_rows for c in row["text"]} - {" "}
    assert chars <= set(vocab) and {"|", "[PAD]", "[UNK]"} <= set(vocab), vocab
    assert set(vocab) - chars - {"|", "[PAD]", "[UNK]", "<s>", "</s>"} == set(), "vocabulary built from the data"
    import torch

    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.train_sampling_strategy == "group_by_length" and args.metric_for_best_model == "wer"
    assert args.greater_is_better is False


# -- flags, presets, schedule rules (in-process) ------------------------------------------------------
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_help_documents_every_flag(name, capsys):
    import dataclasses

    from transformers import TrainingArguments

    module = recipe_module(name)
    parser = module.get_parser()
    with pytest.raises(SystemExit) as stop:
        module.parse_args(parser, ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for dtype in parser.dataclass_types:
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            assert f"--{f.name}" in text, f"--{f.name} missing from --help"
            if dtype is not TrainingArguments:
                assert f.metadata.get("help", "").strip(), f"{dtype.__name__}.{f.name} has no help text"
    for flag in ("--lr_schedule", "--metalr_meta_lr", "--train_file", "--max_eval_samples", "--config_overrides", "--model_type"):
        assert flag in text
    # a True-default bool's --no_ twin says what it does, with no second, opposite default
    twin = text[text.index("  --no_metalr_gate"):].split("\n  --")[0]
    assert "The same as --metalr_gate false." in twin and "default" not in twin
    parsed = {type(obj).__name__: obj for obj in module.parse_args(parser, ["--output_dir", "x"])}
    assert parsed["ScheduleArguments"].metalr_gate is True
    assert parsed["TrainingArguments"].average_tokens_across_devices is False, "the recipes' default kept"
    parsed = {type(obj).__name__: obj for obj in module.parse_args(parser, ["--output_dir", "x", "--no_metalr_gate"])}
    assert parsed["ScheduleArguments"].metalr_gate is False


PLAN = {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "num_train_epochs": 50, "weight_decay": 1e-5}


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_preset_is_the_experiment_plan(name, tmp_path):
    module = recipe_module(name)
    preset = RECIPES_DIR / "configs" / f"{name}.json"
    model_args, data_args, schedule_args, training_args = module.parse_args(
        module.get_parser(), [str(preset), "--output_dir", str(tmp_path / "x")]
    )
    for key, value in PLAN.items():
        assert getattr(training_args, key) == value, key
    assert schedule_args.lr_schedule == "metalr" and schedule_args.metalr_meta_lr == 1e-4 and schedule_args.metalr_learn_online
    assert getattr(training_args.eval_strategy, "value", training_args.eval_strategy) == "epoch"  # a decision per epoch
    if name != "librispeech":
        assert model_args.classifier_dropout == 0.5
    assert training_args.output_dir == str(tmp_path / "x"), "flags after the .json override it"


def _training_args(tmp_path, **kwargs):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)


def test_schedule_flag_rules(tmp_path, monkeypatch):
    common = common_module()
    configure_schedule = common.configure_schedule

    def ScheduleArguments(**kwargs):  # noqa: N802 - a fresh policy: independent of the packaged default
        return common.ScheduleArguments(**{"metalr_policy": "random", **kwargs})

    args = _training_args(tmp_path, lr_scheduler_type="linear")
    assert configure_schedule(common.ScheduleArguments(lr_schedule="cosine"), args) is None
    assert args.lr_scheduler_type == "cosine", "a baseline sets the scheduler type"

    args = _training_args(tmp_path, lr_scheduler_type="linear", learning_rate=1e-3)
    kwargs = configure_schedule(ScheduleArguments(metalr_seed=3, metalr_max_lr=1e-2), args)
    assert args.lr_scheduler_type == "linear", "metalr keeps (and scales) a time-based schedule"
    assert kwargs["seed"] == 3 and kwargs["max_lr"] == 1e-2

    with pytest.raises(ValueError, match="lr_schedule plateau"):
        configure_schedule(
            ScheduleArguments(), _training_args(tmp_path, lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps")
        )

    # a warmup that the schedule would silently ignore is named (under metalr by the callback, at train begin:
    # tests/test_lr_binding.py)
    warned = []
    monkeypatch.setattr(common.schedule.logger, "warning", lambda message, *args: warned.append(message % args))
    for schedule, scheduler_type, ignored in [("step", "constant", True), ("constant", "constant", True),
                                              ("cosine", "constant", False), ("metalr", "constant", False),
                                              ("metalr", "constant_with_warmup", False), ("metalr", "linear", False),
                                              ("schedule-free", "constant", False), ("prodigy", "constant", True)]:
        warned.clear()
        configure_schedule(ScheduleArguments(lr_schedule=schedule),
                           _training_args(tmp_path, lr_scheduler_type=scheduler_type, warmup_steps=4))
        assert any("--warmup_steps 4 has no effect" in w for w in warned) == ignored, (schedule, scheduler_type, warned)
    with pytest.raises(ValueError, match="within"):
        configure_schedule(ScheduleArguments(metalr_min_lr=1e-2), _training_args(tmp_path, learning_rate=1e-3))
    with pytest.raises(ValueError, match="metric_for_best_model"):
        configure_schedule(ScheduleArguments(lr_schedule="plateau"), _training_args(tmp_path))


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_a_metric_driven_scheduler_type_is_refused_with_the_recipes_reason_before_the_trainers(name, tmp_path):
    """TrainingArguments itself refuses reduce_lr_on_plateau without an eval strategy, a message that
    leads nowhere here: the recipe names the conflict with the controller first."""
    module, common = recipe_module(name), common_module()
    base = ["--output_dir", str(tmp_path)]
    for argv, scheduler_type in [(base + ["--lr_scheduler_type", "reduce_lr_on_plateau"], "reduce_lr_on_plateau"),
                                 (base + ["--lr_schedule", "metalr-random", "--lr_scheduler_type", "greedy"], "greedy"),
                                 (base + ["--lr-scheduler-type", "reduce_lr_on_plateau"], "reduce_lr_on_plateau")]:
        with pytest.raises(ValueError, match=f"cannot run with --lr_scheduler_type {scheduler_type}: both set the LR"):
            common.parse_args(module.get_parser(), argv)
    *_, training_args = common.parse_args(module.get_parser(), base + ["--lr_schedule", "plateau",
                                                                       "--lr_scheduler_type", "reduce_lr_on_plateau",
                                                                       "--eval_strategy", "steps"])
    assert training_args.lr_scheduler_type == "reduce_lr_on_plateau", "a baseline may ask for it"


def test_a_hub_load_that_fails_offline_names_what_it_loaded_and_the_local_flags(tmp_path):
    common = common_module()
    with pytest.raises(OSError, match=r"(?s)could not load the model config 'no-such-org/no-such-model'.*HF_HUB_OFFLINE.*"
                                      r"--model_type to train from scratch"):
        common.load_config(common.BaseModelArguments(model_name_or_path="no-such-org/no-such-model"))
    data_args = common.BaseDataArguments(dataset_name="no-such-org/no-such-dataset")
    with pytest.raises(OSError, match=r"(?s)could not load the dataset 'no-such-org/no-such-dataset'.*--train_file"):
        common.load_splits(data_args, _training_args(tmp_path), columns=("text",))


def test_derived_eval_steps(tmp_path):
    from transformers import TrainerControl, TrainerState

    common = common_module()
    args = _training_args(tmp_path, per_device_train_batch_size=32, num_train_epochs=3)
    cadence = common.configure_evaluation(args, 10)
    state = TrainerState(max_steps=96)  # the Trainer's count: 3 x ceil(1000 / 32) = 96 steps
    state.compute_steps(args, state.max_steps)
    cadence.on_train_begin(args, state, TrainerControl())
    assert cadence.expected >= 10
    assert args.eval_strategy == "steps" and state.eval_steps == 9
    args = _training_args(tmp_path, eval_strategy="steps", eval_steps=50, max_steps=100)
    cadence = common.configure_evaluation(args, 10)
    state = TrainerState(max_steps=100)
    state.compute_steps(args, state.max_steps)
    cadence.on_train_begin(args, state, TrainerControl())
    assert cadence.expected == 2 and state.eval_steps == 50, "an explicit cadence is kept"


def test_local_file_schema_errors(tmp_path):
    common = common_module()
    (tmp_path / "bad.csv").write_text("text,label\nhello,1\n")
    data_args = common.BaseDataArguments(train_file=str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="no column 'sentence'"):
        common.load_splits(data_args, _training_args(tmp_path), columns=("sentence", "label"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported data file type"):
        common.load_splits(common.BaseDataArguments(train_file=str(tmp_path / "data.txt")), _training_args(tmp_path), columns=())
    config_args = common.BaseModelArguments(model_type="bert", config_overrides="hidden_sise=8")
    with pytest.raises(ValueError, match="hidden_sise"):
        common.load_config(config_args)


def test_local_data_that_cannot_train_is_refused_before_any_work(tmp_path):
    """A data file that does not exist, a file column pointing at files that do not exist, and a split
    left empty by the sample caps: each refused while loading, naming the flag or the file."""
    common = common_module()
    with pytest.raises(ValueError, match=r"--train_file .*nowhere.csv does not exist"):
        common.load_splits(common.BaseDataArguments(train_file=str(tmp_path / "nowhere.csv")), _training_args(tmp_path),
                           columns=())
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.png").write_bytes(b"")
    (tmp_path / "rows.csv").write_text("img,label\nimages/0.png,1\nimages/1.png,0\nimages/2.png,1\n")
    (tmp_path / "dev.csv").write_text("img,label\nimages/0.png,1\n")
    both = dict(train_file=str(tmp_path / "rows.csv"), validation_file=str(tmp_path / "dev.csv"))
    with pytest.raises(ValueError, match=r"rows.csv: 2 of the files in column 'img' do not exist, the first .*images/[12].png"):
        common.load_splits(common.BaseDataArguments(**both), _training_args(tmp_path), columns=("img", "label"),
                           path_columns=("img",))
    # only the rows kept after the sample caps are read, and so checked; and only the column the recipe reads
    (tmp_path / "images" / "1.png").write_bytes(b"")  # only 2.png is missing now
    outcomes = []
    for seed in range(6):
        try:
            kept = common.load_splits(common.BaseDataArguments(**both, max_train_samples=1), _training_args(tmp_path, seed=seed),
                                      columns=("img", "label"), path_columns=("img",))
            outcomes.append(kept["train"]["img"][0])
        except ValueError as exc:
            assert "1 of the files in column 'img' do not exist, the first" in str(exc) and "2.png" in str(exc)
            outcomes.append("refused")
    assert any(o.endswith(("0.png", "1.png")) for o in outcomes), outcomes  # a cap that leaves out 2.png runs
    (tmp_path / "audio.csv").write_text("audio,file,label\nimages/0.png,/gone/a.flac,1\n")
    common.load_splits(common.BaseDataArguments(train_file=str(tmp_path / "audio.csv"), validation_file=str(tmp_path / "audio.csv")),
                       _training_args(tmp_path), columns=("label",), path_columns=("audio", "file"))
    (tmp_path / "text.csv").write_text("sentence,label\n" + "".join(f"s{i},{i % 2}\n" for i in range(20)))
    data_args = common.BaseDataArguments(train_file=str(tmp_path / "text.csv"), validation_split_size=5, max_train_samples=0)
    with pytest.raises(ValueError, match="the train split has no examples left; check the data and --max_train_samples"):
        common.load_splits(data_args, _training_args(tmp_path), columns=("sentence", "label"))


def test_a_local_model_path_that_does_not_exist_is_named_as_such(tmp_path):
    common = common_module()
    with pytest.raises(OSError, match=r"could not load the model config '.*nomodel': there is no such file or folder"):
        common.load_config(common.BaseModelArguments(model_name_or_path=str(tmp_path / "nomodel")))


def test_a_learning_rate_that_is_not_positive_is_refused_naming_the_flag(tmp_path):
    common = common_module()
    for lr in (-1e-3, 0.0):
        for schedule in ("metalr", "constant"):
            with pytest.raises(ValueError, match=r"--learning_rate must be a finite number > 0"):
                common.configure_schedule(common.ScheduleArguments(lr_schedule=schedule), _training_args(tmp_path, learning_rate=lr))


def test_the_cadence_warning_counts_epoch_evaluations_and_names_the_real_cause(tmp_path, caplog):
    from transformers import TrainerControl, TrainerState

    common = common_module()
    # eval_strategy left unset (derived), but the run has fewer steps than --num_evaluations
    args = _training_args(tmp_path, max_steps=6)
    cadence = common.configure_evaluation(args, 10)
    state = TrainerState(max_steps=6)
    state.compute_steps(args, state.max_steps)
    with caplog.at_level("WARNING", logger="recipes"):
        cadence.on_train_begin(args, state, TrainerControl())
    assert cadence.expected == 6 and "the run has only 6 optimizer steps: raise --max_steps" in caplog.text
    assert "leave --eval_strategy unset" not in caplog.text
    # eval_strategy epoch with max_steps: one evaluation per epoch the Trainer runs (3 here), not 0
    caplog.clear()
    args = _training_args(tmp_path, eval_strategy="epoch", max_steps=24)
    cadence = common.configure_evaluation(args, 10)
    state = TrainerState(max_steps=24, num_train_epochs=3)  # the Trainer's count: 24 steps of 8 an epoch
    state.compute_steps(args, state.max_steps)
    with caplog.at_level("WARNING", logger="recipes"):
        cadence.on_train_begin(args, state, TrainerControl())
    assert cadence.expected == 3 and "only 3 evaluations" in caplog.text and "raise --num_train_epochs" in caplog.text


def test_setup_logging_lets_the_callbacks_info_lines_through(tmp_path):
    import logging

    common = common_module()
    logging.getLogger("hf_metalr").setLevel(logging.WARNING)
    common.setup_logging(_training_args(tmp_path, log_level="info"))
    assert logging.getLogger("hf_metalr").getEffectiveLevel() == logging.INFO


def test_librispeech_refuses_a_duration_window_that_leaves_no_clip(librispeech_files, tmp_path):
    root, _ = librispeech_files
    main = recipe_module("librispeech").main
    with pytest.raises(ValueError, match=r"the train split has no examples left; check --min_duration_in_seconds 0 and "
                                         r"--max_duration_in_seconds 0.01"):
        main(["--model_type", "wav2vec2", "--config_overrides", TINY_WAV2VEC2, "--train_file", str(root / "train.csv"),
              "--validation_file", str(root / "validation.json"), "--output_dir", str(tmp_path / "out"),
              "--max_duration_in_seconds", "0.01", "--max_steps", "2", *COMMON])


def test_a_home_path_the_shell_did_not_expand_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    common = common_module()
    parser = recipe_module("sst2").get_parser()
    parsed = common.parse_args(parser, ["--model_name_or_path=~/m", "--train_file=~/t.csv", "--output_dir", str(tmp_path / "o")])
    values = {f: getattr(a, f) for a in parsed for f in ("model_name_or_path", "train_file") if hasattr(a, f)}
    assert values == {"model_name_or_path": str(tmp_path / "m"), "train_file": str(tmp_path / "t.csv")}


def test_cifar10_refuses_an_image_size_or_padding_that_cannot_work(tmp_path):
    common = common_module()
    parser = recipe_module("cifar10").get_parser()
    with pytest.raises(ValueError, match="--image_size must be at least 1"):
        common.parse_args(parser, ["--image_size", "0", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--random_crop_padding must be 0"):
        common.parse_args(parser, ["--random_crop_padding", "-2", "--output_dir", str(tmp_path)])


def test_a_recipe_run_as_a_script_ends_its_process_group(tmp_path):
    """``end_distributed``, which each recipe calls after ``main()``: gloo's threads left to the
    interpreter's exit sometimes aborted a rank (SIGABRT) that had written everything."""
    import torch.distributed as dist

    recipe_module("sst2")  # puts recipes/ on the path
    from common import end_distributed

    end_distributed()  # no process group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_distributed()
    assert not dist.is_initialized()
    for name in RECIPE_NAMES:
        assert "main()\n    end_distributed()" in (RECIPES_DIR / f"run_{name}.py").read_text()
