"""The host-level worker launcher: checks the API once, then runs one worker process per core."""

from __future__ import annotations

import logging

import psutil

from zeroserve.common.supervisor import Supervisor
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.loader import load_api, resolve_settings
from zeroserve.worker.process import run_worker_process

log = logging.getLogger(__name__)


def default_process_count() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def run_launcher(config: WorkerConfig) -> int:
    """Run until SIGTERM/SIGINT; an unusable API raises ConfigError before anything starts."""
    settings = resolve_settings(load_api(config.api), config)
    count = config.processes or default_process_count()
    log.info(
        "starting %d worker process(es) for %s (service %s, route %s) against %s",
        count,
        config.api,
        settings.service,
        settings.route,
        config.broker,
    )
    supervisor = Supervisor(
        "worker",
        run_worker_process,
        (config,),
        count,
        stop_timeout_s=config.drain_timeout_s + 2.0,
    )
    return supervisor.run()
