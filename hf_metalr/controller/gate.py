"""The direction gate: which of the policy's moves the evidence lets through, and the safeguards
that come with it. Pure functions of one decision's features (``features.RunTracker``'s, and what
``MetaLRController`` adds from ``alignment``, ``distance`` and ``iterate_average``): no state, no
tensors. ``MetaLRController`` asks ``gate_move`` at every decision when the gate is on
(``gate=True``, the default) and the parameters are watched, and, for an optimizer whose step per
coordinate is its LR's (``steps_per_coordinate``), ``past_the_distance`` every
``EARLY_DISTANCE_EVERY`` steps before the first decision.

The gate holds the policy to the evidence of which way the LR is wrong (``alignment``'s reading of
the gradient against the previous steps, the drift, the distance estimate, the iterate average):

- a raise is applied only when the gradient keeps pointing along the previous steps
  (``grad_alignment_t >= EVIDENCE_T`` and ``grad_alignment > 0``: the steps are too short) and the
  metric did not get worse since the last decision (by more than ``RAISE_PUNISHED``, 1%: a plateau's
  noise does not hold a raise); at the first evaluation, where no metric trend
  backs it, it needs a clear undershoot (``grad_alignment >= UNDERSHOOT_ALIGNMENT``), as a cut then
  needs a clear overshoot, and it needs it in the later half of the interval's steps too
  (``grad_alignment_late``, traced): the first steps descend from the initialization, which reads
  as too short at any LR, and a run that reaches a plateau within the interval reads the descent;
  and no raise is applied once the parameters have moved by their whole
  starting norm (``param_drift >= MOVED``) while the metric is not yet ``PROGRESS`` below its first
  evaluation's: steps that went that far are not too short, and the alignment of a run stuck there,
  or just leaving a plateau at a good LR, does not say which way the LR is wrong. Except at any LR
  below the user's when the LR of the steps is at most ``DISTANCE_SHORT`` times the distance estimate
  (``short_of_the_distance``, see the distance check below): the raise then goes through on the
  alignment's evidence as above, and only as far as the user's LR. Made to take back the distance
  check's cuts of a run that collapsed in its first steps, while it had no positive estimate;
- a creep (``creeping``: the metric improved at each of the last ``CREEP_EVALUATIONS`` (4)
  evaluations, by less than ``CREEP_GAIN`` (0.1%) in all, ``creep_gain``) stands in for the
  alignment's bar: a raise goes through while ``grad_alignment_t > 0``, under every hold above and
  the raise ceiling. Improvements in a row say which way the steps go where the per-interval
  alignment of a noisy regression at too low an LR stays under its bar;
- when the run has been in that stuck state at ``STUCK_EVALUATIONS`` (2) evaluations in a row after
  the first (``stuck_evaluations``, traced), a cut the policy asks for is applied while the LR is
  above the initial LR, by a raise of the controller's, and only as far as the initial LR: the raise
  went far and gained nothing. In a
  row, so that a run making steady progress at a good LR, read as stuck at one evaluation because
  its first evaluation came late, is not cut. Only above the initial LR, because being stuck does
  not say which way the LR is wrong: a transformer on its plateau at a good LR drifts as far as a
  collapsed one at ten times it, and a cut there traps it (but for the distance check's cut at its
  halved bar, ``STUCK_DISTANCE_OVERSHOOT``, which starts such a run over: below);
- a run that moved that far and is not yet ``PROGRESS`` below its first evaluation, whose metric
  got worse since the last decision by more than a loss's noise on a plateau (``RAISE_PUNISHED``,
  1%), loses ground with steps that go far: a cut the policy asks for is applied at once (after
  the first evaluation, at or above the initial LR, as above);
- otherwise a cut is applied when the metric got worse since the last decision *and* the gradient
  agrees: the steps overshoot (``grad_alignment_t <= -EVIDENCE_T``; before the run made any
  progress ``<= -PLATEAU_EVIDENCE_T``, since a cut by chance on a plateau at the initial loss traps
  the run, and a 5% test at every evaluation fires about once in 20), or, after the run made
  progress (the objective at least ``PROGRESS`` below the first evaluation's,
  ``objective_vs_first <= -PROGRESS``), the gradient no longer points along the previous steps
  (``grad_alignment <= 0``): the run is bouncing around a valley floor, which a smaller step settles
  into. While the metric improves, only a clear overshoot is cut (``grad_alignment <=
  -OVERSHOOT_ALIGNMENT`` with the same t bar): the alignment measures what the *next* step would
  gain, and with Adam it reads slightly negative at a good LR too (the short-horizon bias of any
  hypergradient), so on its own it would anneal a run that is doing well; under heavy-ball
  momentum (``heavy_ball``, SGD with momentum) it reads an overshoot across most LRs that train
  well, and no clear overshoot is read there (``clear_overshoot``). A worse metric on its
  own is not enough either: on a plateau at the initial loss it gets worse by noise every other
  evaluation, and cutting there traps the run (a non-finite metric still halves the LR, a fixed
  response).

Otherwise the LR is kept, and the decision records what the policy asked for and why it was not
applied (``Decision.gate``), or what let it through (``Decision.evidence``). More safeguards
come with the gate:

- a clear overshoot (``clear_overshoot``: the bars under which a cut goes through while the metric
  improves) cuts the LR by ``CLEAR_OVERSHOOT_CUT`` even when the policy asks to keep or raise it
  (a cut the policy asks for there goes through as asked); at the LR floor it does nothing;
- a raise that the next evaluation punishes (the metric got worse right after it, by more than
  ``RAISE_PUNISHED``) is taken back, whatever the policy asks; so is one that a later evaluation
  punishes (``unpaid_raise_undo``): while no cut has followed it, the metric got worse since the
  last decision and is worse than at the evaluation that made the raise (both by more than
  ``RAISE_PUNISHED``): the run lost all it gained since, and the raise did not pay;
- so is the controller's last raise no cut has followed (``opposed_raise_undo``; the takeback of a
  later raise by this rule passes over it, so a chain of raises walks back) once the gradient
  opposes the steps (``grad_alignment_t <= -EVIDENCE_T``, ``grad_alignment < 0``) with the LR of the
  steps at least ``OPPOSED_UNDO_DISTANCE`` times the distance estimate, whether or not the metric
  still improves, unless the raise sped the metric up (``raise_paid``): the raise read steps too
  short, and near the step Prodigy would take the gradient now says they are not. A pretrained
  GPT-2 fine-tuned at its good LR reads its first steps as too short (they all point one way), and
  before this rule its raise stood to the end of the run; far short of the estimate, an opposed
  reading is Adam's short-horizon bias on a rescue still under way, and the raise stands;
- so is a cut (``punished_cut_undo``), as far as the user's LR, once the run has made progress and
  while nothing reads an overshoot now (the gradient opposing the steps past the cut's bar, the
  iterate average, the distance check, a takeback to ``DISTANCE_OVERSHOOT`` times the estimate): a
  cut that answers an overshoot lowers the metric at once, and one the next evaluation punishes did
  not pay, whatever it read when it was made. On a
  regression at 10x its good LR the controller had cut on a plateau that a constant LR leaves,
  and cut again as the metric got worse right after;
- a *short plateau* (``short_plateau``): a run still at its first evaluation's level (the objective
  not ``STUCK`` below it) whose parameters have barely moved (``param_drift < SHORT_PLATEAU_DRIFT``)
  with the LR at most ``SHORT_PLATEAU_DISTANCE`` times the distance estimate (under a schedule that
  anneals by itself, the LR it decays from), at ``SHORT_PLATEAU_EVALUATIONS`` (3) evaluations in a
  row after the first (``short_plateau_evaluations``, traced), has its LR doubled by the gate
  (``short_plateau_raise``, ``RESTORE_RAISE``), and again at each evaluation while the state holds,
  whatever the policy asks, under the raise ceiling and ``max_lr``, unless the metric got worse
  beyond noise or the gate lets a cut through (an overshoot read by the alignment or the iterates); the takeback of a raise the next evaluation punishes
  applies to it. A transformer's plateau at a tenth of its good LR reads no alignment (its gradient
  drowns in batch noise), so the policy's raises there were held; short steps by the two measures
  that need no alignment, the drift and the distance estimate, say which way the LR is wrong;
- a *long plateau* (``long_plateau``), the short plateau's mirror: a run still at its first
  evaluation's level whose parameters have moved (``param_drift >= LONG_PLATEAU_DRIFT``) with the LR
  at least ``LONG_PLATEAU_DISTANCE`` times a positive distance estimate, at ``LONG_PLATEAU_EVALUATIONS``
  (4) evaluations in a row after the first (``long_plateau_evaluations``, traced), once the
  parameters have stopped moving away from their start (``drift_growth`` under
  ``LONG_PLATEAU_DRIFT_GROWTH``: the drift grew by less than a tenth of itself over the last
  ``DRIFT_GROWTH_INTERVALS`` intervals) and while a
  cut would start the run over (``start_weights_kept``), has its LR halved by the gate
  (``long_plateau_cut``), whatever the policy asks, as far as the distance floor; the controller
  starts the run over from its first weights at that cut (or at a deeper one), as at a wrecked run's,
  and the drift's growth is read again three decisions later. Post-LN transformers and sequence models at 10x their
  good LR sat at their first level to the end of the run, the policy's cuts held for want of an
  opposed gradient; runs whose weights still move leave such a plateau by themselves;
- the *iterate-average check* (``bouncing``): from the second evaluation on, when the average of
  the iterates since the last decision has a validation loss ``AVERAGE_GAIN`` (in log) below the
  current one's, and more than the interval gained, the steps bounce around a valley floor: a raise
  is held, a cut goes through, and a keep or a raise becomes the fixed halving (``_bounce_cut``);
  under a schedule that anneals by itself it only holds raises, and a cut there needs the gradient
  to oppose the steps;
- the *distance check* (``past_the_distance``): when the parameters have moved by their starting
  norm (``param_drift >= MOVED``) and the LR is ``DISTANCE_OVERSHOOT`` times or more the distance
  estimate (``STUCK_DISTANCE_OVERSHOOT`` times once the run has been stuck at its first
  evaluation's level ``STUCK_EVALUATIONS`` evaluations in a row and a cut would start it over:
  ``distance_bar``) of D-adaptation, which Prodigy takes as Adam's step (``lr_over_distance``, see
  ``distance``; read only for an optimizer whose step per coordinate is its LR times a normalised
  gradient, ``steps_per_coordinate``), the steps are too long by both measures: a cut the policy
  asks for goes through and a keep or a raise becomes the fixed halving, at any evaluation, and
  before the first one every ``EARLY_DISTANCE_EVERY`` steps, down to ``DISTANCE_FLOOR`` of the
  user's LR (``ANNEALED_DISTANCE_FLOOR`` under a schedule that anneals by itself). Either measure
  alone is ambiguous (a transformer on its plateau at a good LR drifts far; early on a plateau its
  gradients give no positive estimate). Once the estimate has grown past the LR
  (``short_of_the_distance``), raises below the user's LR are let through again (see above), and
  the gate takes the check's cuts back by itself (``distance_restore``; under a schedule that
  anneals by itself, reading the LR it decays from): a doubling at each evaluation, whatever the
  policy asks, as far as the check's cuts and the user's LR, while the metric does not get worse
  and nothing reads an overshoot; not right after another rule's cut or a divergence's halving,
  and not once a restore was taken back;
- the *raise ceiling* (``RAISE_CEILING``): a raise takes the LR of the steps as far as the
  distance estimate at most, the step Prodigy would take, and is held once the LR is there or past
  it (``at_the_distance_ceiling``). The alignment reads what the next steps would gain, which keeps
  pointing "too short" after a first raise's descent; the estimate is how far the run's own
  gradients say a solution lies. It bounds the controller's raises only: the user's LR, however far
  past the estimate, is never cut by it, and while the estimate is not positive (a plateau's first
  steps) or not read (after an early-divergence cut) it sets no ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GatedMove", "gate_move", "punished_raise_undo", "unpaid_raise_undo", "opposed_raise_undo",
           "punished_cut_undo", "direction_gate", "direction_verdict", "EVIDENCE_T", "PLATEAU_EVIDENCE_T",
           "OVERSHOOT_ALIGNMENT",
           "UNDERSHOOT_ALIGNMENT", "PROGRESS", "CLEAR_OVERSHOOT_CUT", "RAISE_PUNISHED", "MOVED", "STUCK",
           "STUCK_EVALUATIONS", "AVERAGE_GAIN", "SHORT_PLATEAU_DRIFT", "SHORT_PLATEAU_DISTANCE",
           "SHORT_PLATEAU_EVALUATIONS", "short_plateau", "short_plateau_raise", "LONG_PLATEAU_DRIFT",
           "LONG_PLATEAU_DISTANCE", "LONG_PLATEAU_EVALUATIONS", "LONG_PLATEAU_DRIFT_GROWTH", "DRIFT_GROWTH_INTERVALS",
           "long_plateau", "long_plateau_calls_for_a_cut", "long_plateau_cut",
           "clear_overshoot", "heavy_ball_swing", "bouncing", "moved_but_stuck",
           "made_progress", "wrecked",
           "unconfirmed_overshoot", "DISTANCE_OVERSHOOT", "STUCK_DISTANCE_OVERSHOOT", "distance_bar", "DISTANCE_SHORT",
           "DISTANCE_FLOOR",
           "ANNEALED_DISTANCE_FLOOR", "NO_DISTANCE", "EARLY_DISTANCE_EVERY", "EARLY_DISTANCE_CUT",
           "distance_floor", "RAISE_CEILING", "at_the_distance_ceiling", "raise_ceiling_multiplier",
           "lr_over_distance", "lr_over_distance_in_words", "past_the_distance", "short_of_the_distance",
           "distance_restore", "RESTORE_RAISE", "OPPOSED_UNDO_DISTANCE", "raise_paid", "CREEP_EVALUATIONS",
           "CREEP_GAIN", "creeping"]

EVIDENCE_T = 2.0  # |grad_alignment_t| that counts as evidence of the LR's direction (about a 5% two-sided test)
PLATEAU_EVIDENCE_T = 3.0  # the same before any progress (about a 0.3% test): a cut on a plateau at the initial loss
# can trap the run, and a decision every evaluation makes a 5% test fire about once in 20 by chance
OVERSHOOT_ALIGNMENT = 0.1  # -grad_alignment of a clear overshoot, which a cut may follow while the metric still
# improves: at a good LR Adam's steps read 0 to -0.06 (the short-horizon bias), an LR far too high often -0.1 to -0.4
UNDERSHOOT_ALIGNMENT = 0.1  # grad_alignment of a clear undershoot, which a raise at the first evaluation needs (no
# metric trend backs it yet): a run's first steps point the same way at almost any LR (a ResNet at 10x its good LR
# reads +0.02 to +0.1 there), an LR far too low reads +0.2 to +0.5
RAISE_PUNISHED = 0.01  # log(objective / previous objective) above which a metric counts as worse for a raise (held, or
# taken back after it) and for the lost-ground cut: the objective (loss, 1 - accuracy) up by more than 1%; on a plateau
# at the initial loss an eval_loss moves by a few parts in a thousand by noise (1 - accuracy on a plateau swings far
# more, by 0.1 in log)
MOVED = 1.0  # param_drift (|θ - θ_0| / |θ_0| on the sketch) at which the steps have gone a long way: the parameters
# moved by their whole starting norm. On runs stuck at an LR 10x too high (a ViT, a post-LN BERT at chance, a
# char-level GPT-2) it read 1.3 to 13 in the sweeps, on the plateaus at 0.1x 0.01 to 0.62 (with the policy's raises);
# see docs/controller.md
STUCK = 0.05  # log(first objective / objective) under which a run counts as stuck at its first evaluation's level
STUCK_EVALUATIONS = 2  # evaluations in a row after the first, stuck after moving far, before a cut asked for goes through:
# the fresh char-lm task at its good LR, evaluated once an epoch (47 steps), was 5.2-6.8% below its first evaluation
# at the second (drift 1.5-1.8), just out of the state, and 8.1-9.7% below at the third
AVERAGE_GAIN = 0.3  # iterate_average_gain (log of the current iterate's validation loss over the loss of the average of
# the iterates since the last decision) at which the steps may count as bouncing around a valley floor (the average
# 26% lower, the bar of PROGRESS), if it also beats what the interval gained (iterate_average_progress): then a cut
# goes through, and a keep or a raise becomes the fixed cut
CLEAR_OVERSHOOT_CUT = 0.5  # the fixed cut at a clear overshoot when the policy asks to keep or raise the LR
NO_DISTANCE = 1e6  # lr_over_distance when the estimate is not positive yet (the gradients have not pointed back
# toward the start): read as far past it
EARLY_DISTANCE_EVERY = 8  # steps between two readings of the distance check before the first decision (a host sync)
EARLY_DISTANCE_CUT = 0.5  # the multiplier of each of its cuts there
DISTANCE_FLOOR = 1 / 16  # the lowest scale the distance cut takes the LR to (as the early-divergence guard's cuts)
ANNEALED_DISTANCE_FLOOR = 1 / 4  # the same under a schedule that anneals by itself, which takes the LR the rest of the
# way: at 10x, cuts to 1/16 followed by the linear decay left a Llama LM 0.54 nats worse than the plain schedule
DISTANCE_OVERSHOOT = 8.0  # lr_over_distance (the LR of the steps over the distance estimate, see .distance) at which,
# with param_drift >= MOVED too, the steps are too long by both measures: a cut goes through, and a keep or a raise
# becomes the fixed cut (the bar of a run that is not stuck; a stuck run's: STUCK_DISTANCE_OVERSHOOT, distance_bar).
# Along constant-LR AdamW runs of 12 tasks x 3 seeds x 12 intervals (benchmarks/distance_ratio.py,
# benchmarks/results/distance_ratio.txt) none of the 864 readings at the good LR or at 0.1x was past: with drift >=
# MOVED the ratio read at most 3.85 (a wav2vec2 and a BERT masked LM at their good LR), and on transformer plateaus
# with drift under 0.25 up to infinity; at 10x 9 of the 12 tasks were past, with ratios from 14 to infinity
STUCK_DISTANCE_OVERSHOOT = DISTANCE_OVERSHOOT / 2  # the same bar for a run stuck at its first evaluation's level at
# STUCK_EVALUATIONS evaluations in a row after moving far (_stuck_for_a_cut) whose start weights are kept: being stuck
# is the second measure's evidence, worth a factor 2 of the first's, and the cut then starts the run over (wrecked).
# Stuck runs at the good LR read at most 1.92 on 26 families' constant and linear sweeps, but for a DeBERTa whose good
# LR of the grid is too high (0.1x trains better there), at 3.95-6.81; at 10x 1.6 to past 8. Without a start-over
# (under a warmup, before the start-over replayed it), a cut alone left a character-level GPT-2 at 10x worse in each
# of the 5 runs it changed (docs/controller.md)
DISTANCE_SHORT = 0.5  # lr_over_distance at or under which a raise below the user's LR is not held for a run that moved
# far without progress (short_of_the_distance): doubled (the default actions' largest raise), the LR is at most the
# estimate, the step Prodigy would take
RAISE_CEILING = 1.0  # lr_over_distance a raise takes the LR of the steps to at most: the estimate, the step Prodigy
# would take. A tiny T5 at its good LR read t = +5 at its first evaluation and +2.1 to +4.1 (mean cosine +0.01 to +0.02)
# at its second, with the LR 0.94-1.10 times the estimate: the second doubling ended it 16% above the constant LR; capped
# here, 70% below it. The raises of the rescues at 0.1x read 0.02-0.80 (a ViT's on its plateau 1.6-7.0, held now at a
# cost of one and two evaluations in two seeds; docs/controller.md, "The raise ceiling")
OPPOSED_UNDO_DISTANCE = 0.33  # lr_over_distance at or above which a raise in force is taken back once the gradient
# opposes the steps (opposed_raise_undo): within a factor of 3 of the distance estimate. A pretrained GPT-2 fine-tuned
# at its good LR, raised on its aligned first steps, read 0.48-1.0 when the gradient turned against the steps (a LoRA
# of it 0.47-0.66); the rescues at 0.1x read opposed gradients far short of it, a character-level GPT-2 at 0.13-0.22
# and a wav2vec2 at 0.04-0.05, where taking the raise back cost them their rescue (docs/controller.md)
RESTORE_RAISE = 2.0  # the multiplier with which the gate takes the distance check's cuts back by itself
# (distance_restore): the default actions' largest raise, undoing the check's halvings one by one
CREEP_EVALUATIONS = 4  # objective trends in a row, each an improvement, that make a creep (``creeping``): on a
# plateau's noise four improvements in a row come about once in 16
CREEP_GAIN = 0.001  # log objective gained over those trends under which the improvement is a creep: the steps go the
# right way and are far too short. A PatchTST regressor at 0.1x its good LR gained 0.0006-0.004% per evaluation over 19
# intervals; along the unseen families' and the held-out tasks' constant and linear runs at 1x and 10x (110 each) no
# metric improved four times in a row by under 0.1% with the alignment positive (benchmarks/results/creep_raise_screen.txt)
PROGRESS = 0.3  # log(first objective / objective) that counts as progress: 26% below the first evaluation, beyond
# the noise of a metric on a plateau (an accuracy flipping between 0.47 and 0.53 moves 1 - accuracy by 0.13)
SHORT_PLATEAU_DRIFT = 0.1  # param_drift under which the parameters of a run on a plateau have barely moved
SHORT_PLATEAU_DISTANCE = 0.5  # the LR over the distance estimate at or under which its steps are short of it
SHORT_PLATEAU_EVALUATIONS = 3  # evaluations in a row after the first in that state before the gate doubles the LR
# (short_plateau_raise): sentiment's BERT at 0.1x its good LR under a linear or cosine schedule sat there to its last
# evaluation (at chance), its alignment drowned in batch noise (benchmarks/results/short_plateau_count.txt)
LONG_PLATEAU_DRIFT = 0.3  # param_drift at or over which the steps of a run still at its first level have gone somewhere
LONG_PLATEAU_DISTANCE = 2.0  # the LR over a positive distance estimate at or over which its steps are far past it.
# 4 until the forty-eighth session: runs stuck at chance at 10x sat at 2.1-3.9 times it (a BART after its start-overs,
# 2.49-2.78), while at the good LR only the ALBERT and the DeBERTa, at chance there too, read the state at all; every
# other family never (benchmarks/results/long_plateau_bar.txt)
LONG_PLATEAU_EVALUATIONS = 4  # evaluations in a row after the first in that state at which the gate halves the LR
DRIFT_GROWTH_INTERVALS = 3  # the intervals over which drift_growth measures how much the parameters still move
LONG_PLATEAU_DRIFT_GROWTH = 0.1  # drift_growth under which they have stopped moving away. A run still drifting leaves such a
# plateau by itself (a Swin regressor at 10x, drift growing 17-33%), and a start-over throws that away
# (benchmarks/results/long_plateau_screen.txt)


def direction_verdict(multiplier: float, features: dict[str, float], *, first: bool = False,
                      schedule_anneals: bool = False) -> tuple[bool, str | None]:
    """Whether the gate holds ``multiplier`` given the evidence in ``features``, and why, in words:
    ``(True, why it is held)`` or ``(False, the evidence that lets it through)``; a keep is
    ``(False, None)``. ``first``: this is the run's first evaluation, with no earlier metric to
    compare with. ``schedule_anneals``: the user's schedule decays the LR by itself, so the two
    cuts that anneal (a bounce around a valley floor, the after-progress one) are not the
    controller's to make, and a cut that answers an overshoot waits for a second reading in a row
    (``unconfirmed_overshoot``)."""
    verdict = _verdict(multiplier, features, first=first, schedule_anneals=schedule_anneals)
    return verdict.held, verdict.why


@dataclass(frozen=True)
class Verdict:
    """``direction_verdict``'s answer, with the ``floor`` of a cut it lets through: how low the
    cut may take the controller's scale, and that floor in words (the stuck-run cut as far as the
    user's LR, since it takes back the controller's raises; the distance cut as far as
    ``distance_floor`` of it; None for the other cuts and for every other verdict)."""

    held: bool
    why: str | None
    floor: tuple[float, str] | None = None


def _verdict(multiplier: float, features: dict[str, float], *, first: bool, schedule_anneals: bool) -> Verdict:
    """``direction_verdict``, with the floor of the cut it lets through."""
    worse = features["objective_trend"] > 0
    t, ratio = features["grad_alignment_t"], features["grad_alignment"]
    if multiplier > 1 and _steps_too_long(features):  # at the cuts' floor too: the steps are still too long
        return Verdict(True, f"raise held: {_distance_reading(features)}")
    if multiplier > 1:
        if not first and bouncing(features):
            return Verdict(True, (f"raise held: the average of the iterates since the last decision has a validation loss "
                                  f"{_average_below(features):.0%} below the current one's, more than the interval gained: the "
                                  "steps bounce around a valley floor"))
        if _worse_beyond_noise(features):
            return Verdict(True, f"raise held: the metric got worse since the last decision (by more than {RAISE_PUNISHED:.0%})")
        if _moved_far_without_progress(features) and not short_of_the_distance(features):  # see _raise_past_the_hold
            return Verdict(True, (f"raise held: the parameters have moved by {features['param_drift']:.2f} of their starting norm "
                                  f"while the metric gained less than the progress bar ({1 - math.exp(-PROGRESS):.0%} below the first "
                                  "evaluation): the steps are not too short, and such a run's alignment does not tell which way "
                                  "the LR is wrong"))
        aligned = t >= EVIDENCE_T and ratio > 0  # the alignment's own evidence that the steps are too short
        creep = creeping(features) and t > 0
        if not aligned and not creep:
            if features.get("alignment_steps") == 0:
                return Verdict(True, f"raise held: no evidence that the LR is too low: {_NOTHING_MEASURED}")
            return Verdict(True, "raise held: no evidence that the LR is too low (gradient not aligned with the previous steps)")
        if first and ratio < UNDERSHOOT_ALIGNMENT:
            return Verdict(True, (f"raise held: at the first evaluation no metric trend backs the alignment, and a raise then needs "
                                  f"a clear one (alignment >= {UNDERSHOOT_ALIGNMENT:g}, here {ratio:+.2f})"))
        late = features.get("grad_alignment_late")
        if first and late is not None and late < UNDERSHOOT_ALIGNMENT:
            return Verdict(True, (f"raise held: at the first evaluation a raise needs a clear undershoot up to the interval's end, "
                                  f"and the later half of its steps reads {late:+.2f} (alignment >= {UNDERSHOOT_ALIGNMENT:g} needed): "
                                  "the first steps descend from the initialization, which reads as too short at any LR"))
        if at_the_distance_ceiling(features):
            return Verdict(True, (f"raise held: {lr_over_distance_in_words(features['lr_over_distance'])} (D-adaptation's "
                                  f"bound on the distance to a solution, which Prodigy takes as its step), and a raise goes "
                                  f"no further than {RAISE_CEILING:g} times it, though the gradient keeps pointing along the "
                                  f"previous steps (t={t:+.1f})"))
        if not aligned:  # a creep let it this far
            return Verdict(False, (f"raise: the metric improved at each of the last {CREEP_EVALUATIONS} evaluations, by "
                                   f"{math.expm1(features['creep_gain']):.3%} in all, and the gradient does not oppose the "
                                   f"previous steps (t={t:+.1f}): the steps go the right way and are far too short"))
        if _raise_past_the_hold(features):
            return Verdict(False, (f"raise: the gradient keeps pointing along the previous steps (t={t:+.1f}) and the LR is "
                                   f"{features['lr_over_distance']:.2g} times the distance estimate, below the user's LR: the "
                                   "steps are too short"))
        return Verdict(False, f"raise: the gradient keeps pointing along the previous steps (t={t:+.1f}), the steps are too short")
    if multiplier < 1:
        verdict = _cut_verdict(features, t, ratio, worse, first=first, schedule_anneals=schedule_anneals)
        held, why = verdict.held, verdict.why
        if held and schedule_anneals and not first and bouncing(features) and t > -_cut_evidence_t(features):
            # say which rule held it (a gradient that does oppose the steps was held for want of a second reading)
            why = (f"cut held: the average of the iterates since the last decision has a validation loss "
                   f"{_average_below(features):.0%} below the current one's (a bounce around a valley floor), but the "
                   f"schedule anneals by itself, so a cut needs the gradient to oppose the steps (t <= "
                   f"-{_cut_evidence_t(features):g}, here {t:+.1f})")
        if held and features.get("alignment_steps") == 0:  # the reasons that quote the gradient would be moot
            why = f"cut held: no evidence that the steps overshoot: {_NOTHING_MEASURED}"
        return Verdict(held, why, verdict.floor)
    return Verdict(False, None)


_NOTHING_MEASURED = ("no step of this evaluation interval was measured (the alignment leaves out a warmup's steps, and "
                     "steps without a finite, nonzero gradient and update)")


def _cut_verdict(features: dict[str, float], t: float, ratio: float, worse: bool, *, first: bool,
                 schedule_anneals: bool) -> Verdict:
    """``_verdict`` for a cut (see there)."""
    progress = made_progress(features)
    bar = _cut_evidence_t(features)
    opposed = t <= -bar
    waiting = unconfirmed_overshoot(features, first=first, schedule_anneals=schedule_anneals)
    wait = f"cut held: the gradient opposes the previous steps (t={t:+.1f}), but {_waits(features, waiting)}" if (
        waiting is not None) else None
    if past_the_distance(features, schedule_anneals=schedule_anneals):
        floor = distance_floor(schedule_anneals)
        return Verdict(False, f"cut: {_distance_reading(features)}", (floor, f"1/{1 / floor:g} of the user's LR"))
    if _bounce_cut(features, first=first, schedule_anneals=schedule_anneals):
        return Verdict(False, (f"cut: the average of the iterates since the last decision has a validation loss "
                               f"{_average_below(features):.0%} below the current one's, more than the interval gained: the "
                               "steps bounce around a valley floor"))
    if _overshoot_cut(features, waiting):
        return Verdict(False, (f"cut: the gradient clearly opposes the previous steps (alignment {ratio:+.2f}, t={t:+.1f}), "
                               "the steps overshoot"))
    if not first and _stuck_for_a_cut(features) and _above_initial_lr(features):
        return Verdict(False, f"cut: {_stuck_reading(features)}: the steps go far and gain nothing", (1.0, "the user's LR"))
    if not first and _lost_ground_after_moving_far(features):
        return Verdict(False, (f"cut: the metric got worse (by more than {RAISE_PUNISHED:.0%}) while the parameters have moved "
                               f"by {features['param_drift']:.2f} of their starting norm and the objective (the loss, or 1 - the "
                               f"score) is not yet {1 - math.exp(-PROGRESS):.0%} below its first evaluation's: the steps go far "
                               "and lose ground"))
    if not worse:
        if wait and clear_overshoot(features):
            return Verdict(True, wait)
        if heavy_ball_swing(features):
            return Verdict(True, (f"cut held: the gradient opposes the previous steps (alignment {ratio:+.2f}, t={t:+.1f}), "
                                  "but under heavy-ball momentum (SGD) it does at LRs that train well, as the steps swing "
                                  "across the sharpest directions: a cut needs the metric to get worse too"))
        if not first and _stuck_for_a_cut(features):  # not above the user's LR, nor cut by the stuck run's bar
            within, ratio = "", features.get("lr_over_distance")
            if ratio is not None and features.get("start_weights_kept"):
                floor = 1 / distance_floor(schedule_anneals)
                within = (f" and {lr_over_distance_in_words(ratio)}, under the stuck run's bar of "
                          f"{STUCK_DISTANCE_OVERSHOOT:g}" if ratio < STUCK_DISTANCE_OVERSHOOT else
                          f" and the distance check's cuts took it to their floor, 1/{floor:g} of the user's")
            return Verdict(True, (f"cut held: {_stuck_reading(features)}, but the LR is not above the user's{within}: a "
                                  "stuck run does not say which way the LR is wrong, and a cut on a plateau traps it"))
        return Verdict(True, ("cut held: the metric did not get worse (or this is the first evaluation), and the gradient does "
                              f"not clearly oppose the previous steps (a cut then needs alignment <= -{OVERSHOOT_ALIGNMENT:g} and "
                              f"t <= -{bar:g})"))
    if opposed:
        if wait:
            return Verdict(True, wait)
        return Verdict(False, (f"cut: the metric got worse and the gradient opposes the previous steps (t={t:+.1f}), the steps "
                               "overshoot"))
    if progress and ratio <= 0 and schedule_anneals:
        return Verdict(True, ("cut held: the metric got worse after progress and the gradient no longer points along the "
                              f"previous steps, but the schedule anneals by itself; a cut needs the gradient to oppose the "
                              f"steps (t <= -{bar:g}, here {t:+.1f})"))
    if progress and ratio <= 0:  # ratio 0 also when no step was measured: the worse metric decides
        return Verdict(False, ("cut: the metric got worse after progress and the gradient no longer points along the previous "
                               "steps, the run is bouncing on a valley floor"))
    if progress:
        return Verdict(True, "cut held: the metric got worse, but the gradient still points along the previous steps")
    return Verdict(True, (f"cut held: the metric got worse, but before the run has made progress (the objective, the loss or "
                          f"1 - the score, {1 - math.exp(-PROGRESS):.0%} below its first evaluation's) a cut needs the gradient "
                          f"to oppose the previous steps (t <= -{bar:g}, here {t:+.1f})"))


def _overshoot_cut(features: dict[str, float], waiting: float | None) -> bool:
    """Whether a clear overshoot cuts now, whatever the policy asks: ``clear_overshoot`` and no wait
    for a second reading (``waiting``: ``unconfirmed_overshoot``'s answer)."""
    return clear_overshoot(features) and waiting is None


def distance_floor(schedule_anneals: bool) -> float:
    """The lowest scale the distance cut takes the LR to: ``DISTANCE_FLOOR``, or
    ``ANNEALED_DISTANCE_FLOOR`` under a schedule that anneals by itself."""
    return ANNEALED_DISTANCE_FLOOR if schedule_anneals else DISTANCE_FLOOR


def past_the_distance(features: dict[str, float], *, schedule_anneals: bool = False) -> bool:
    """Whether the steps are too long by two measures at once: the parameters have moved by at least
    ``MOVED`` of their starting norm, and the LR of the steps is ``distance_bar`` times the distance
    estimate or more (``DISTANCE_OVERSHOOT``; ``STUCK_DISTANCE_OVERSHOOT`` for a stuck run that a cut
    would start over) (``lr_over_distance``, see ``.distance``; absent, as for an optimizer whose
    step is not the LR per coordinate: no). Either alone does not say it: a transformer on
    its plateau at a good LR drifts far, and its gradients give no positive estimate yet. A cut
    goes through at any evaluation, the first included, and a keep or a raise becomes the fixed cut;
    each cut lowers the ratio, so the rule stops once the LR is within ``distance_bar`` of it,
    and at ``distance_floor`` of the user's LR at the lowest (an estimate that is not positive yet
    sets no floor of its own: the ratio is then ``NO_DISTANCE`` at every reading, and the check reads
    the drift alone down to that floor). A raise is held on both measures at the floor too."""
    return (_steps_too_long(features)
            and features.get("log10_lr_scale", 0.0) > math.log10(distance_floor(schedule_anneals)) + 1e-6)


def _steps_too_long(features: dict[str, float]) -> bool:
    """Both of ``past_the_distance``'s measures, whatever the LR's floor: a raise is held on them."""
    return (features.get("param_drift", 0.0) >= MOVED
            and features.get("lr_over_distance", 0.0) >= distance_bar(features))


def distance_bar(features: dict[str, float]) -> float:
    """The ``lr_over_distance`` at which the steps are too long, with the parameters moved far:
    ``DISTANCE_OVERSHOOT``, or ``STUCK_DISTANCE_OVERSHOOT`` for a run stuck at its first evaluation's
    level at ``STUCK_EVALUATIONS`` evaluations in a row (``_stuck_for_a_cut``) that a cut would start
    over (``start_weights_kept``, the controller's feature)."""
    return STUCK_DISTANCE_OVERSHOOT if _stuck_with_its_start_kept(features) else DISTANCE_OVERSHOOT


def _stuck_with_its_start_kept(features: dict[str, float]) -> bool:
    return _stuck_for_a_cut(features) and bool(features.get("start_weights_kept"))


def wrecked(features: dict[str, float]) -> bool:
    """Whether the steps so far wrecked the run: too long by both of ``past_the_distance``'s measures
    (whatever the LR's floor), while the metric is not even ``STUCK`` below the first evaluation's
    (``moved_but_stuck``). A cut made then starts the run over from its first weights (the
    controller's ``_start_over_if_called_for``): the steps bought nothing, and the weights they left
    train badly at any LR after them."""
    return _steps_too_long(features) and moved_but_stuck(features)


def short_of_the_distance(features: dict[str, float]) -> bool:
    """Whether the controller's LR is below the user's and the LR of the steps (with a schedule's
    factor, as ``lr_over_distance`` reads it; absent: no) is at most ``DISTANCE_SHORT`` times the
    distance estimate: a raise is then not held for a run that moved far without progress
    (``_raise_past_the_hold``), and goes as far as the user's LR at most. Whatever cut the LR below
    the user's; made for the distance check's cuts of a run that collapsed within its first steps,
    made while it had no positive estimate: once its gradients point back, the estimate grows past
    the LR."""
    return (features.get("lr_over_distance", math.inf) <= DISTANCE_SHORT
            and features.get("log10_lr_scale", 0.0) < -1e-6)


def _raise_past_the_hold(features: dict[str, float]) -> bool:
    """Whether a raise let through now went past the hold of a run that moved far without progress
    (``_moved_far_without_progress``), as only ``short_of_the_distance`` lets one: it goes as far as
    the user's LR at most."""
    return _moved_far_without_progress(features) and short_of_the_distance(features)


def distance_restore(features: dict[str, float], *, scale: float, distance_debt: float, first: bool,
                     last_applied: float = 1.0, last_rule: str | None = None,
                     restore_punished: bool = False, max_scale: float = math.inf) -> float | None:
    """The raise with which the gate takes the distance check's cuts back by itself, whatever the
    policy asks: ``RESTORE_RAISE``, as far as the check's cuts (``distance_debt``: the product of its
    cuts and of every raise since its first, below 1 while some are not taken back), the user's LR
    (``scale``) and ``max_scale`` (``max_lr``) at most, while the LR is below the user's and at most ``DISTANCE_SHORT`` times the
    distance estimate (``short_of_the_distance``; a doubling then stays within the raise ceiling; under
    a schedule that anneals by itself, the LR the schedule decays from, ``planned_lr_over_distance``:
    the decay is the schedule's plan, not a sign that the check's cuts were outgrown),
    the metric did not get worse (by more than ``RAISE_PUNISHED``) and nothing reads an overshoot (the
    gradient opposing the steps past the cut's bar, the iterates' bounce; an interval with no measured
    step reads nothing). In ``gate_move`` a cut the gate lets through at that evaluation stays, and a
    raise of the policy's that goes as far or further counts as the restore. None right after another
    rule's cut (``last_applied`` < 1 and ``last_rule`` not "distance", or ``last_rule`` "divergence":
    that cut is not undone by it), once a restore was taken back (``restore_punished``: the run punished
    one), and at the first evaluation. The check cut on a drift and
    an estimate that the run's own gradients have since outgrown; at a tenth of the LR or less a run
    that collapsed in its first steps crawls, and its alignment reads the short-horizon bias (slightly
    negative) rather than the missing step."""
    if (first or restore_punished or last_rule == "divergence"
            or (last_applied < 1.0 and last_rule != "distance") or distance_debt >= 1.0 - 1e-9
            or scale >= 1.0 or not short_of_the_distance(_as_planned(features))):
        return None
    if (_worse_beyond_noise(features) or features["grad_alignment_t"] <= -_cut_evidence_t(features)
            or bouncing(features) or features.get("alignment_steps") == 0):  # nothing measured: no reading at all
        return None
    restore = min(RESTORE_RAISE, 1.0 / distance_debt, 1.0 / scale, max_scale / scale)
    return restore if restore > 1.0 + 1e-9 else None


def _as_planned(features: dict[str, float]) -> dict[str, float]:
    """``features`` with ``lr_over_distance`` read at the LR a schedule that anneals by itself decays
    from (``planned_lr_over_distance``, present only under one), for the restore's reading."""
    planned = features.get("planned_lr_over_distance")
    return features if planned is None else {**features, "lr_over_distance": planned}


def raise_ceiling_multiplier(features: dict[str, float]) -> float | None:
    """The largest raise that keeps the LR of the steps at most ``RAISE_CEILING`` times the distance
    estimate; None when there is no ceiling: no positive estimate yet (``NO_DISTANCE``), or no
    reading at all (an optimizer whose step is not the LR per coordinate)."""
    ratio = _positive_distance_ratio(features)
    return None if ratio is None else RAISE_CEILING / ratio


def _positive_distance_ratio(features: dict[str, float]) -> float | None:
    """``lr_over_distance`` when it was read and the estimate is positive; None otherwise (no reading, or
    ``NO_DISTANCE``)."""
    ratio = features.get("lr_over_distance")
    return ratio if ratio is not None and 0 < ratio < NO_DISTANCE else None


def at_the_distance_ceiling(features: dict[str, float]) -> bool:
    """Whether the LR of the steps is at ``RAISE_CEILING`` times the distance estimate or past it: a
    raise is held (``raise_ceiling_multiplier`` at most 1)."""
    ceiling = raise_ceiling_multiplier(features)
    return ceiling is not None and ceiling <= 1.0


def lr_over_distance(lr: float, estimate: float) -> float:
    """The LR over the distance estimate (``.distance``), ``NO_DISTANCE`` at most and while the
    estimate is not positive."""
    return min(lr / estimate, NO_DISTANCE) if estimate > 0 else NO_DISTANCE


def lr_over_distance_in_words(ratio: float) -> str:
    """An ``lr_over_distance`` reading in words, for the gate's evidence and the callback's log:
    ``NO_DISTANCE`` says there is no positive estimate yet, rather than a ratio of 10^6."""
    if ratio >= NO_DISTANCE:
        return "there is no positive distance estimate yet"
    return f"the LR is {ratio:.3g} times the distance estimate"


def _restore_reading(features: dict[str, float]) -> str:
    """The ratio ``distance_restore`` read, in words: under a schedule that anneals by itself, that of
    the LR it decays from."""
    if "planned_lr_over_distance" in features:
        return (f"the LR the schedule decays from is {features['planned_lr_over_distance']:.3g} times the distance "
                "estimate")
    return lr_over_distance_in_words(features["lr_over_distance"])


def _distance_reading(features: dict[str, float]) -> str:
    """``past_the_distance`` in words, for the cut it lets through and the raise it holds."""
    return (f"the steps are too long by two measures: the parameters have moved by {features['param_drift']:.2f} of "
            f"their starting norm, and {lr_over_distance_in_words(features['lr_over_distance'])} (D-adaptation's "
            f"bound on the distance to a solution, which Prodigy takes as its step; {_bar_in_words(features)})")


def _bar_in_words(features: dict[str, float]) -> str:
    if _stuck_with_its_start_kept(features):
        return (f"{STUCK_DISTANCE_OVERSHOOT:g} or more is too far for a run stuck at its first evaluation's level "
                f"({features['stuck_evaluations']:.0f} evaluations in a row) that can start over")
    return f"{DISTANCE_OVERSHOOT:g} or more is too far"


def _bounce_cut(features: dict[str, float], *, first: bool, schedule_anneals: bool) -> bool:
    """Whether the iterate-average check cuts now, whatever the policy asks: the steps bounce
    (``bouncing``), after the first evaluation, under a schedule that does not anneal by itself."""
    return not first and bouncing(features) and not schedule_anneals


def made_progress(features: dict[str, float]) -> bool:
    """Whether the objective is at least ``PROGRESS`` below the first evaluation's (absent: no progress)."""
    return features.get("objective_vs_first", 0.0) <= -PROGRESS


def moved_but_stuck(features: dict[str, float]) -> bool:
    """Whether the parameters have moved by at least ``MOVED`` of their starting norm while the objective is
    not even ``STUCK`` below the first evaluation's: after ``STUCK_EVALUATIONS`` such evaluations in a row,
    a cut asked for goes through (absent drift: no). Raises are held in a wider state,
    ``_moved_far_without_progress``."""
    return (features.get("param_drift", 0.0) >= MOVED
            and features.get("objective_vs_first", 0.0) > -STUCK)


def _stuck_reading(features: dict[str, float]) -> str:
    """The stuck state in words, for the stuck-run cut's evidence and for the reason it is held."""
    return (f"the parameters have moved by {features['param_drift']:.2f} of their starting norm while the metric "
            f"stayed at its first evaluation's level ({features['stuck_evaluations']:.0f} evaluations in a row)")


def creeping(features: dict[str, float]) -> bool:
    """Whether the metric improved at each of the last ``CREEP_EVALUATIONS`` evaluations by less than
    ``CREEP_GAIN`` in all (``creep_gain``, traced): a steady improvement too small to matter, which a
    raise asked for follows while the gradient does not oppose the previous steps (``t > 0``), under
    the same holds as any raise (the distance ceiling, a run that moved far without progress). The
    per-interval alignment of a noisy regression at too low an LR stays under its bar, while the
    improvements in a row say which way the steps go."""
    gain = features.get("creep_gain")
    return gain is not None and gain < CREEP_GAIN


def _stuck_for_a_cut(features: dict[str, float]) -> bool:
    """Whether the run has been stuck (``moved_but_stuck``) at ``STUCK_EVALUATIONS`` evaluations in a row: a
    cut asked for goes through while the LR is above the user's (``_above_initial_lr``)."""
    return moved_but_stuck(features) and features.get("stuck_evaluations", 0) >= STUCK_EVALUATIONS


def _moved_far_without_progress(features: dict[str, float]) -> bool:
    """Whether the parameters have moved by at least ``MOVED`` of their starting norm while the objective is
    not yet ``PROGRESS`` below the first evaluation's: a raise is held (a stuck run, ``moved_but_stuck``,
    is one such; so is a run just leaving a plateau at a good LR, whose steps went far before it moved)."""
    return features.get("param_drift", 0.0) >= MOVED and not made_progress(features)


def _lost_ground_after_moving_far(features: dict[str, float]) -> bool:
    """Whether the metric got worse since the last decision, by more than a loss's noise on a plateau
    (``RAISE_PUNISHED``), while the run has moved far without progress (``_moved_far_without_progress``),
    at or above the initial LR: a cut asked for goes through at once, without the stuck state's
    evaluations in a row. A run at a good LR whose steps went far early (a language model, whose loss
    falls a few percent per evaluation) keeps getting better; at too high an LR the metric swings back
    up. A collapsed run's noise on its plateau is left to the stuck-run cut."""
    return _worse_beyond_noise(features) and _moved_far_without_progress(features) and _at_or_above_initial_lr(features)


def _at_or_above_initial_lr(features: dict[str, float]) -> bool:
    """Whether the LR is at or above the initial LR: the lost-ground cut is made only there, since the
    drift, cumulative, says nothing about the LR after a cut below it (so it never takes the LR more
    than one cut below the user's)."""
    return features.get("log10_lr_scale", 0.0) > -1e-6


def _above_initial_lr(features: dict[str, float]) -> bool:
    """Whether the LR is above the initial LR, by a raise of the controller's own: the stuck-run cut is
    made only there. Being stuck says nothing of the direction: a post-LN transformer on its plateau
    at a good LR drifts as far as a collapsed one at ten times it, so the rule takes back the
    controller's raises and never cuts below the LR the user chose."""
    return features.get("log10_lr_scale", 0.0) > 1e-6


def _worse_beyond_noise(features: dict[str, float]) -> bool:
    """Whether the metric got worse by more than ``RAISE_PUNISHED``: a raise is held, or taken back after it,
    and a run that went far without progress has lost ground."""
    return features["objective_trend"] > RAISE_PUNISHED


def _cut_evidence_t(features: dict[str, float]) -> float:
    """The |grad_alignment_t| a cut needs: ``EVIDENCE_T`` after progress, ``PLATEAU_EVIDENCE_T`` before."""
    return EVIDENCE_T if made_progress(features) else PLATEAU_EVIDENCE_T


def unconfirmed_overshoot(features: dict[str, float], *, first: bool, schedule_anneals: bool) -> float | None:
    """Under a schedule that anneals by itself, an overshoot cut (``clear_overshoot``, or the metric
    worse with the gradient opposing the steps) waits for a second reading in a row: the schedule
    lowers the LR anyway until the next evaluation, while a cut lasts the rest of the run (at a
    good LR a bounce can read as an overshoot once). Returns the previous evaluation's
    ``grad_alignment_t`` when it did not read one too (above minus the cut's bar), None when the
    cut need not wait: a constant schedule, the first evaluation, or no previous reading (a
    divergence before, or an interval whose alignment counted fewer than 2 steps, a warmup's)."""
    previous = features.get("previous_grad_alignment_t")
    if not schedule_anneals or first or previous is None or previous <= -_cut_evidence_t(features):
        return None
    return previous


def _waits(features: dict[str, float], previous_t: float) -> str:
    """Why an overshoot cut waits (``unconfirmed_overshoot``), in words."""
    return (f"the schedule anneals by itself, so a cut waits for a second reading in a row (the previous evaluation "
            f"read t={previous_t:+.1f}, a cut needs t <= -{_cut_evidence_t(features):g} at both)")


def clear_overshoot(features: dict[str, float]) -> bool:
    """Whether the gradient clearly opposes the previous steps: ``grad_alignment <= -OVERSHOOT_ALIGNMENT``
    with ``grad_alignment_t`` at or below minus the cut's bar (``_cut_evidence_t``). Never under heavy-ball
    momentum (``heavy_ball``: SGD with momentum): in a direction of curvature λ the gradient opposes the
    previous step on average once ``lr * λ > 1 - momentum``, far below the stability edge
    ``2 * (1 + momentum)``, so it does at LRs that train well, and only a worse metric with it says
    that the steps overshoot."""
    return not features.get("heavy_ball") and _opposed_past_the_overshoot_bar(features)


def heavy_ball_swing(features: dict[str, float]) -> bool:
    """Whether the gradient opposes the previous steps past ``clear_overshoot``'s bars under heavy-ball
    momentum, where that reading is the swing of the steps, not an overshoot (no cut on it alone)."""
    return bool(features.get("heavy_ball")) and _opposed_past_the_overshoot_bar(features)


def _opposed_past_the_overshoot_bar(features: dict[str, float]) -> bool:
    return (features["grad_alignment"] <= -OVERSHOOT_ALIGNMENT
            and features["grad_alignment_t"] <= -_cut_evidence_t(features))


def bouncing(features: dict[str, float]) -> bool:
    """Whether the average of the iterates since the last decision beats the current iterate by
    ``AVERAGE_GAIN`` or more in log validation loss, and by more than the interval gained
    (``iterate_average_progress``, on the same batches): the bounce of the steps costs more than
    they make (absent: no)."""
    gain, progress = features.get("iterate_average_gain"), features.get("iterate_average_progress")
    return gain is not None and progress is not None and gain >= AVERAGE_GAIN and gain > progress


def _average_below(features: dict[str, float]) -> float:
    return 1.0 - math.exp(-features.get("iterate_average_gain", 0.0))


def direction_gate(multiplier: float, features: dict[str, float], *, first: bool = False,
                   schedule_anneals: bool = False) -> str | None:
    """Why ``multiplier`` must not be applied given the evidence in ``features``; None: apply it."""
    held, why = direction_verdict(multiplier, features, first=first, schedule_anneals=schedule_anneals)
    return why if held else None


@dataclass(frozen=True)
class GatedMove:
    """What the gate makes of the policy's move: the ``multiplier`` for the controller's scale (before
    ``min_lr`` / ``max_lr``), whether the move was ``held`` (the LR stays), and ``why``: the reason it
    was held, or the evidence that let it through or replaced it (None for a keep nothing changed)."""

    multiplier: float
    held: bool
    why: str | None
    rule: str | None = None  # which safeguard made the move, where a later decision asks: "distance" (the distance
    # check's cut), "restore" (distance_restore), "short_plateau" (short_plateau_raise), "long_plateau"
    # (long_plateau_cut), "undo_raise" (punished_raise_undo), "unpaid_undo"
    # (unpaid_raise_undo), "opposed_undo" (opposed_raise_undo), "undo_cut" (punished_cut_undo); None for the others


def gate_move(requested: float, features: dict[str, float], *, first: bool, schedule_anneals: bool,
              scale: float, min_scale: float, last_applied: float, standing_raise: float = 1.0,
              distance_debt: float = 1.0, restore_punished: bool = False, last_rule: str | None = None,
              max_scale: float = math.inf, raise_in_force: float = 1.0) -> GatedMove:
    """The policy's ``requested`` multiplier through the gate and its safeguards, in order:
    ``direction_verdict``; the fixed cut (``CLEAR_OVERSHOOT_CUT``) of a clear overshoot, of the
    distance check or of a bounce, in place of a keep or a raise while ``scale`` is above
    ``min_scale``; the floors of the stuck-run and distance cuts (``Verdict.floor``); the user's LR as
    the cap of a raise past the hold (``_raise_past_the_hold``); the raise ceiling at the distance estimate
    (``raise_ceiling_multiplier``); the takeback of the distance check's cuts by the gate itself
    (``distance_restore``: ``distance_debt``, ``restore_punished``, ``last_applied``, ``last_rule``); the
    doubling on a short plateau (``short_plateau_raise``), in place of a keep, a held move or a smaller
    raise (not of a cut the gate lets through, nor at ``max_scale``); the halving on a long plateau
    (``long_plateau_cut``), in place of a milder cut, a keep or a raise (a raise's takeback after it that
    cuts deeper replaces it); the
    undo of the last decision's raise (``last_applied`` > 1, the multiplier it applied) when the metric got
    worse right after it; the undo of an earlier raise no cut has followed (``standing_raise`` > 1, the
    multiplier it applied) when the run has lost all it gained since (``unpaid_raise_undo``); the undo of
    the controller's last raise, no cut has followed (``raise_in_force`` > 1, the multiplier it applied), when
    the gradient now opposes the steps (``opposed_raise_undo``); and the undo
    of the last decision's cut (``last_applied`` < 1) when the metric got worse right after it and nothing
    reads an overshoot now (``punished_cut_undo``; not of an unpaid raise's undo, ``last_rule``
    "unpaid_undo").
    ``first``: the run's first evaluation. ``scale``: the controller's scale before this move;
    ``max_scale``: its bound (``max_lr``), past which the restore does not try. The move's ``rule`` names
    the safeguard that made it, for the next decisions to read."""
    verdict = _verdict(requested, features, first=first, schedule_anneals=schedule_anneals)
    held, why, floor = verdict.held, verdict.why, verdict.floor
    multiplier = 1.0 if held else requested
    waiting = unconfirmed_overshoot(features, first=first, schedule_anneals=schedule_anneals)
    fixed_cut = (_overshoot_cut(features, waiting) or past_the_distance(features, schedule_anneals=schedule_anneals)
                 or _bounce_cut(features, first=first, schedule_anneals=schedule_anneals))
    if multiplier >= 1 and fixed_cut and scale > min_scale:
        cut = _verdict(CLEAR_OVERSHOOT_CUT, features, first=first, schedule_anneals=schedule_anneals)  # its own words
        multiplier, held, floor, why = CLEAR_OVERSHOOT_CUT, False, cut.floor, (
            f"{cut.why}; a fixed cut (x{CLEAR_OVERSHOOT_CUT:g}), the policy asked for x{requested:g}")
    elif multiplier >= 1 and why is None and heavy_ball_swing(features):
        why = (f"no fixed cut: the gradient opposes the previous steps (t={features['grad_alignment_t']:+.1f}), but under "
               "heavy-ball momentum (SGD) it does at LRs that train well: a cut needs the metric to get worse too")
    elif multiplier >= 1 and why is None and clear_overshoot(features) and waiting is not None:
        why = (f"no fixed cut: the gradient clearly opposes the previous steps (t={features['grad_alignment_t']:+.1f}), "
               f"but {_waits(features, waiting)}")
    elif multiplier >= 1 and schedule_anneals and not first and bouncing(features) and why is None:
        # the fixed halving the rule left out: say so
        why = (f"no fixed cut: the average of the iterates has a validation loss {_average_below(features):.0%} "
               "below the current one's (a bounce around a valley floor), but the schedule anneals by itself")
    if not held and multiplier < 1 and floor is not None and multiplier * scale < floor[0]:
        multiplier = min(1.0, floor[0] / scale)
        why = f"{why}; as far as {floor[1]} (x{multiplier:.3g}, the policy asked for x{requested:g})"
    rule = "distance" if multiplier < 1 and past_the_distance(features, schedule_anneals=schedule_anneals) else None
    if not held and multiplier > 1 and _raise_past_the_hold(features) and multiplier * scale > 1.0:
        multiplier = max(1.0, 1.0 / scale)
        why = f"{why}; as far as the user's LR (x{multiplier:.3g}, the policy asked for x{requested:g})"
    ceiling = raise_ceiling_multiplier(features)
    if not held and multiplier > 1 and ceiling is not None and multiplier > ceiling:
        multiplier = ceiling
        why = (f"{why}; as far as the distance estimate ({RAISE_CEILING:g} times it, x{multiplier:.3g}, the policy asked "
               f"for x{requested:g})")
    restore = distance_restore(features, scale=scale, distance_debt=distance_debt, first=first,
                               last_applied=last_applied, last_rule=last_rule,
                               restore_punished=restore_punished, max_scale=max_scale)
    if restore is not None and multiplier >= restore:  # the policy's own raise takes back as much
        rule = "restore"
    elif restore is not None and multiplier >= 1.0:  # a cut the gate let through stays
        multiplier, held, rule, why = restore, False, "restore", (
            f"restore: the distance check cut the LR, and the estimate has since grown past it "
            f"({_restore_reading(features)}), the metric did not get worse and nothing "
            f"reads an overshoot (t={features['grad_alignment_t']:+.1f}): the cut is taken back (x{restore:.3g}, "
            f"toward the user's LR), the policy asked for x{requested:g}")
    plateau = short_plateau_raise(features, first=first, schedule_anneals=schedule_anneals)
    # not against a cut the gate let through (the evidence reads an overshoot), nor past max_lr
    if plateau is not None and multiplier < plateau and (held or multiplier >= 1) and scale < max_scale:
        ratio = _short_plateau_ratio(features, schedule_anneals=schedule_anneals)
        multiplier, held, rule, why = plateau, False, "short_plateau", (
            f"short plateau: still at the first evaluation's level at {features['short_plateau_evaluations']:.0f} "
            f"evaluations in a row, the parameters {features['param_drift']:.2g} of their starting norm from it and the "
            f"LR {ratio:.2g} times the distance estimate: raised (x{plateau:.3g}), the policy asked for x{requested:g}")
    long_cut = long_plateau_cut(features, first=first, scale=scale, schedule_anneals=schedule_anneals)
    if long_cut is not None and multiplier > long_cut:
        multiplier, held, rule, why = long_cut, False, "long_plateau", (
            f"long plateau: still at the first evaluation's level at {features['long_plateau_evaluations']:.0f} "
            f"evaluations in a row, the parameters {features['param_drift']:.2g} of their starting norm from it and no "
            f"longer moving away (the drift changed by {features['drift_growth']:+.0%} over {DRIFT_GROWTH_INTERVALS} "
            f"intervals), the "
            f"LR {features['lr_over_distance']:.2g} times the distance estimate: cut (x{long_cut:.3g}), the policy asked "
            f"for x{requested:g}")
    raise_takebacks = (  # in order; a later one that takes the LR lower wins
        ("undo_raise", punished_raise_undo(features, last_applied), lambda undo: (
            f"undo: the metric got worse right after the last raise (by more than {RAISE_PUNISHED:.0%}), which is "
            f"taken back (x{undo:.3g})")),
        ("unpaid_undo", unpaid_raise_undo(features, standing_raise), lambda undo: (
            f"undo: the metric is {math.expm1(features['objective_since_raise']):.1%} worse than at the evaluation that "
            f"made the last raise (x{standing_raise:.3g}), and got worse since the last decision (both by more than "
            f"{RAISE_PUNISHED:.0%}): the run lost all it gained since, the raise did not pay and is taken back "
            f"(x{undo:.3g}), the policy asked for x{requested:g}")),
        ("opposed_undo", opposed_raise_undo(features, raise_in_force), lambda undo: (
            f"undo: the gradient now opposes the previous steps (alignment {features['grad_alignment']:+.2f}, "
            f"t={features['grad_alignment_t']:+.1f}) after the last raise (x{raise_in_force:.3g}), and "
            f"{lr_over_distance_in_words(features['lr_over_distance'])}: the steps are no longer too short, the raise is "
            f"taken back (x{undo:.3g}), the policy asked for x{requested:g}")))
    for takeback_rule, undo, words in raise_takebacks:
        if undo is not None and multiplier > undo:
            multiplier, held, rule, why = undo, False, takeback_rule, words(undo)
    undo = None if last_rule == "unpaid_undo" else punished_cut_undo(features, last_applied, scale=scale)
    if undo is not None and multiplier < undo:
        as_far = ", as far as the user's LR" if undo < 1.0 / last_applied else ""
        multiplier, held, rule, why = undo, False, "undo_cut", (
            f"undo: the metric got worse right after the last cut (by more than {RAISE_PUNISHED:.0%}), and nothing "
            f"reads an overshoot now (t={features['grad_alignment_t']:+.1f}): the cut is taken back (x{undo:.3g}"
            f"{as_far}), the policy asked for x{requested:g}")
    return GatedMove(multiplier, held, why, rule)


def _short_plateau_ratio(features: dict[str, float], *, schedule_anneals: bool) -> float | None:
    """The LR over the distance estimate that ``short_plateau`` reads: under a schedule that anneals by itself
    the restore's reading (``_as_planned``: the LR the schedule decays from, where read); else ``lr_over_distance``."""
    return (_as_planned(features) if schedule_anneals else features).get("lr_over_distance")


def short_plateau(features: dict[str, float], *, schedule_anneals: bool) -> bool:
    """Whether one decision reads a short plateau: the objective not ``STUCK`` below the first evaluation's,
    the parameters barely moved (``param_drift < SHORT_PLATEAU_DRIFT``) and the LR at most
    ``SHORT_PLATEAU_DISTANCE`` times the distance estimate (``_short_plateau_ratio``). False with no
    reading of the drift or the estimate, or no positive estimate (``NO_DISTANCE``)."""
    ratio = _short_plateau_ratio(features, schedule_anneals=schedule_anneals)
    return (ratio is not None and ratio <= SHORT_PLATEAU_DISTANCE
            and features.get("param_drift", math.inf) < SHORT_PLATEAU_DRIFT and features["objective_vs_first"] > -STUCK)


def short_plateau_raise(features: dict[str, float], *, first: bool, schedule_anneals: bool = False) -> float | None:
    """The gate's raise on a short plateau: ``RESTORE_RAISE``, or less to stay under the raise ceiling
    (``raise_ceiling_multiplier``), once the run has read ``short_plateau`` at ``SHORT_PLATEAU_EVALUATIONS``
    evaluations in a row after the first (``short_plateau_evaluations``), this one included, and the metric
    did not get worse beyond noise since the last decision; None otherwise, and when the ceiling leaves no
    room to raise."""
    if (first or features.get("short_plateau_evaluations", 0) < SHORT_PLATEAU_EVALUATIONS or _worse_beyond_noise(features)
            or not short_plateau(features, schedule_anneals=schedule_anneals)):
        return None
    ceiling = raise_ceiling_multiplier(features)
    raise_to = RESTORE_RAISE if ceiling is None else min(RESTORE_RAISE, ceiling)
    return raise_to if raise_to > 1 else None


def long_plateau(features: dict[str, float]) -> bool:
    """Whether one decision reads a long plateau, the mirror of ``short_plateau``: the objective not
    ``STUCK`` below the first evaluation's, the parameters moved (``param_drift >= LONG_PLATEAU_DRIFT``)
    and the LR of the steps at least ``LONG_PLATEAU_DISTANCE`` times a positive distance estimate
    (``lr_over_distance``, under any schedule). False with no reading of the drift or the estimate, or no
    positive estimate (``NO_DISTANCE``)."""
    ratio = _positive_distance_ratio(features)
    return (ratio is not None and ratio >= LONG_PLATEAU_DISTANCE
            and features.get("param_drift", 0.0) >= LONG_PLATEAU_DRIFT and features["objective_vs_first"] > -STUCK)


def long_plateau_calls_for_a_cut(features: dict[str, float]) -> bool:
    """Whether a cut is called for on a long plateau: the run has read ``long_plateau`` at
    ``LONG_PLATEAU_EVALUATIONS`` evaluations in a row after the first (``long_plateau_evaluations``), this
    one included, the parameters have stopped moving away from their start (``drift_growth`` under
    ``LONG_PLATEAU_DRIFT_GROWTH``; a fall counts, as a plateau's bounce; absent: they have not), and a
    cut would start the run over (``start_weights_kept``, the controller's feature: an Adam-type
    optimizer, no progress yet; under a warmup the start-over plays the warmup again). The halving
    alone, the weights kept, cost more runs than it helped. A cut at such a decision, whoever made it,
    starts the run over (the controller's ``_start_over_if_called_for``)."""
    return (features.get("long_plateau_evaluations", 0) >= LONG_PLATEAU_EVALUATIONS and long_plateau(features)
            and features.get("drift_growth", math.inf) < LONG_PLATEAU_DRIFT_GROWTH
            and bool(features.get("start_weights_kept")))


def long_plateau_cut(features: dict[str, float], *, first: bool, scale: float,
                     schedule_anneals: bool = False) -> float | None:
    """The gate's cut on a long plateau (``long_plateau_calls_for_a_cut``): ``CLEAR_OVERSHOOT_CUT``, or
    less of a cut to stop at the distance floor (``distance_floor`` of the user's LR; ``scale`` is the
    controller's). None otherwise, and at the floor."""
    if first or not long_plateau_calls_for_a_cut(features):
        return None
    cut = max(CLEAR_OVERSHOOT_CUT, distance_floor(schedule_anneals) / scale)
    return cut if cut < 1.0 - 1e-9 else None


def punished_raise_undo(features: dict[str, float], last_applied: float) -> float | None:
    """The multiplier that takes back the last decision's raise (``1 / last_applied``, what it
    applied) when the metric got worse right after it, by more than ``RAISE_PUNISHED``; None when
    there is nothing to take back."""
    return 1.0 / last_applied if last_applied > 1 and _worse_beyond_noise(features) else None


def unpaid_raise_undo(features: dict[str, float], standing_raise: float) -> float | None:
    """The multiplier that takes back an earlier raise of the controller's (``1 / standing_raise``, what
    it applied; made before the last decision, whose raise ``punished_raise_undo`` answers, and followed
    by no cut) when a later evaluation punishes it: the metric got worse since the last decision and is
    worse than at the evaluation that made the raise (``objective_since_raise``, the log of the objective
    over the objective then), both by more than ``RAISE_PUNISHED``. A raise reads that the steps are too
    short; a run that then loses all it gained since did not get the faster progress it predicted. None
    when there is nothing to take back."""
    since = features.get("objective_since_raise")
    if standing_raise <= 1 or since is None or since <= RAISE_PUNISHED or not _worse_beyond_noise(features):
        return None
    return 1.0 / standing_raise


def opposed_raise_undo(features: dict[str, float], raise_in_force: float) -> float | None:
    """The multiplier that takes back the controller's last raise (``raise_in_force`` > 1, what it applied;
    made by the policy through the gate, at the last decision or before, and followed by no cut but the
    takebacks of later raises by this rule, so that a run walks back a chain of raises) when the
    gradient now opposes the steps (``grad_alignment < 0`` with ``grad_alignment_t <= -EVIDENCE_T``), the
    LR of the steps is at least ``OPPOSED_UNDO_DISTANCE`` times the distance estimate, and the raise did
    not speed the metric up (``raise_paid``). A raise reads that the steps are too short; once the
    gradient opposes them near the step Prodigy would take, they no longer are, whether or not the
    metric still improves. Far short of the estimate an opposed reading is Adam's short-horizon bias on
    a run still climbing toward its LR, and a raise after which the metric gained faster than before it
    was right when it was made: both stand. It never takes the LR below where the raise found it, so the
    user's LR is not cut by it. Not without a distance reading (``lr_over_distance``, and a positive
    estimate), not under heavy-ball momentum, where the gradient opposes the steps at LRs that train
    well (``clear_overshoot``), and not when no step of the interval was measured. None when there is
    nothing to take back."""
    if raise_in_force <= 1 or features.get("heavy_ball") or features.get("alignment_steps") == 0:
        return None
    t, ratio = features.get("grad_alignment_t"), features.get("lr_over_distance")
    if t is None or t > -EVIDENCE_T or features.get("grad_alignment", 0.0) >= 0:
        return None
    if ratio is None or ratio < OPPOSED_UNDO_DISTANCE or ratio >= NO_DISTANCE or raise_paid(features):
        return None
    return 1.0 / raise_in_force


def raise_paid(features: dict[str, float]) -> bool:
    """Whether the raise in force sped the metric up: the interval after it gained at least as much as
    the one before it (``objective_trend_after_raise <= objective_trend_before_raise``, log objectives,
    the controller's features). A raise at the first decision has no interval before it to compare
    with, and has not paid."""
    before, after = features.get("objective_trend_before_raise"), features.get("objective_trend_after_raise")
    return before is not None and after is not None and after <= before


def punished_cut_undo(features: dict[str, float], last_applied: float, *, scale: float) -> float | None:
    """The multiplier that takes back the last decision's cut (``last_applied`` < 1, what it applied) when
    the metric got worse right after it, by more than ``RAISE_PUNISHED``, in a run that has made progress
    (``made_progress``), and nothing reads an overshoot now: the gradient does not oppose the steps
    (``grad_alignment_t`` above minus the cut's bar), the iterates do not bounce (``bouncing``), and the steps
    are not too long by the distance check's two measures. A cut that answers an overshoot lowers the metric
    at once; one that the next evaluation punishes did not pay, whatever it read when it was made (in the
    sweeps about half the cuts taken back were made on an overshoot reading). It goes as far as the user's LR at
    most (``scale``: the controller's scale before this move), and not when it would take the LR of the
    steps to ``DISTANCE_OVERSHOOT`` times the distance estimate. None when there is nothing to take back."""
    if last_applied >= 1 or not _worse_beyond_noise(features) or not made_progress(features):
        return None
    if (features["grad_alignment_t"] <= -_cut_evidence_t(features) or bouncing(features)
            or _steps_too_long(features)):
        return None
    undo = min(1.0 / last_applied, 1.0 / scale)
    ratio = _positive_distance_ratio(features)
    if undo <= 1.0 + 1e-9 or (ratio is not None and ratio * undo >= DISTANCE_OVERSHOOT):
        return None
    return undo
