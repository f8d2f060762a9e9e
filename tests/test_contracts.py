"""The contracts between layers: which layer imports which, how fast the entry points
answer their flags, and that the same setting has the same default everywhere."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each layer may import from the project: data flows ingest -> models -> jobs -> serve.
MAY_IMPORT = {
    "ingest": set(),
    "models": {"ingest"},
    "retrieval": {"models"},
    "cluster": set(),
    "jobs": {"ingest", "models", "retrieval", "cluster"},
    "serve": {"ingest", "models", "retrieval", "cluster"},
}


def project_imports(path: Path) -> set[str]:
    """The project's top-level packages that ``path`` imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MAY_IMPORT)


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(layer):
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - MAY_IMPORT[layer] - {layer})
        for path in (ROOT / layer).rglob("*.py")
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


@pytest.mark.parametrize("layer", ["models", "retrieval"])
def test_models_and_retrieval_know_nothing_of_ray(layer):
    for path in (ROOT / layer).rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        names |= {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not any(name == "ray" or name.startswith("ray.") for name in names), path


def test_train_parses_its_flags_before_loading_ray_or_torch():
    code = (
        "import sys; sys.path.insert(0, '.'); from jobs import train; "
        "train.parse_args(['--epochs', '2']); print(sorted({'ray', 'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--bogus"], 2), (["--epochs", "0"], 2)])
def test_train_answers_help_and_bad_flags_in_under_two_seconds(argv, code):
    import time

    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "jobs/train.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == code and seconds < 2.0, (seconds, done.stderr[-500:])
    if code == 2:
        assert len(done.stderr.strip().splitlines()) == 1


def test_boolean_flags_take_the_switch_and_the_references_spelling():
    from jobs import train

    assert train.parse_args([]).index is True
    for argv in (["--no-index"], ["--no_index"], ["--index", "0"]):
        assert train.parse_args(argv).index is False, argv
    assert (
        train.parse_args(["--use_gpu"]).use_gpu is True
        and train.parse_args(["--no-use_gpu"]).use_gpu is False
    )
    with pytest.raises(SystemExit):
        train.parse_args(["--index", "maybe"])


def test_do_eval_alone_means_evaluate_only_as_in_clip4clip():
    from jobs import train
    from jobs.args import resolve

    def resolved(argv):
        args = train.parse_args(argv)
        assert resolve(args, args.kind) is None
        return args.do_train

    assert resolved([]) is True
    assert resolved(["--do_eval"]) is False and resolved(["--do_train", "0"]) is False
    assert resolved(["--do_train", "--do_eval"]) is True  # train, then evaluate (as always)


def test_cdcr_defaults_are_the_same_in_the_flags_and_the_library():
    from jobs import train
    from models import ContrastiveObjective, cdcr_loss

    args = train.parse_args([])
    objective = inspect.signature(ContrastiveObjective).parameters
    loss = inspect.signature(cdcr_loss).parameters
    assert args.cdcr_alpha1 == objective["cdcr_alpha1"].default == loss["alpha1"].default == 0.14
    assert args.cdcr_alpha2 == objective["cdcr_alpha2"].default == loss["alpha2"].default == 0.0
    assert args.cdcr_lambda == objective["cdcr_lambda"].default
