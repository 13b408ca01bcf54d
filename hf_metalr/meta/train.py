"""Meta-training: PPO across many whole training runs.

Each iteration samples ``episodes_per_iteration`` problems from the training families, runs one
episode per problem (the current policy acting, in a plain PyTorch loop) and one constant-LR run
of the same problem and data order (the counterfactual baseline of the PPO advantage), and makes
one PPO update. Every ``eval_every`` iterations (and at the last) the greedy policy is scored against a constant LR
on a fixed set of problems from the held-out families (see ``held_out``): evaluations to an
accuracy target (``held_out_evals_ratio``, < 1 is faster) and the validation loss
(``held_out_score``, > 0 is better). The policy kept at the end is the one of the scored iteration
with the lowest evaluations ratio: the held-out families are meta-training's validation set.
``init_policy`` starts from a saved policy (fine-tuning the shipped one, say) instead of a fresh
one; that starting policy is scored first, as iteration 0, and is kept unless an iteration beats it.

What is written in ``out``:

- ``meta_checkpoint.json`` after every iteration (atomically): policy, PPO optimizer, curve,
  iteration. ``resume=True`` continues from it; everything random is derived from
  ``(seed, iteration)``, so a resumed run equals an uninterrupted one;
- ``learning_curve.png``: mean return and the PPO diagnostics (``approx_kl``, ``clipfrac``, the
  critic's explained variance, also in the checkpoint's curve) per iteration, and both held-out
  scores;
- ``policy.safetensors`` + ``policy.json`` at the end: the selected policy, with a card (families,
  episodes, seed, package version, held-out scores, selected iteration);
  ``final_policy.safetensors`` + ``.json``: the last iteration's policy.

``MetaTrainConfig`` checks its fields when built; ``out`` is locked while meta-training runs, so a
second process into the same folder fails at once.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..checks import finite_number, whole_number
from ..controller.actions import KEEP_INDEX
from ..controller.policy import PolicyConfig, PolicyNetwork, load_policy, load_policy_weights, random_policy, save_policy
from ..output_dir import locked_output_dir
from ..controller.threads import single_threaded
from ..controller.serialization import optimizer_state_from_json, optimizer_state_to_json, tensors_to_text, text_to_tensors
from .episode import Episode, decision_rewards, run_episode
from .families import HELD_OUT_FAMILIES, TRAIN_FAMILIES, sample_problem
from .held_out import TARGET_FRACTION, held_out_problems, held_out_scores
from .ppo import PPOConfig, ppo_update, relative_rewards

__all__ = ["MetaTrainConfig", "meta_train", "CHECKPOINT_NAME", "EpisodeRunner", "score_held_out"]

CHECKPOINT_NAME = "meta_checkpoint.json"
CHECKPOINT_FORMAT = 2  # 2: held-out accuracies, the selected policy
BACKENDS = ("process", "serial", "ray")


DEFAULT_ITERATIONS = 30  # meta-iterations of a fresh run without --iterations


@dataclass
class MetaTrainConfig:
    out: str = field(metadata={"help": "output directory (checkpoint, plot, policy)"})
    iterations: int | None = field(default=None, metadata={"help": f"PPO iterations (default {DEFAULT_ITERATIONS}; with "
                                                             "--resume the stored count, and a larger one extends "
                                                             "the run)"})
    episodes_per_iteration: int = field(default=32, metadata={"help": "training runs per iteration"})
    seed: int = field(default=0, metadata={"help": "seed of everything random; the same seed gives the same policy"})
    workers: int = field(default=2, metadata={"help": "parallel episode workers (process and ray backends; serial runs "
                                                       "the episodes one at a time in this process)"})
    backend: str = field(default="process", metadata={"help": f"where episodes run: {', '.join(BACKENDS)}"})
    eval_every: int = field(default=5, metadata={"help": "score on the held-out families every N iterations, and at the last"})
    held_out_per_family: int = field(default=20, metadata={"help": "held-out problems per held-out family"})
    keep_prior: float = field(default=1.0, metadata={"help": "initial logit bonus of the 'keep the LR' action (a fresh policy only)"})
    init_policy: str = field(default="", metadata={"help": "start from this saved policy instead of a fresh one: a path, "
                                                        "or 'default' to fine-tune the shipped policy"})
    ppo_lr: float = field(default=PPOConfig.lr, metadata={"help": "Adam LR of the PPO update"})
    ppo_epochs: int = field(default=PPOConfig.epochs, metadata={"help": "passes over each iteration's transitions"})
    ppo_minibatch: int = field(default=PPOConfig.minibatch_size, metadata={"help": "transitions per PPO minibatch"})
    resume: bool = field(default=False, metadata={"help": "continue from out/meta_checkpoint.json"})

    def __post_init__(self):
        """Fail (``ValueError``, naming the flag) on a value that would crash later or silently never train."""
        flag = {f.name: "--" + f.name.replace("_", "-") for f in fields(self)}
        for name in ("iterations", "episodes_per_iteration", "workers", "eval_every", "held_out_per_family", "ppo_epochs",
                     "ppo_minibatch"):
            if not (name == "iterations" and self.iterations is None):  # None: the default, or the stored count
                _as_value_error(whole_number, getattr(self, name), flag[name], at_least=1)
        _as_value_error(whole_number, self.seed, flag["seed"], at_least=0)
        if self.seed > MAX_SEED:  # it seeds torch generators with seed * 100_003 + iteration
            raise ValueError(f"--seed must be at most {MAX_SEED}, got {self.seed}")
        _as_value_error(finite_number, self.keep_prior, flag["keep_prior"])
        if abs(self.keep_prior) > MAX_KEEP_PRIOR:
            raise ValueError(f"--keep-prior must lie within [-{MAX_KEEP_PRIOR:g}, {MAX_KEEP_PRIOR:g}] (a logit bonus: "
                             f"{MAX_KEEP_PRIOR:g} already makes 'keep' all but certain), got {self.keep_prior}")
        _as_value_error(finite_number, self.ppo_lr, flag["ppo_lr"], at_least=0)
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r} is unknown; choose from: {', '.join(BACKENDS)}")
        if not str(self.out):
            raise ValueError("--out is empty; name an output folder")
        if self.init_policy == "random":
            raise ValueError("--init-policy random: a fresh seeded policy is what meta-training starts from without "
                             "--init-policy; leave the flag out")


def _as_value_error(check, value, what, **bounds):
    try:
        return check(value, what, **bounds)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


MAX_SEED = 2**32 - 1  # as compare's; seed * 100_003 + iteration seeds a torch generator, which takes an int64
MAX_KEEP_PRIOR = 50.0
_SAME_RUN = ("iterations", "episodes_per_iteration", "seed", "eval_every", "held_out_per_family", "keep_prior", "ppo_lr",
             "ppo_epochs", "ppo_minibatch", "init_policy")


def _policy_from_text(text: str, config: dict) -> PolicyNetwork:
    policy = PolicyNetwork(PolicyConfig(**config))
    policy.load_state_dict(text_to_tensors(text))
    return policy


def _exit_with_parent(parent: int) -> None:
    """Pool-worker initializer: end the worker when the meta-training process is gone (killed)."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _collect(job: tuple) -> Episode:
    """One episode (a top-level function, so process pools and Ray can ship it)."""
    policy_text, policy_config, spec, seed, greedy = job
    torch.set_num_threads(1)
    policy = _policy_from_text(policy_text, policy_config) if policy_text is not None else None
    return run_episode(spec, policy, seed, greedy=greedy)


