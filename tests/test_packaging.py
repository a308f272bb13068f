"""The wheel carries what the running product reads, and an installed copy works without a checkout.

The `packaging`-marked tests build the wheel from a copy of the working tree (so the build writes
nothing into the checkout), install it with `--no-deps --target` into a scratch folder, and run a
child Python whose working directory is not the repository, with only that folder and the venv's
third-party packages importable: the child loads the policy text and the default intent model and
gets a prediction from them. About 10 s with a warm model cache (more the first time, when the
default intent model is built). Deselect with `-m "not packaging"`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from dialogue import defaults
from dialogue.intents import read_examples

from .conftest import ROOT

EXCLUDE = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}

# Besides dialogue.defaults' files: what other modules read next to themselves.
OTHER_DATA = ("dialogue/rules/*.toml", "campaigns/migrations/*.sql", "campaigns/static/*",
              "assist/static/*")


def _runtime_data() -> list[str]:
    """Every data file the product reads, as a path inside the wheel."""
    paths = [defaults.INTENT_TRAIN, defaults.PLAYBOOK_CALLS, defaults.POLICY,
             *sorted(defaults.FLOWS.glob("*.yaml"))]
    names = [p.resolve().relative_to(ROOT).as_posix() for p in paths]
    for pattern in OTHER_DATA:
        names += sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file())
    return names


def _copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), else a plain copy."""
    listed = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        ls = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        run = subprocess.run(ls, cwd=ROOT, capture_output=True, check=False)
        if run.returncode == 0:
            listed = [n for n in run.stdout.decode().split("\0") if n]
    if listed is None:
        shutil.copytree(ROOT, dest, ignore=lambda _d, names: [
            n for n in names if n in EXCLUDE or n.endswith(".egg-info")])
        return
    for name in listed:
        source = ROOT / name
        if source.is_file():  # a file deleted from the tree but not from the index is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _pip(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    run = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, f"pip {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel_and_site(tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    pytest.importorskip("setuptools", minversion="77", reason="building needs setuptools>=77 "
                        "(pyproject's build-system), installed in the venv")
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist, site = tmp / "src", tmp / "dist", tmp / "site"
    _copy_tree(src)
    # --no-index: nothing is fetched; the build backend is the venv's setuptools.
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src),
         cwd=tmp)
    [wheel] = dist.glob("callwise-*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp)
    return wheel, site


@pytest.mark.packaging
def test_wheel_carries_the_runtime_data_and_no_test_data(wheel_and_site):
    wheel, _site = wheel_and_site
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = _runtime_data()
        assert any(n.startswith("campaigns/migrations/") for n in expected)
        missing = [n for n in expected if n not in names]
        assert not missing, f"not in {wheel.name}: {missing}"
        for name in expected:  # the files themselves, not stale copies
            assert zf.read(name) == (ROOT / name).read_bytes(), name
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"fixtures", "tests", "bench", "scripts"}, sorted(tops)
    assert "dialogue/data/README.md" not in names


CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    site = Path(sys.argv[1]).resolve()
    # The venv's editable install of the checkout must not answer: only the installed copy may.
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable__" not in (getattr(f, "__module__", "") or "")]
    sys.path[:] = [p for p in sys.path if not p.startswith("__editable__")]

    import core.paths
    import campaigns.migrate
    from dialogue import defaults
    from dialogue.flows import Flow
    from dialogue.intents import read_examples

    for module in (core.paths, defaults, campaigns.migrate):
        assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
    assert defaults.INTENT_TRAIN.resolve().is_relative_to(site), defaults.INTENT_TRAIN

    policy = defaults.policy_text()
    texts, _labels = read_examples(defaults.INTENT_TRAIN)
    model = defaults.default_intent_model()
    prediction = model.predict("please stop calling me, take my number off your list")
    flow = Flow.load(defaults.flow_path("installment_offer_en.yaml"))
    print(json.dumps({
        "policy": policy, "examples": len(texts), "label": prediction.label,
        "intent_folder": str(defaults.intent_model_folder()), "flow": flow.id,
        "migrations": sorted(p.name for p in campaigns.migrate.MIGRATIONS_DIR.glob("*.sql")),
    }))
""")


@pytest.mark.packaging
def test_installed_wheel_suggests_without_the_checkout(wheel_and_site, intent_model):
    # `intent_model` builds the default model here first if the cache is cold, so the child only
    # loads it; the child computes the cache folder from the installed copy's bytes.
    _wheel, site = wheel_and_site
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(site)
    cwd = site.parent  # not the repository: nothing is found relative to the working directory
    run = subprocess.run([sys.executable, "-c", CHILD, str(site)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["policy"] == defaults.policy_text()
    assert got["examples"] == len(read_examples(defaults.INTENT_TRAIN)[0])
    assert got["label"] == "stop_calling"
    # The cache key comes from the data's bytes, not from where it is installed.
    assert got["intent_folder"] == str(defaults.intent_model_folder())
    assert got["flow"] == "installment_offer"
    shipped = sorted(p.name for p in (ROOT / "campaigns" / "migrations").glob("*.sql"))
    assert got["migrations"] == shipped


def test_the_cache_keys_follow_the_data(tmp_path, monkeypatch, intent_model):
    """Editing a shipped data file gives a new cache folder, so nothing stale is loaded."""
    intent_folder = defaults.intent_model_folder()
    playbook_folder = defaults.playbook_folder(intent_model)

    def edited(original: Path) -> Path:  # the same lines plus a copy of the first one
        copy = tmp_path / original.name
        data = original.read_bytes()
        copy.write_bytes(data + data.splitlines(keepends=True)[0])
        return copy

    with monkeypatch.context() as m:
        m.setattr(defaults, "INTENT_TRAIN", edited(defaults.INTENT_TRAIN))
        assert defaults.intent_model_folder() != intent_folder
    with monkeypatch.context() as m:
        m.setattr(defaults, "PLAYBOOK_CALLS", edited(defaults.PLAYBOOK_CALLS))
        assert defaults.playbook_folder(intent_model) != playbook_folder
    # The same bytes at another path: the same key (a copy of the data is not a change).
    with monkeypatch.context() as m:
        m.setattr(defaults, "INTENT_TRAIN", shutil.copy(defaults.INTENT_TRAIN, tmp_path / "t"))
        assert defaults.intent_model_folder() == intent_folder
