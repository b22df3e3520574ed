"""The shipped Prometheus rules: valid (`promtool check rules`), behaving as meant (`promtool
test rules`: each alert fires on synthetic series and stays quiet otherwise), and written
against metric names the app exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import aihub_billing.main  # noqa: F401  (imports every module that defines a metric)
from aihub_billing.kit.metrics import job_families, subscription_families, usage_rollup_family
from tests.backends import IN_CI

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"
SEED_ALERTS = {
    "AihubBillingPaymentFailureRateHigh",
    "AihubBillingQuotaViolationSpike",
    "AihubBillingCancellationSpike",
    "AihubBillingRequestLatencyHigh",
}
ALERTS = SEED_ALERTS | {
    "AihubBillingUsageRollupBehind",
    "AihubBillingJobsNotRunning",
    "AihubBillingJobsDead",
    "AihubBillingQuotaBackendDown",
}
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian package prometheus; `make system-deps` installs it)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
        pytest.skip(message)
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_rules_file_is_valid() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_fires_on_its_series_and_stays_quiet_otherwise() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert SEED_ALERTS < tested == ALERTS == {r["alert"] for r in _rules() if "alert" in r}


def test_the_rules_use_only_metrics_the_app_exports() -> None:
    families = [
        *REGISTRY.collect(),
        *subscription_families({}, {}),
        usage_rollup_family(0),
        *job_families({}, 0.0),
    ]
    exported = {f.name + s for f in families for s in ("", *_SUFFIXES.get(f.type, ()))}
    used = {
        name
        for rule in _rules()
        for name in re.findall(r"\baihub_billing_[a-z0-9_]+", rule["expr"])
    }
    assert used, "the rules name no metric"
    assert used <= exported, f"not exported by the app: {sorted(used - exported)}"