class EpisodeRunner:
    """Runs a list of episode jobs on the chosen backend, in order."""

    def __init__(self, backend: str, workers: int):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
        self.backend, self.workers = backend, workers
        self._pool, self._ray_started = None, False
        if backend == "process":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
        elif backend == "ray":
            try:
                import ray
            except ImportError as exc:
                raise ImportError("backend 'ray' needs the ray extra: pip install 'hf_metalr[ray]'") from exc
            if not ray.is_initialized():
                if os.environ.get("RAY_ADDRESS"):  # a running cluster: its resources are its own
                    ray.init(include_dashboard=False, log_to_driver=False)
                else:  # a local instance of --workers CPUs
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                self._ray_started = True
            self._remote = ray.remote(num_cpus=1)(_collect)

    def map(self, jobs: list[tuple]) -> list[Episode]:
        if self.backend == "serial":
            threads = torch.get_num_threads()
            try:
                return [_collect(job) for job in jobs]
            finally:
                torch.set_num_threads(threads)
        if self.backend == "process":
            return list(self._pool.map(_collect, jobs))
        import ray

        return ray.get([self._remote.remote(job) for job in jobs])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._ray_started:
            import ray

            ray.shutdown()


def _initial_policy(config: MetaTrainConfig) -> PolicyNetwork:
    if config.init_policy == "default":  # the shipped policy, by name
        from ..policies import default_policy_path

        return load_policy(default_policy_path())
    if config.init_policy:
        return load_policy(config.init_policy)  # its own checks name a missing, corrupt or incompatible file
    policy = random_policy(config.seed)
    with torch.no_grad():
        policy.actor[-1].bias[KEEP_INDEX] += config.keep_prior
    return policy


