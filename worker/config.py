"""The worker's settings, one frozen object built by the CLI and handed to each process."""

from __future__ import annotations

from dataclasses import dataclass, field

from zeroserve.common.errors import ConfigError
from zeroserve.common.link import LinkConfig


@dataclass(frozen=True)
class WorkerConfig:
    #: Every broker's worker-side endpoint; each process registers with each.
    brokers: tuple[str, ...]
    #: ``module:attr`` or ``path/to/file.py:attr``; attr is a class or an instance.
    api: str
    #: Service name; defaults to the API class's name.
    service: str | None = None
    #: The version of the service it serves (any label); None: the API's ``version``
    #: attribute, else "1".
    version: str | None = None
    #: Worker processes on this host; None means one per physical core.
    processes: int | None = None
    #: Autoscaling: between these many processes, by the work waiting at the brokers; an idle
    #: service sheds one after ``scale_down_after_s`` (None: SCALE_DOWN_AFTER_S). None: a
    #: fixed count.
    min_processes: int | None = None
    max_processes: int | None = None
    scale_down_after_s: float | None = None
    #: Threads each process's numeric libraries may start (OMP_NUM_THREADS and the like).
    #: None: its share of the cores, max(1, cores // processes), unless the environment sets
    #: a thread variable; in a process's own config, None means the environment's governs.
    threads_per_process: int | None = None
    #: These override the API class's own attributes when set.
    max_batch_size: int | None = None
    batch_timeout_s: float | None = None
    route: str | None = None
    #: True forces streaming on, whatever the class says.
    stream: bool = False
    #: "openai" wraps the API in the OpenAI-compatible spec.
    spec: str | None = None
    #: ``module:attr`` of callback and logger objects, on top of the API's own.
    callbacks: tuple[str, ...] = ()
    loggers: tuple[str, ...] = ()
    #: A 500 tells the client what user code raised, not only "Internal server error".
    expose_errors: bool = False
    #: Requests one process may hold; None means two batches' worth.
    capacity: int | None = None
    #: How long a stopping process may spend finishing what it holds.
    drain_timeout_s: float = 30.0
    #: A batch still running this long after all its deadlines gets the process recycled.
    hang_grace_s: float = 30.0
    #: One device for every process, passed to setup as it is; None: from the accelerator.
    device: str | None = None
    #: LitServe's meaning: auto, cpu, cuda (or gpu), mps; None is auto.
    accelerator: str | None = None
    #: How many GPUs, or which (indices); None: every one found.
    devices: int | tuple[int, ...] | None = None
    workers_per_device: int = 1
    #: Stop the launcher when a process's setup fails, instead of retrying (`cluster up`).
    exit_on_setup_failure: bool = False
    #: Restart a worker process that ends; False (LitServer's restart_workers=False) stops
    #: the launcher instead, and so the server, as LitServe stops when a worker dies.
    restart: bool = True
    #: Heartbeats, logging, and CurveZMQ (its secret key and the broker's public key).
    link: LinkConfig = field(default_factory=LinkConfig)

    def __post_init__(self) -> None:
        if self.processes is not None and self.processes < 1:
            raise ConfigError("processes must be at least 1")
        if self.threads_per_process is not None and self.threads_per_process < 1:
            raise ConfigError(
                f"--threads-per-process must be at least 1, not {self.threads_per_process}"
            )
        if self.min_processes is not None or self.max_processes is not None:
            if self.max_processes is None:
                raise ConfigError("--min-processes goes with --max-processes")
            if self.processes is not None:
                raise ConfigError("give --processes, or --min-processes and --max-processes")
            if not 1 <= (self.min_processes or 1) <= self.max_processes:
                raise ConfigError("it takes 1 <= --min-processes <= --max-processes")
        if self.scale_down_after_s is not None:
            if self.max_processes is None:
                raise ConfigError("--scale-down-after is for autoscaling: give --max-processes")
            if self.scale_down_after_s <= 0:
                raise ConfigError("--scale-down-after must be positive")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be at least 1")
        if self.batch_timeout_s is not None and self.batch_timeout_s < 0:
            raise ConfigError("batch_timeout must not be negative")
        if self.capacity is not None and self.capacity < 1:
            raise ConfigError("capacity must be at least 1")
        self.link.check_peer()
        if self.workers_per_device < 1:
            raise ConfigError("workers_per_device must be at least 1")
        if self.device is not None and (
            self.accelerator is not None or self.devices is not None or self.workers_per_device > 1
        ):
            raise ConfigError(
                "--device names one device for every process; leave out --accelerator, "
                "--devices and --workers-per-device with it"
            )
        if self.spec not in (None, "openai"):
            raise ConfigError(f"unknown spec {self.spec!r}; the one spec is 'openai'")
