"""lab/cache.py: results keyed by their recipe, built aside and renamed into place."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lab.cache import RecipeCache, recipe_key

RECIPE = {"suite": "bookworm", "packages": ("systemd", "sudo"), "version": 3}


def test_the_key_is_the_recipes_hash_as_the_caches_on_disk_were_keyed() -> None:
    # The formula of the first image cache: an image already built keeps its key.
    expected = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]
    assert recipe_key(RECIPE) == expected
    assert recipe_key(dict(reversed(list(RECIPE.items())))) == expected
    assert recipe_key({**RECIPE, "version": 4}) != expected


def test_a_build_appears_only_once_complete(tmp_path: Path) -> None:
    cache = RecipeCache(tmp_path, RECIPE)
    assert not cache.complete()
    with cache.build() as build:
        assert build.dir == cache.partial
        (build.dir / "rootfs").mkdir()
        assert not cache.dir.exists()
        build.note = "mmdebstrap 3s"
    assert cache.complete() and (cache.dir / "rootfs").is_dir()
    assert not cache.partial.exists()
    assert json.loads((cache.dir / "recipe.json").read_text())["suite"] == "bookworm"
    assert (cache.dir / "complete").read_text().startswith("mmdebstrap 3s, total ")


def test_a_failed_build_leaves_no_result_and_keeps_its_log(tmp_path: Path) -> None:
    cache = RecipeCache(tmp_path, RECIPE)
    with pytest.raises(RuntimeError), cache.build() as build:
        (build.dir / "build.log").write_text("E: no such package\n")
        raise RuntimeError("mmdebstrap failed")
    assert not cache.complete() and not cache.dir.exists()
    assert (cache.partial / "build.log").exists()
    with cache.build() as build:  # the next try starts afresh
        assert not (build.dir / "build.log").exists()
    assert cache.complete()


def test_a_rebuild_replaces_the_old_result(tmp_path: Path) -> None:
    cache = RecipeCache(tmp_path, RECIPE)
    for content in ("first", "second"):
        with cache.build() as build:
            (build.dir / "box").write_text(content)
    assert (cache.dir / "box").read_text() == "second"


def test_prune_keeps_this_recipe_and_builds_under_way(tmp_path: Path) -> None:
    old = RecipeCache(tmp_path, {**RECIPE, "version": 2})
    with old.build():
        pass
    other_running = tmp_path / "0123456789abcdef.partial"
    other_running.mkdir()
    cache = RecipeCache(tmp_path, RECIPE)
    with cache.build():
        pass
    assert cache.prune() == [old.dir]
    assert cache.complete() and other_running.exists() and not old.dir.exists()