def _same_policy_path(stored, given) -> bool:
    """Whether two --init-policy values name the same policy (a relative and an absolute path, the
    .safetensors or the .json, or the name without either)."""
    from ..controller.policy import policy_files
    from ..policies import default_policy_path

    def files(value):
        if not value:
            return None
        return policy_files(default_policy_path() if value == "default" else Path(value).resolve())

    return files(stored) == files(given)


def _sha256(policy_text: str) -> str:
    import hashlib

    return hashlib.sha256(policy_text.encode()).hexdigest()


def score_held_out(runner, policy_text: str, policy_config: dict, held_out: list, baseline: list) -> dict:
    """The greedy policy against the constant-LR baseline on the held-out problems, as the curve's
    ``held_out_*`` entries."""
    scored = runner.map([(policy_text, policy_config, spec, seed, True) for spec, seed in held_out])
    scores = held_out_scores(held_out, baseline, [episode.held_out_summary() for episode in scored])
    return {"held_out_score": scores["loss_score"], "held_out_evals_ratio": scores["evals_ratio"],
            "held_out_evals_ratio_by_band": scores["evals_ratio_by_band"]}


def _improves(evals_ratio: float, best: dict | None) -> bool:
    """Whether a scored iteration beats the kept one (a NaN ratio, no classification problem, never does)."""
    if best is None:
        return True
    return not math.isnan(evals_ratio) and (math.isnan(best["evals_ratio"]) or evals_ratio < best["evals_ratio"])


def _save_checkpoint(out: Path, state: dict) -> None:
    tmp = out / (CHECKPOINT_NAME + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, out / CHECKPOINT_NAME)


