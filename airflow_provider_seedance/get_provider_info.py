"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_seedance import __version__

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"password": "API token", "host": "Base URL"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "RunComfy API token"},
}
"""The ``seedance`` connection form's standard fields; the hook serves it to Airflow < 3.2 as well."""

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Seconds allowed for each HTTP call to the API (default 30).",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of status, result and cancel calls on 429/5xx/network "
        "errors (default 5). Submissions are never retried.",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "retry_backoff": {
        "label": "Retry backoff (seconds)",
        "description": "First delay between retries, doubled each attempt (default 1).",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "PEM file of the CA certificates to trust instead of the default "
        "store (private CA, TLS-inspecting proxy); must exist on every Airflow component.",
        "schema": {"type": ["string", "null"]},
    },
    "proxy": {
        "label": "Proxy URL",
        "description": "e.g. http://user:password@proxy.example.com:3128; empty: the "
        "HTTPS_PROXY / NO_PROXY environment variables apply.",
        # 'password' format: Airflow masks it like a secret (it may hold credentials).
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "verify": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for a test endpoint: the API token is sent in clear "
        "to whoever answers.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "allow_private_networks": {
        "label": "Allow private networks for downloads",
        "description": "Off: output and image downloads refuse private addresses (10/8, 172.16/12, "
        "192.168/16, fc00::/7). Link-local and cloud-metadata addresses are always refused.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
}
"""The ``seedance`` connection form's extra fields; the hook serves them to Airflow < 3.2 as well."""


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata: connection type, UI form, modules and extra links."""
    integration = "ByteDance Seedance (RunComfy Model API)"
    return {
        "package-name": "airflow-provider-seedance",
        "name": "Seedance",
        "description": "Generate videos with ByteDance Seedance on the RunComfy Model API and land them "
        "in object storage.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": integration,
                "external-doc-url": "https://www.runcomfy.com/models/bytedance/seedance-v1.5-pro/image-to-video",
                "tags": ["ai", "video"],
            }
        ],
        "hooks": [
            {"integration-name": integration, "python-modules": ["airflow_provider_seedance.hooks.seedance"]}
        ],
        "operators": [
            {
                "integration-name": integration,
                "python-modules": ["airflow_provider_seedance.operators.seedance"],
            }
        ],
        "sensors": [
            {
                "integration-name": integration,
                "python-modules": ["airflow_provider_seedance.sensors.seedance"],
            }
        ],
        "triggers": [
            {
                "integration-name": integration,
                "python-modules": ["airflow_provider_seedance.triggers.seedance"],
            }
        ],
        "transfers": [
            {
                "source-integration-name": integration,
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": "airflow_provider_seedance.transfers.seedance_to_s3",
            },
            {
                "source-integration-name": integration,
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_seedance.transfers.seedance_to_object_storage",
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_seedance.hooks.seedance.SeedanceHook",
                "hook-name": "Seedance (RunComfy)",
                "connection-type": "seedance",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "extra-links": ["airflow_provider_seedance.links.seedance.SeedanceVideoLink"],
    }
