"""Nothing a user writes crashes translation: random corruption of valid objects
(wrong types, missing fields, odd values) must still translate, deterministically."""

from __future__ import annotations

import copy
import random

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.store import Store
from controller.translate import Translator, translate
from tests.translate.test_incremental import _world

ODD = [None, 0, -1, 70000, "", "x", "*", "/", "**.a", [], [1, "a"], {}, {"a": None}, True, 1.5,
       "1h", "0s"]


def _corrupt(rng: random.Random, value, depth: int = 0):
    if isinstance(value, dict) and value and rng.random() < 0.8:
        out = dict(value)
        k = rng.choice(list(out))
        # kind and metadata are the source's to validate (the Store indexes them)
        if not (depth == 0 and k in ("kind", "metadata", "apiVersion")):
            if rng.random() < 0.3:
                del out[k]
            else:
                out[k] = _corrupt(rng, out[k], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = _corrupt(rng, out[i], depth + 1)
        return out
    return rng.choice(ODD)


def test_corrupted_objects_never_crash_translation():
    for seed in range(150):
        rng = random.Random(seed)
        objs = _world(rng)
        bad = []
        for o in objs:
            o = copy.deepcopy(o)
            o.setdefault("metadata", {}).setdefault("namespace", "default")
            for _ in range(rng.randint(0, 8)):
                c = _corrupt(rng, o)
                o = c if isinstance(c, dict) else o
            bad.append(o)
        store = Store()
        store.apply(Event(EventType.ADDED, ObjectKey.of(o), o, "1", 1) for o in bad)
        t1 = translate(store)
        assert t1 == translate(store)
        tr = Translator()
        tr.update(store, set())
        # and incrementally: delete half the objects
        victims = [k for i, k in enumerate(store.keys()) if i % 2 == 0]
        changed = store.apply(Event(EventType.DELETED, k, store.get_key(k), "2", 1)
                              for k in victims)
        assert tr.update(store, changed) == translate(store)