def _plot(out: Path, curve: list[dict], scored: list[dict], kept: dict | None = None) -> Path:
    """Mean return and the PPO diagnostics per iteration (``curve``), and the held-out scores of the
    ``scored`` iterations."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ((ax1, ax4), (ax2, ax3)) = plt.subplots(2, 2, figsize=(12, 7.6))
    ax1.plot([c["iteration"] for c in curve], [c["mean_return"] for c in curve], marker=".", label="return")
    if all("mean_return_vs_constant" in c for c in curve):
        ax1.plot([c["iteration"] for c in curve], [c["mean_return_vs_constant"] for c in curve], marker=".",
                 label="return - constant LR's")
    ax1.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax1.legend()
    ax1.set(title="mean episode return (training families)", xlabel="meta-iteration", ylabel="return")
    ax2.plot([c["iteration"] for c in scored], [c["held_out_score"] for c in scored], marker="o", color="C1")
    ax2.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax2.set(title="held-out loss score (> 0: better than constant LR)", xlabel="meta-iteration", ylabel="score")
    ax3.plot([c["iteration"] for c in scored], [c["held_out_evals_ratio"] for c in scored], marker="o", color="C2")
    if kept is not None:
        label = f"kept: iteration {kept['iteration']}" + (" (the starting policy)" if kept["iteration"] == 0 else "")
        ax3.plot([kept["iteration"]], [kept["evals_ratio"]], marker="*", markersize=16, color="C3", linestyle="", label=label)
        ax3.legend()
    ax3.axhline(1, color="grey", linestyle="--", linewidth=1)
    ax3.set(title="held-out evals ratio (< 1: faster than constant)", xlabel="meta-iteration", ylabel="evals to target / constant LR's")
    _plot_ppo(ax4, curve)
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_ppo(ax, curve: list[dict]) -> None:
    """approx_kl and clipfrac (left axis) and the critic's explained variance (right axis) per
    iteration: a KL or clip fraction that climbs, or an explained variance that stays <= 0, shows a
    PPO run that is collapsing or stuck. Iterations from before these were logged are left out."""
    for i, key in enumerate(("approx_kl", "clipfrac")):
        points = [(c["iteration"], c[key]) for c in curve if key in c]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color=f"C{i + 4}", label=key)
    ax.set(title="PPO update per iteration", xlabel="meta-iteration", ylabel="approx_kl, clipfrac")
    right = ax.twinx()
    points = [(c["iteration"], c["explained_variance"]) for c in curve if "explained_variance" in c]
    right.plot([p[0] for p in points], [p[1] for p in points], marker=".", color="C6", label="explained variance")
    right.axhline(0, color="grey", linestyle=":", linewidth=1)
    right.set_ylabel("critic's explained variance of the returns")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best")


def _read_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`meta_train`, or a ``ValueError`` naming the file."""
    fix = f"restore {path} from a backup, or start again with another --out"
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {path} is not readable JSON (truncated?): {exc}; {fix}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"--resume: {path} has checkpoint format {found!r}, and this hf_metalr resumes format "
                         f"{CHECKPOINT_FORMAT} only; start again with another --out")
    shape = {"config": dict, "iteration": int, "curve": list, "baseline_held_out": (list, type(None)),
             "best": (dict, type(None)), "policy": str, "optimizer": dict}
    wrong = [key for key, kind in shape.items() if not isinstance(state.get(key), kind)]
    if not wrong:  # inside them: what the resume and the closing plot and card read
        iterations = state["config"].get("iterations")
        checks = {
            "iteration": isinstance(iterations, int) and 0 <= state["iteration"] <= iterations,
            "curve": len(state["curve"]) == state["iteration"] and all(
                isinstance(c, dict) and isinstance(c.get("iteration"), int) for c in state["curve"]),
            "best": state["best"] is None or (isinstance(state["best"].get("policy"), str) and isinstance(
                state["best"].get("evals_ratio"), (int, float)) and isinstance(state["best"].get("iteration"), int)),
            "optimizer": isinstance(state["optimizer"].get("tensors"), str)
            and isinstance(state["optimizer"].get("param_groups"), list),
        }
        wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        raise ValueError(f"--resume: {path} lacks or garbles {', '.join(wrong)}: it is not a whole meta-training "
                         f"checkpoint; {fix}")
    return state


def meta_train(config: MetaTrainConfig, log=print) -> Path:
    """Run (or resume) meta-training; returns the path of the final policy's safetensors file.

    Holds ``config.out``'s lock throughout (``OutputDirError``, a ``ValueError``, when another
    process holds it or the folder is unusable)."""
    with locked_output_dir(config.out, "hf-metalr meta-train"):
        return _meta_train(config, log)


