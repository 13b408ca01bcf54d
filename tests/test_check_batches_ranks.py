"""The iterate-average check's kept evaluation batches under two real processes (gloo on the CPU):
with a token count gathered across processes (a causal LM under the Trainer), the mean over the
kept batches is the loss per token over every process's tokens, as with one process."""

import pytest
import torch
import torch.distributed as dist

import forked_job
from hf_metalr.integration.check_batches import EvalBatchCapture

TOKEN_LOSSES = torch.arange(1.0, 49.0).reshape(2, 4, 6)  # [rank, batch, token]: a loss per token
IGNORED = torch.zeros(2, 4, 6, dtype=torch.bool)
IGNORED[0, :, 4:] = True  # rank 0 pads two tokens of every sequence; rank 1 none
IGNORED[1, 2, :] = True  # and a whole batch of rank 1 is padding but one token
IGNORED[1, 2, 0] = False


class TokenLoss(torch.nn.Module):
    """Returns a causal LM's loss: its own tokens' losses summed, over ``num_items_in_batch`` when
    given (the Trainer's count), else their mean."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, losses, ignored, num_items_in_batch=None):
        kept = (losses * self.scale)[~ignored]
        return {"loss": kept.sum() / num_items_in_batch if num_items_in_batch is not None else kept.mean()}


def _run(rank, world, init_file, counts_across, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = TokenLoss().eval()
        capture = EvalBatchCapture()
        capture.attach(model, counts_across_processes=counts_across)
        capture.arm()
        with torch.no_grad():
            for b in range(4):
                local = (~IGNORED[rank, b]).sum()
                count = local.clone()
                if counts_across:
                    dist.all_reduce(count)
                model(losses=TOKEN_LOSSES[rank, b], ignored=IGNORED[rank, b], num_items_in_batch=count)
        current = capture.current_loss(torch.device("cpu"))
        forwards = []
        model.register_forward_hook(lambda module, args, out: forwards.append(1))
        with torch.no_grad():
            model.scale.fill_(2.0)
        replayed = capture.replayed_loss(model)  # a gain of log(1/2) on the heaviest batches: settled there
        settled_forwards = len(forwards)
        replayed_all = capture.replayed_loss(model, settle=False)
        with torch.no_grad():
            model.scale.fill_(0.5)
        forwards.clear()
        halved = capture.replayed_loss(model)  # a gain of log(2), above the bar: every kept batch is replayed
        halved_forwards = len(forwards)
        # uneven shares: rank 1 keeps a single batch; the ranks must still join the same all-reduces
        capture.arm()
        with torch.no_grad():
            model.scale.fill_(1.0)
            for b in range(4 if rank == 0 else 1):
                model(losses=TOKEN_LOSSES[rank, b], ignored=IGNORED[rank, b])
            model.scale.fill_(0.9)
        uneven_current = capture.current_loss(torch.device("cpu"))
        uneven = capture.replayed_loss(model)  # settled: the heaviest 2 of rank 0, the 1 of rank 1
        torch.save({"current": current, "replayed": replayed, "replayed_all": replayed_all, "halved": halved,
                    "settled_forwards": settled_forwards, "halved_forwards": halved_forwards, "uneven": uneven,
                    "uneven_current": uneven_current},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_read_the_loss_per_token_over_both(tmp_path):
    expected = float(TOKEN_LOSSES[~IGNORED].double().mean())
    for counts_across in (True, False):  # the Trainer's average_tokens_across_devices
        out = tmp_path / f"result-{counts_across}.pt"
        forked_job.spawn(_run, args=(2, str(tmp_path / f"init-{counts_across}"), counts_across, str(out)), nprocs=2)
        result, other = torch.load(f"{out}.0"), torch.load(f"{out}.1")
        assert abs(result["current"] - expected) < 1e-6 * expected, (counts_across, result, expected)
        for key, factor in (("replayed", 2), ("replayed_all", 2), ("halved", 0.5)):
            assert abs(result[key] - factor * expected) < 1e-6 * expected, (key, counts_across, result, expected)
        assert result["settled_forwards"] == other["settled_forwards"] == 2  # the heaviest 2 of each rank
        assert result["halved_forwards"] == other["halved_forwards"] == 4
        assert result["uneven"] == other["uneven"], "every rank reads the same loss"
        assert abs(result["uneven"] - 0.9 * result["uneven_current"]) < 1e-6 * result["uneven"]
