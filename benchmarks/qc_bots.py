"""How many items a careless script answers before quality control pauses it.

Scripted annotators (``tests/qc_clients.py``) work through a study with quality
control on (four attention checks asking for 1, 3, 5 and 7; a check after a
fifth of ratings; repeats of a tenth; automatic pause after three failed checks
or 60% of ratings under a second), through the rating page's plain forms and
through the REST API:

* ``random``: a random key for every item, 3 s on each;
* ``constant``: always 4, 3 s on each;
* ``fast``: plausible scores, right on every check, 0.2 s on each (on a study
  without checks, so that speed alone must catch it);
* ``careful`` (the control): right on every check, its earlier score on every
  repeat, 3 s on each; never paused.

Time on item is simulated (the item's clock is moved back), so a run takes
seconds. Runs against a throwaway database next to DATABASE_URL's (PostgreSQL):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_bench \\
        .venv/bin/python benchmarks/qc_bots.py [--seeds 5]

Prints, per script and path, the items answered before the pause for each seed
(the engine's dealing is random: checks come at random), their median and the
flags raised.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("PALATE_DATA_DIR", tempfile.mkdtemp(prefix="palate-bench-"))

BOTS = {
    # name: (strategy, seconds on each item, attention-check rate)
    "random": ("random", 3000, 0.2),
    "constant": ("constant", 3000, 0.2),
    "fast": ("informed", 200, 0.0),
    "careful": ("informed", 3000, 0.2),
}


def _one(way_name, bot, seed, n):
    from django.test import Client

    from tests.factories import AnnotatorFactory, join, joined
    from tests.qc_clients import (
        STRATEGIES,
        ApiAnnotator,
        PageAnnotator,
        qc_study,
        run_bot,
    )

    strategy, dwell, rate = BOTS[bot]
    study = qc_study(n_images=150, check_rate=rate, slug=f"{bot}-{way_name}-{n}")
    if way_name == "page":
        client = Client()
        annotator = joined(client, study)
        way = PageAnnotator(client, study)
    else:
        annotator = join(AnnotatorFactory(), study)
        way = ApiAnnotator.token_client(Client, annotator, study)
    return run_bot(
        way, annotator, STRATEGIES[strategy], dwell_ms=dwell, max_items=150, seed=seed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--bots", nargs="+", default=list(BOTS), choices=list(BOTS), help="which"
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL server (the figures are for it).")
    setup_test_environment()
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="palate-bench-media-")
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    n = 0
    try:
        print(f"{'script':9} {'path':5} {'paused':>7} items before the pause (seeds)")
        for bot in args.bots:
            for way in ("page", "api"):
                runs = []
                for seed in range(args.seeds):
                    n += 1
                    runs.append(_one(way, bot, seed, n))
                items = [r.items for r in runs]
                paused = sum(r.paused for r in runs)
                flags = sorted({f for r in runs for f in r.flags})
                print(
                    f"{bot:9} {way:5} {paused:>3}/{len(runs):<3} "
                    f"{items} median {statistics.median(items):g}; "
                    f"flags: {', '.join(flags) or '-'}"
                )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
