"""The Grafana dashboard and Prometheus config under cluster/monitoring/.

Every metric a panel queries must be one the code exports, under the name Prometheus
sees: the names are read from the source (calls to Ray's metric classes), not listed
here, so renaming a metric in the code without the dashboard fails this file, and so
does a metric added without a panel. Ray Serve's own metrics the dashboard uses are
listed by name and checked against the installed Ray's source the same way.

Ray 2.60 exports a ``ray.util.metrics`` / ``ray.serve.metrics`` metric NAME as
``ray_NAME`` (its agents' Prometheus namespace); a Histogram as ``_bucket``, ``_sum`` and
``_count`` series; a Counter as ``ray_NAME_total`` (OpenTelemetry, the default, exports
only that; the older OpenCensus path also adds a deprecated gauge ``ray_NAME``, which a
dashboard must not rely on)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

from tests.conftest import ROOT

MONITORING = ROOT / "cluster" / "monitoring"
DASHBOARD = MONITORING / "rayinfra-dashboard.json"
PROMETHEUS = MONITORING / "prometheus.yml"
DATASOURCE = "${datasource}"
# Ray writes the file in the session directory and links it from the temp root (/tmp/ray by default).
DISCOVERY_FILE = f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"

METRIC_MODULES = {"ray.util.metrics", "ray.serve.metrics"}  # what reaches Ray's metrics agents
KINDS = {"Counter", "Gauge", "Histogram"}
# Ray Serve's own metrics the dashboard uses (names as Serve declares them, without ray_).
RAY_SERVE_METRICS = {
    "serve_deployment_replica_healthy",
    "serve_deployment_queued_queries",
    "serve_deployment_processing_latency_ms",
}


# ------------------------------------------------------------------ what the code exports
def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted path, for every import in the module (function-level ones too:
    the drift monitor imports its Gauge inside a function)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:  # `import ray.util.metrics` binds `ray`
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id)  # a name never imported is not Ray's class (e.g. a local Counter)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def declared_metrics(files: Iterable[Path], *, strict: bool = True) -> dict[str, str]:
    """Metric name -> kind (Counter, Gauge, Histogram) for every Ray metric the files construct.

    ``strict``: a name that is neither a literal nor a module-level string constant fails,
    so no metric of ours can slip past this check. Ray's own source builds some names with
    f-strings; those are skipped (``strict=False``)."""
    found: dict[str, str] = {}
    for path in files:
        text = path.read_text()
        if not any(kind in text for kind in KINDS):  # parsing is the slow part; most files have no metric
            continue
        tree = ast.parse(text, filename=str(path))
        aliases = _imports(tree)
        constants = {}  # NAME = "..." at module level
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not (target := _dotted(node.func, aliases)):
                continue
            module, _, kind = target.rpartition(".")
            if module not in METRIC_MODULES or kind not in KINDS:
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
            elif isinstance(arg, ast.Name) and isinstance(constants.get(arg.id), str):
                name = constants[arg.id]
            elif strict:
                raise AssertionError(f"{path}:{node.lineno}: a {kind} whose name this check cannot read")
            else:
                continue
            assert found.setdefault(name, kind) == kind, f"{name} declared as {found[name]} and {kind}"
    return found


def prometheus_names(declared: dict[str, str]) -> dict[str, str]:
    """Prometheus series name -> the declared metric it comes from (see the module docstring)."""
    names: dict[str, str] = {}
    for name, kind in declared.items():
        full = f"ray_{name}"
        if kind == "Counter":
            series = [full.removesuffix("_total") + "_total"]  # the client adds _total unless already there
        elif kind == "Histogram":
            series = [f"{full}_{suffix}" for suffix in ("bucket", "sum", "count")]
        else:
            series = [full]
        names.update(dict.fromkeys(series, name))
    return names


@functools.cache
def _rayinfra_metrics() -> dict[str, str]:
    return declared_metrics(sorted((ROOT / "rayinfra").rglob("*.py")))


@functools.cache
def _ray_serve_metrics() -> dict[str, str]:
    serve_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0]) / "serve"
    files = [p for p in serve_dir.rglob("*.py") if "tests" not in p.relative_to(serve_dir).parts]
    return declared_metrics(sorted(files), strict=False)


# ------------------------------------------------------------------ what the dashboard queries
# Aggregators and functions are told apart by the "(" that follows them; these are the
# words of PromQL that stand alone.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan", "atan2"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana's: $application, ${datasource}, $__rate_interval
_MATCHERS = re.compile(r"\{[^{}]*\}")  # label matchers, after strings are gone
_RANGE = re.compile(r"\[[^\]]*\]")  # [5m], [1h:1m]
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Grafana's variable queries wrap PromQL: label_values([EXPR,] LABEL) and query_result(EXPR).
_GRAFANA_QUERY = re.compile(r"^\s*(?:label_values\((?:(.*),)?\s*\w+\s*\)|query_result\((.*)\))\s*$")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")  # not the "m" of 5m nor "e3" of 1e3


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    for pattern in (_STRING, _VARIABLE, _MATCHERS, _RANGE, _LABEL_LIST):
        expr = pattern.sub(" ", expr)
    return {m[1] for m in _IDENTIFIER.finditer(expr) if not m[2] and m[1].lower() not in PROMQL_WORDS}


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [(f"panel {p.get('id')} {p.get('title')!r}", t["expr"]) for p in dashboard["panels"]
             for t in p.get("targets", []) if t.get("expr")]  # fmt: skip
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            found.append((f"variable {v['name']}", _GRAFANA_QUERY.sub(lambda m: m[1] or m[2] or "", query)))
    return found


def unknown_metrics(dashboard: dict, exported: Iterable[str]) -> dict[str, set[str]]:
    """where -> the metric names used there that nothing exports."""
    exported = set(exported)
    unknown = {where: metrics_in(expr) - exported for where, expr in queries(dashboard)}
    return {where: names for where, names in unknown.items() if names}


def _exported() -> dict[str, str]:
    serve = _ray_serve_metrics()
    return {**prometheus_names({n: serve[n] for n in RAY_SERVE_METRICS}), **prometheus_names(_rayinfra_metrics())}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# ------------------------------------------------------------------ tests
def test_the_metric_scan_reads_rayinfra_and_ray_serve_source():
    ours = _rayinfra_metrics()
    assert ours and all(name.startswith("rayinfra_") for name in ours), ours
    assert set(ours.values()) == KINDS, f"a kind of metric is no longer found in the source: {ours}"
    serve = _ray_serve_metrics()
    assert RAY_SERVE_METRICS <= serve.keys(), f"not declared in the installed Ray: {RAY_SERVE_METRICS - serve.keys()}"


def test_every_metric_the_dashboard_queries_is_exported(dashboard):
    assert unknown_metrics(dashboard, _exported()) == {}


def test_every_rayinfra_metric_has_a_panel(dashboard):
    used = set().union(*(metrics_in(expr) for _, expr in queries(dashboard)))
    exported = prometheus_names(_rayinfra_metrics())
    missing = set(exported.values()) - {exported[name] for name in used if name in exported}
    assert not missing, f"exported by rayinfra, on no panel of {DASHBOARD.name}: {sorted(missing)}"


def test_the_check_rejects_an_unknown_metric_and_a_name_without_its_suffix(dashboard):
    exported = _exported()
    assert "ray_rayinfra_requests_total" in exported and "ray_rayinfra_request_latency_ms_bucket" in exported
    bad = {
        "panels": [
            *dashboard["panels"],
            {"id": 900, "targets": [{"expr": 'sum(rate(ray_rayinfra_no_such_metric_total{route="x"}[5m]))'}]},
            # Ray's counters are ..._total and histograms ..._bucket: the bare names are no series.
            {"id": 901, "targets": [{"expr": "rate(ray_rayinfra_requests[5m])"}]},
            {"id": 902, "targets": [{"expr": "histogram_quantile(0.5, rate(ray_rayinfra_request_latency_ms[5m]))"}]},
        ]
    }
    assert unknown_metrics(bad, exported) == {
        "panel 900 None": {"ray_rayinfra_no_such_metric_total"},
        "panel 901 None": {"ray_rayinfra_requests"},
        "panel 902 None": {"ray_rayinfra_request_latency_ms"},
    }


def test_metric_names_are_read_from_promql_not_its_labels_functions_or_variables():
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(ray_a_bucket{route=~"$route", status!~"5.."}'
        "[$__rate_interval]))) / on (instance) group_left ray_b offset 1h > bool 1e3"
        ' or label_replace(ray_c, "dst", "$1", "src", "(.*)") unless max without (job) (ray_d[1h:5m])'
    )
    assert metrics_in(expr) == {"ray_a_bucket", "ray_b", "ray_c", "ray_d"}


def test_a_metric_name_the_scan_cannot_read_fails_it(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from ray.util import metrics\nNAME = 'x_total'\nc = metrics.Counter(NAME)\n")
    assert declared_metrics([src]) == {"x_total": "Counter"}
    assert prometheus_names({"x_total": "Counter"}) == {"ray_x_total": "x_total"}  # no second _total
    src.write_text(
        "from collections import Counter\nfrom ray.util import metrics\nc = Counter()\nmetrics.Gauge(f'{c}')\n"
    )
    with pytest.raises(AssertionError, match="cannot read"):
        declared_metrics([src])


def test_panels_use_the_datasource_variable_unique_ids_and_fit_the_grid(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: dict[tuple[int, int], int] = {}
    for p in panels:
        where = f"panel {p['id']} {p['title']!r}"
        assert p["type"] in {"timeseries", "stat"}, where
        assert p["datasource"]["uid"] == DATASOURCE, where
        assert p["targets"], where
        assert all(t["datasource"]["uid"] == DATASOURCE for t in p["targets"]), where
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, where
        for cell in itertools.product(range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])):
            assert taken.setdefault(cell, p["id"]) == p["id"], f"{where} overlaps panel {taken[cell]}"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DATASOURCE, v["name"]


def test_prometheus_scrapes_ray_through_its_service_discovery_file():
    config = yaml.safe_load(PROMETHEUS.read_text())
    files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files == [DISCOVERY_FILE]
    assert not any("static_configs" in job for job in config["scrape_configs"]), "nodes come from Ray's file"
