"""Helpers for the evaluation tests: promtool discovery (a failure, not a skip, under CI), the
platform's disaster-recovery block."""

from __future__ import annotations

import os
import shutil

import pytest


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required under CI: apt-get install prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


PLATFORM_BLOCK = """\
disaster_recovery:
  objectives:
    - {name: RPO, description: Maximum acceptable data loss, target: 1 hour}
    - {name: RTO, description: Maximum acceptable downtime, target: 4 hours}
  recovery_scenarios:
    - scenario: database_failure
      rpo: 1 hour
      rto: 2 hours
      steps: [restore_latest_database_backup, apply_transaction_logs_since_backup,
              verify_data_integrity, switch_traffic_to_restored_database]
    - scenario: blockchain_node_failure
      rpo: 6 hours
      rto: 4 hours
      steps: [provision_new_blockchain_node, restore_blockchain_state_from_backup,
              synchronize_with_network, verify_node_health, add_to_validator_set]
    - scenario: complete_data_center_outage
      rpo: 24 hours
      rto: 24 hours
      steps: [activate_disaster_recovery_site, restore_all_services_from_backups,
              reconfigure_networking_and_dns, validate_all_services,
              gradually_shift_traffic_to_dr_site]
"""
"""The platform's own disaster_recovery block, as it stands in its repository; tests add an
``srd:`` part."""
