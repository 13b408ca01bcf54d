"""MetaLRCallback on a LoRA fine-tune (peft): the base frozen, the adapters and the head trained."""

import warnings

import peft
import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from hf_metalr import MetaLRCallback, read_trace

TOKENS, LENGTH = 40, 12


class Rows(torch.utils.data.Dataset):
    """Rows of random tokens; the label says whether the first token is in the upper half of the vocabulary."""

    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, TOKENS, (n, LENGTH), generator=generator)
        self.labels = (self.ids[:, 0] >= (TOKENS + 4) // 2).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def lora_model():
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(vocab_size=TOKENS, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=2))
    config = peft.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], task_type="SEQ_CLS")
    return peft.get_peft_model(base, config)


def train(output_dir, **kwargs):
    """15 steps at an LR too high for the adapters (the controller cuts), an evaluation every 5, a checkpoint every 7."""
    callback = MetaLRCallback()
    args = TrainingArguments(str(output_dir), per_device_train_batch_size=16, per_device_eval_batch_size=64, max_steps=15,
                             eval_strategy="steps", eval_steps=5, logging_steps=5, save_strategy="steps", save_steps=7,
                             learning_rate=0.5, lr_scheduler_type="constant", report_to="none", use_cpu=True,
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=lora_model(), args=args, train_dataset=Rows(320, 1), eval_dataset=Rows(128, 2),
                      callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(**kwargs)
    return trainer, callback


def test_a_lora_fine_tune_watches_the_trained_weights_only_and_resumes_to_the_same_decisions(tmp_path):
    trainer, callback = train(tmp_path)
    model = trainer.model
    trained = [p for p in model.parameters() if p.requires_grad]
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen > 10 * sum(p.numel() for p in trained), "LoRA: most of the model is frozen"
    watched = callback.controller.alignment.params
    assert len(watched) == len(trained) and all(a is b for a, b in zip(watched, trained))
    whole = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [entry["global_step"] for entry in whole] == [5, 10, 15]
    assert "iterate_average_gain" in whole[1]["features"], "the check replays the evaluation through the PeftModel"
    assert any(entry["applied"] != 1.0 for entry in whole), "the controller moved the LR"
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(whole[-1]["lr"])
    # checkpoint-7 falls between two evaluations: the interval's average is saved, as large as the trained weights
    with safe_open(str(tmp_path / "checkpoint-7" / "metalr_iterate_average.safetensors"), "pt") as f:
        assert sum(f.get_tensor(key).numel() for key in f.keys()) == sum(p.numel() for p in trained)
    resumed, _ = train(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-7"))
    assert read_trace(tmp_path / "metalr_trace.jsonl") == whole
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(whole[-1]["lr"])
