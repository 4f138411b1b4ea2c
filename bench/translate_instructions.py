"""One full translate() of bench/translate_bench.py's store (1000 HTTPRoutes), for
instruction counts under callgrind (timings are noise on a shared machine). Run it twice,
with and without ``skip``, and subtract: the difference is translation alone.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/translate_instructions.py [skip]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.translate_bench import objects  # noqa: E402
from controller.objects import ObjectKey  # noqa: E402
from controller.source import Event, EventType  # noqa: E402
from controller.store import Store  # noqa: E402
from controller.translate import translate  # noqa: E402

store = Store()
store.apply(Event(EventType.ADDED, ObjectKey.of(o), o, "1", 1) for o in objects(1000))
if sys.argv[1:] != ["skip"]:
    translate(store)
