"""A cache of build results keyed by their recipe.

A recipe is a JSON-able dict of everything that decides a result (packages,
sources, the scripts that run ...). Its result lives in ROOT/<key>/, where
<key> is a hash of the recipe: a changed recipe builds anew, an unchanged one
is reused. A build happens in ROOT/<key>.partial/ and is renamed into place
only once complete, so an interrupted build is never taken for a result.

    cache = RecipeCache(CACHE_DIR / "images", recipe)
    if not cache.complete():
        with cache.build() as build:
            ... write into build.dir ...
    use(cache.dir / "rootfs")
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PARTIAL = ".partial"
COMPLETE = "complete"  # written last: its presence means the result is whole
RECIPE = "recipe.json"  # the recipe itself, beside its result, for whoever wonders what it is


def recipe_key(recipe: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Build:
    dir: Path
    note: str = ""  # added to the completion marker (e.g. how long each step took)


@dataclass(frozen=True)
class RecipeCache:
    root: Path
    recipe: Mapping[str, object]
    # A caller that already names its results by a hash of what decides them (the
    # todo_api role's wheelhouse) passes that name; everyone else gets recipe_key().
    name: str | None = None

    @property
    def key(self) -> str:
        return self.name or recipe_key(self.recipe)

    @property
    def dir(self) -> Path:
        return self.root / self.key

    @property
    def partial(self) -> Path:
        return self.root / (self.key + PARTIAL)

    def complete(self) -> bool:
        return (self.dir / COMPLETE).exists()

    @contextmanager
    def build(self) -> Iterator[Build]:
        """A fresh directory to build in; renamed into place when the block ends without error.

        A failed build stays in the .partial directory (its logs are there)
        until the next build of the same recipe starts afresh.
        """
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        started = time.monotonic()
        build = Build(self.partial)
        yield build
        (self.partial / RECIPE).write_text(json.dumps(self.recipe, sort_keys=True, indent=2))
        took = f"{time.monotonic() - started:.0f}s"
        (self.partial / COMPLETE).write_text((f"{build.note}, total {took}" if build.note else took) + "\n")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.partial.rename(self.dir)

    def prune(self) -> list[Path]:
        """Remove the results of other recipes (never used again); return what went.

        Builds under way (.partial) are left alone: one may be another recipe's, running now.
        """
        gone = []
        for other in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if other != self.dir and other.is_dir() and not other.name.endswith(PARTIAL):
                shutil.rmtree(other, ignore_errors=True)
                gone.append(other)
        return gone
