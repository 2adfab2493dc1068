"""The package boundaries: `import nfnet` is the model library only, and the
layers import only downward (docs/design.md, "Layering")."""
import ast
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# What only the training kit (nfnet.train) and the programs may pull in.
TRAINING_ONLY = ("orbax", "grain", "clu", "tensorflow", "tensorflow_datasets",
                 "ml_collections", "nfnet.train", "data", "pretrain",
                 "finetune", "recipes")


def test_import_nfnet_loads_no_training_kit():
  code = ("import json, sys, nfnet\n"
          "assert 'nfnet.loading' not in sys.modules  # imported on first use\n"
          "nfnet.load\n"
          "print(json.dumps(sorted(sys.modules)))\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  loaded = json.loads(result.stdout.splitlines()[-1])
  assert "nfnet.model" in loaded and "nfnet.loading" in loaded
  heavy = [m for m in loaded
           if any(m == p or m.startswith(p + ".") for p in TRAINING_ONLY)]
  assert heavy == []


def _imports(path: pathlib.Path) -> set[str]:
  """Every module a file imports, at any depth (lazy imports included)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def _importers(package: str, forbidden: tuple[str, ...],
               exclude: str | None = None) -> dict[str, list[str]]:
  found = {}
  for path in sorted((REPO / package).rglob("*.py")):
    relative = str(path.relative_to(REPO))
    if exclude and relative.startswith(exclude):
      continue
    bad = sorted(n for n in _imports(path)
                 if any(n == f or n.startswith(f + ".") for f in forbidden))
    if bad:
      found[relative] = bad
  return found


def test_layers_import_only_downward():
  # The model library: no training kit, no data, no programs.
  assert _importers("nfnet", ("nfnet.train", "data", "pretrain", "finetune",
                              "recipes"), exclude="nfnet/train/") == {}
  # The training kit serves both programs and knows neither.
  assert _importers("nfnet/train", ("pretrain", "finetune", "recipes")) == {}
  # data/ never imports the model side.
  assert _importers("data", ("nfnet", "pretrain", "finetune", "recipes")) == {}
  # The programs never import each other.
  assert _importers("pretrain", ("finetune", "recipes")) == {}
  assert _importers("finetune", ("pretrain", "recipes")) == {}
