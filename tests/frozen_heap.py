"""Imported last, after the heavy imports: moves what they made out of the garbage collector's reach (``gc.freeze``).

accelerate's ``free_memory`` runs a full ``gc.collect()`` at the end of every ``Trainer.train()``, and with
torch, transformers, scikit-learn and the package imported, that walks about half a million objects: 0.5 s
a run on 2 CPU cores, more than most of the tests' runs train. Frozen, a collection walks only what was made
after. ``forked_job.PRELOAD`` ends with this module: the fork server imports the list (its children inherit
the frozen heap), and ``conftest.py`` imports it in each pytest worker once the test modules, and with them
torch and transformers, are imported.
"""

import gc

gc.collect()  # what is garbage now is not kept for good
gc.freeze()