def _meta_train(config: MetaTrainConfig, log=print) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / CHECKPOINT_NAME
    saved = _read_checkpoint(checkpoint) if config.resume and checkpoint.exists() else None
    if config.iterations is None:  # a resume goes on to the stored count, a fresh run to the default
        stored = saved["config"].get("iterations") if saved is not None else None
        config = replace(config, iterations=stored if isinstance(stored, int) else DEFAULT_ITERATIONS)
    policy = _initial_policy(config)
    policy_config = asdict(policy.config)
    ppo = PPOConfig(lr=config.ppo_lr, epochs=config.ppo_epochs, minibatch_size=config.ppo_minibatch)
    optimizer = torch.optim.Adam(policy.parameters(), lr=ppo.lr, eps=ppo.adam_eps)
    held_out = held_out_problems(config.seed, config.held_out_per_family)
    state = {"format": CHECKPOINT_FORMAT, "config": asdict(config), "iteration": 0, "curve": [], "baseline_held_out": None,
             "best": None}

    if config.resume and not checkpoint.exists():
        log(f"--resume: {out} holds no {CHECKPOINT_NAME} yet; starting a fresh meta-training there")
    if config.ppo_lr == 0:
        log("--ppo-lr 0: the policy is scored on the held-out problems, not trained")
    if checkpoint.exists():
        if not config.resume:
            raise FileExistsError(f"{checkpoint} exists; pass --resume to continue it, or choose another --out")
        state = saved
        defaults = {f.name: f.default for f in fields(MetaTrainConfig)}
        stored_iterations = state["config"].get("iterations")
        extended = isinstance(stored_iterations, int) and config.iterations > stored_iterations  # goes on, as seeded
        differing = [k for k in _SAME_RUN if k != "init_policy" and not (k == "iterations" and extended)
                     and state["config"].get(k, defaults[k]) != getattr(config, k)]
        stored_init = state["config"].get("init_policy")
        if not _same_policy_path(stored_init, config.init_policy):
            differing.append("init_policy")
        if differing:
            raise ValueError(
                f"--resume: {checkpoint} was made with other settings ("
                + "; ".join(f"{k}: {state['config'].get(k, defaults[k])!r} stored, {getattr(config, k)!r} given"
                            for k in differing)
                + "); rerun with the stored settings, or use another --out")
        if extended:
            log(f"--resume: extending the run from {stored_iterations} to {config.iterations} iterations")
            state["config"]["iterations"] = config.iterations
        started_from = state.get("start", {}).get("sha256")
        if config.init_policy and started_from not in (None, _sha256(tensors_to_text(policy.state_dict()))):
            raise ValueError(f"--resume: {config.init_policy} is not the policy this run started from (its weights "
                             "changed since); restore that file or start again with another --out")
        try:
            saved = text_to_tensors(state["policy"])
        except Exception as exc:  # base64 or safetensors errors: the blob is damaged
            raise ValueError(f"--resume: the policy in {checkpoint} is damaged ({exc}); restore the file or start "
                             "again with another --out") from None
        load_policy_weights(policy, saved, f"--resume: the policy weights in {checkpoint}",
                            "the policy this hf_metalr builds (another feature set or size)")
        try:
            optimizer.load_state_dict(optimizer_state_from_json(state["optimizer"]))
        except Exception as exc:  # base64, safetensors or torch's own checks: the blob is damaged
            raise ValueError(f"--resume: {checkpoint}: its PPO optimizer state is damaged ({exc}); restore the file "
                             "or start again with another --out") from None
        log(f"resuming meta-training at iteration {state['iteration']} of {config.iterations}")

    runner = EpisodeRunner(config.backend, config.workers)
    try:
        if state["baseline_held_out"] is None:
            constant = runner.map([(None, None, spec, seed, True) for spec, seed in held_out])
            state["baseline_held_out"] = [episode.held_out_summary() for episode in constant]
        if config.init_policy and state["best"] is None:  # a fine-tune keeps its start unless an iteration beats it
            start_text = tensors_to_text(policy.state_dict())
            scores = score_held_out(runner, start_text, policy_config, held_out, state["baseline_held_out"])
            state["best"] = {"iteration": 0, "evals_ratio": scores["held_out_evals_ratio"], "policy": start_text}
            state["start"] = {"sha256": _sha256(start_text), **scores}
            log(f"starting policy {config.init_policy}: held-out loss score {scores['held_out_score']:+.3f}, "
                f"evals ratio {scores['held_out_evals_ratio']:.3f}")
        durations = []
        while state["iteration"] < config.iterations:
            iteration = state["iteration"]
            start = time.perf_counter()
            rng = np.random.default_rng([config.seed, iteration])
            specs = [sample_problem(rng, TRAIN_FAMILIES[i % len(TRAIN_FAMILIES)]) for i in range(config.episodes_per_iteration)]
            seeds = [int(s) for s in rng.integers(2**31, size=len(specs))]
            text = tensors_to_text(policy.state_dict())
            jobs = [(text, policy_config, spec, seed, False) for spec, seed in zip(specs, seeds)]
            baselines = [(None, None, spec, seed, False) for spec, seed in zip(specs, seeds)]
            results = runner.map(jobs + baselines)
            episodes = results[: len(jobs)]
            for episode, baseline in zip(episodes, results[len(jobs) :]):
                episode.baseline_rewards = decision_rewards(baseline.values)[episode.first_decision :]
            generator = torch.Generator().manual_seed(config.seed * 100_003 + iteration)
            with single_threaded():
                stats = ppo_update(policy, optimizer, episodes, ppo, generator)
            updated = tensors_to_text(policy.state_dict())
            entry = {
                "iteration": iteration + 1,
                "mean_return": float(np.mean([sum(e.rewards) for e in episodes])),
                "mean_return_vs_constant": float(np.mean([sum(relative_rewards(e)) for e in episodes])),
                "diverged": sum(e.diverged for e in episodes),
                "episodes": len(episodes),
                **{k: v for k, v in stats.items()},
            }
            if (iteration + 1) % config.eval_every == 0 or iteration + 1 == config.iterations:
                scores = score_held_out(runner, updated, policy_config, held_out, state["baseline_held_out"])
                entry.update(scores)
                if _improves(scores["held_out_evals_ratio"], state["best"]):
                    state["best"] = {"iteration": iteration + 1, "evals_ratio": scores["held_out_evals_ratio"], "policy": updated}
            state["curve"].append(entry)
            state["iteration"] = iteration + 1
            state["policy"] = updated
            state["optimizer"] = optimizer_state_to_json(optimizer.state_dict())
            _save_checkpoint(out, state)
            durations.append(time.perf_counter() - start)
            eta = np.mean(durations) * (config.iterations - state["iteration"])
            held = (f", held-out loss score {entry['held_out_score']:+.3f}, evals ratio {entry['held_out_evals_ratio']:.3f}"
                    if "held_out_score" in entry else "")
            log(f"iteration {state['iteration']}/{config.iterations}: mean return {entry['mean_return']:+.3f} "
                f"({entry['mean_return_vs_constant']:+.3f} vs constant LR), "
                f"diverged {entry['diverged']}/{entry['episodes']}{held}, {durations[-1]:.1f}s, ETA {eta / 60:.1f} min")
    finally:
        runner.close()

    scored = [c for c in state["curve"] if "held_out_score" in c]
    if "start" in state:  # a fine-tune's starting policy, scored as iteration 0
        scored = [{"iteration": 0, **state["start"]}] + scored
    _plot(out, state["curve"], scored, state["best"])
    card = {
        "trained_with": "hf-metalr meta-train (PPO over whole training runs)",
        "training_families": list(TRAIN_FAMILIES),
        "held_out_families": list(HELD_OUT_FAMILIES),
        "episodes": config.iterations * config.episodes_per_iteration,
        "constant_lr_baseline_runs": config.iterations * config.episodes_per_iteration,
        "iterations": config.iterations,
        "seed": config.seed,
        "initialized_from": config.init_policy or "a fresh policy (keep prior %g)" % config.keep_prior,
        "hf_metalr_version": __version__,
        "held_out_problems": len(held_out),
        "selected_iteration": state["best"]["iteration"],
        "selection": "the scored iteration with the lowest held-out evals ratio"
                     + (" (0: the starting policy, scored before the first iteration)" if config.init_policy else ""),
        "held_out_evals_ratio_selected": round(state["best"]["evals_ratio"], 4),
        "held_out_evals_ratios": {str(c["iteration"]): round(c["held_out_evals_ratio"], 4) for c in scored},
        "held_out_evals_ratios_by_lr_band": {str(c["iteration"]): {b: round(v, 4) for b, v in c["held_out_evals_ratio_by_band"].items()}
                                             for c in scored},
        "held_out_evals_ratio_definition": f"geometric mean over held-out problems of evals to {TARGET_FRACTION} x the best "
                                           "validation accuracy (policy / constant LR); < 1 is faster",
        "held_out_score_final": scored[-1]["held_out_score"] if scored else None,
        "held_out_score_selected": next((c["held_out_score"] for c in scored if c["iteration"] == state["best"]["iteration"]),
                                        None),
        "held_out_scores": {str(c["iteration"]): round(c["held_out_score"], 4) for c in scored},
        "held_out_score_definition": "mean over held-out problems of (constant-LR mean log val loss - policy's); > 0 is better",
        "lr_span": "initial LR = family's good LR x 10**U(-0.3, 0.3), x 10**-U(0.3, 1.7) or x 10**U(0.3, 1.7), a third each",
    }
    save_policy(policy, out / "final_policy", card={**card, "selected_iteration": config.iterations,
                                                   "selection": "the last iteration (not the selected policy)",
                                                   "held_out_evals_ratio_selected": round(scored[-1]["held_out_evals_ratio"], 4),
                                                   "held_out_score_selected": scored[-1]["held_out_score"]})
    policy.load_state_dict(text_to_tensors(state["best"]["policy"]))
    return save_policy(policy, out / "policy", card=card)

